/**
 * Idle expiry of whole dicts and queues (ephemeral ones use it too). The
 * service marks a name on every operation; marks reach the backend as one
 * `touch` per name per flush, not one write per operation. A sweep drops what
 * has been idle past its timeout; `dropIfIdle` is atomic in the backend, so a
 * touch from another server cannot slip between the check and the drop.
 */
import type { Logger } from './logger.js';

export interface IdleBackend {
  list(): Promise<{ name: string; idleTimeoutMs: number; lastUsedMs: number }[]>;
  touch(name: string, atMs?: number): Promise<void>;
  dropIfIdle(name: string, nowMs?: number): Promise<boolean>;
}

export interface IdleOptions {
  /** How often marks are written to the backend. */
  flushMs?: number;
  /** How often idle names are looked for. */
  sweepMs?: number;
}

export class IdleTracker {
  private marks = new Map<string, number>();
  private readonly timers: NodeJS.Timeout[];
  private sweeping: Promise<void> | undefined;

  constructor(
    private readonly backend: IdleBackend,
    private readonly kind: string,
    private readonly log: Logger,
    opts: IdleOptions = {},
  ) {
    this.timers = [
      setInterval(() => void this.flush(), opts.flushMs ?? 1000),
      setInterval(() => void this.sweep(), opts.sweepMs ?? 5000),
    ];
    for (const t of this.timers) t.unref();
  }

  /** Notes that `name` was used now. */
  mark(name: string): void {
    this.marks.set(name, Date.now());
  }

  /** Writes pending marks. A name that no longer exists is skipped. */
  async flush(): Promise<void> {
    const marks = this.marks;
    if (marks.size === 0) return;
    this.marks = new Map();
    await Promise.all(
      [...marks].map(([name, at]) =>
        this.backend.touch(name, at).catch((err: unknown) => {
          if ((err as { code?: string }).code !== 'NOT_FOUND') {
            this.log.warn({ [this.kind]: name, err: (err as Error).message }, `could not record use of ${this.kind}`);
          }
        }),
      ),
    );
  }

  /** Drops every name idle past its timeout (one sweep at a time). */
  sweep(): Promise<void> {
    this.sweeping ??= this.sweepOnce().finally(() => (this.sweeping = undefined));
    return this.sweeping;
  }

  private async sweepOnce(): Promise<void> {
    try {
      await this.flush();
      const now = Date.now();
      for (const info of await this.backend.list()) {
        if (info.idleTimeoutMs > 0 && info.lastUsedMs + info.idleTimeoutMs <= now && !this.marks.has(info.name)) {
          if (await this.backend.dropIfIdle(info.name, now)) {
            this.log.info({ [this.kind]: info.name, idleTimeoutMs: info.idleTimeoutMs }, `deleted idle ${this.kind}`);
          }
        }
      }
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, `idle ${this.kind} sweep failed; will retry`);
    }
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    await this.sweeping;
    await this.flush();
  }
}
