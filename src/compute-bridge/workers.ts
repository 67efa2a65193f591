/**
 * Worker membership: the workers registered with the bridge, each on one
 * Work stream.
 *
 * A worker registers first (with its slots, the full set of chunks its host
 * cache holds and the calls it is still running), then sends chunk-set
 * deltas, heartbeats and outcomes. A worker registering again under the same
 * id (a new stream after a reconnect) replaces the old entry, whose stream is
 * closed. A worker whose stream ends, or that sends nothing for
 * `workerTimeoutMs`, is gone. What a registration, an outcome or a loss means
 * for the calls is the bridge's business (RosterEvents); the roster keeps only
 * who is there, what each caches and which calls each runs.
 */
import { FailedPreconditionError, InvalidArgumentError, messageOf } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { BridgeMessage, CallOutcome, LogEntry, RegisterWorker, WorkerInfo, WorkerMessage } from '../gen/stowage/v1/bridge.js';
import type { WorkerView } from './placement.js';

/** One connected worker's stream, as the service hands it to the bridge. */
export interface WorkerLink {
  send(msg: BridgeMessage): void;
  /** Ends the stream (the worker will reconnect). */
  close(): void;
}

export interface WorkerSession {
  receive(msg: WorkerMessage): void;
  /** The stream ended or failed. */
  ended(): void;
}

export interface Worker extends WorkerView {
  host: string;
  link: WorkerLink;
  chunks: Set<string>;
  /** Ids of the calls placed on it and not finished. */
  calls: Set<string>;
  registeredAtMs: number;
  lastSeenMs: number;
}

/** What the roster tells the bridge. */
export interface RosterEvents {
  /** `worker` registered (and was told so); `replaced` is the same worker's entry on its old stream, already closed. */
  registered(worker: Worker, reg: RegisterWorker, replaced: Worker | undefined): void;
  outcome(worker: Worker, outcome: CallOutcome): void;
  /** Output of calls the worker runs (sent before their outcomes). */
  logs(worker: Worker, entries: LogEntry[]): void;
  /** `worker` is gone; its `calls` are as they were. */
  gone(worker: Worker, why: string): void;
  /** A worker's cache gained chunks (placement may change). */
  chunksAdded(): void;
}

const NONE: BridgeMessage = { registered: undefined, assign: undefined, cancel: undefined, ack: undefined };

export class WorkerRoster {
  private readonly workers = new Map<string, Worker>();
  private livenessTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly heartbeatMs: number,
    private readonly workerTimeoutMs: number,
    private readonly log: Logger,
    private readonly events: RosterEvents,
  ) {}

  start(): void {
    this.livenessTimer = setInterval(() => this.checkLiveness(), this.heartbeatMs).unref();
  }

  close(): void {
    this.closed = true;
    clearInterval(this.livenessTimer);
    // Forgotten before their links close: a stream that ends at once (UNAVAILABLE, emitted synchronously) must not count as a lost worker.
    const workers = [...this.workers.values()];
    this.workers.clear();
    for (const w of workers) w.link.close();
  }

  get(id: string): Worker | undefined {
    return this.workers.get(id);
  }

  all(): Worker[] {
    return [...this.workers.values()];
  }

  get size(): number {
    return this.workers.size;
  }

  /** Sends `msg` to the worker `id`, if it is registered. */
  send(id: string, msg: Partial<BridgeMessage>): void {
    this.workers.get(id)?.link.send({ ...NONE, ...msg });
  }

  // freeSinceMs restarts whenever a worker is given a call or frees a slot (placement's locality wait).
  bind(callId: string, worker: Worker): void {
    worker.calls.add(callId);
    worker.running = worker.calls.size;
    worker.freeSinceMs = Date.now();
  }

  unbind(callId: string, workerId: string): void {
    const w = this.workers.get(workerId);
    if (w?.calls.delete(callId)) {
      if (w.running >= w.slots) w.freeSinceMs = Date.now();
      w.running = w.calls.size;
    }
  }

  runningCalls(): number {
    let n = 0;
    for (const w of this.workers.values()) n += w.calls.size;
    return n;
  }

  list(): WorkerInfo[] {
    return [...this.workers.values()].map((w) => ({
      workerId: w.id,
      host: w.host,
      slots: w.slots,
      running: w.running,
      cachedChunks: w.chunks.size,
      registeredAtMs: w.registeredAtMs,
      containers: w.containers,
    }));
  }

  /** A new Work stream: nothing is sent to it before it registers. */
  attach(link: WorkerLink): WorkerSession {
    let worker: Worker | undefined;
    return {
      receive: (msg) => {
        if (this.closed) return; // a closed bridge no longer acts (with a lease, another may own the calls)
        try {
          if (msg.register) {
            worker = this.register(msg.register, link);
            return;
          }
          if (!worker) throw new FailedPreconditionError('a worker must send register first');
          if (this.workers.get(worker.id) !== worker) return; // replaced by a newer stream
          worker.lastSeenMs = Date.now();
          if (msg.chunks) {
            for (const h of msg.chunks.added) worker.chunks.add(h);
            for (const h of msg.chunks.removed) worker.chunks.delete(h);
            if (msg.chunks.added.length) this.events.chunksAdded();
          }
          if (msg.logs) this.events.logs(worker, msg.logs.entries);
          if (msg.outcome) {
            link.send({ ...NONE, ack: { callId: msg.outcome.callId, attempt: msg.outcome.attempt } });
            this.events.outcome(worker, msg.outcome);
          }
        } catch (err) {
          this.log.warn({ err: messageOf(err) }, 'bridge: bad message from a worker; closing its stream');
          link.close();
        }
      },
      ended: () => {
        if (!this.closed && worker && this.workers.get(worker.id) === worker) this.gone(worker, 'its stream to the bridge ended');
      },
    };
  }

  private register(reg: RegisterWorker, link: WorkerLink): Worker {
    if (!reg.workerId) throw new InvalidArgumentError('register without a worker id');
    const old = this.workers.get(reg.workerId);
    const now = Date.now();
    const worker: Worker = {
      id: reg.workerId,
      host: reg.host,
      slots: Math.max(1, reg.slots),
      containers: reg.containers,
      running: 0,
      chunks: new Set(reg.chunks),
      calls: new Set(),
      link,
      registeredAtMs: now,
      lastSeenMs: now,
      freeSinceMs: now,
    };
    if (old) {
      this.workers.delete(old.id);
      old.link.close();
    }
    this.workers.set(worker.id, worker);
    link.send({ ...NONE, registered: { heartbeatMs: this.heartbeatMs } });
    this.events.registered(worker, reg, old);
    this.log.info({ worker: worker.id, slots: worker.slots, chunks: worker.chunks.size, running: reg.running.length }, 'bridge: worker registered');
    return worker;
  }

  private gone(worker: Worker, why: string): void {
    this.workers.delete(worker.id);
    this.log.warn({ worker: worker.id, running: worker.calls.size }, `bridge: worker gone (${why})`);
    this.events.gone(worker, why);
    worker.calls.clear();
    worker.link.close();
  }

  private checkLiveness(): void {
    const now = Date.now();
    for (const w of [...this.workers.values()]) {
      if (now - w.lastSeenMs > this.workerTimeoutMs) this.gone(w, `no heartbeat for ${now - w.lastSeenMs} ms`);
    }
  }
}
