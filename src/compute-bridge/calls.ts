/**
 * The call life cycle: every call the bridge holds, the queue of those
 * waiting to be placed, their timers, and the CallStore that keeps them.
 *
 *   queued --place--> running --outcome--> succeeded | failed
 *      ^                 |
 *      +----lost---------+   (while attempts <= 1 + retries; then failed)
 *
 * Only the outcome of a call's current attempt counts, so a result is taken
 * once however often it is reported. Each change of state writes the whole
 * record to the store without waiting (a failed write is logged, and the next
 * change writes the record again); a new call is written before Submit
 * answers (add). A finished call is kept `resultTtlMs` for WatchCalls and
 * explain, then swept. Where a call runs and how its worker is told is the
 * bridge's business (CallHooks).
 */
import { EventEmitter } from 'node:events';
import { NotFoundError, StowageError, messageOf } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { quote } from '../common/quote.js';
import { CallState, type CallError, type CallInfo, type CallResult } from '../gen/stowage/v1/bridge.js';
import type { BridgeCallOutcome, BridgeObserver, CallRecord, CallStateName, CallStore } from './types.js';

/** What the call book asks of the bridge. */
export interface CallHooks {
  /** The call no longer holds a slot on its worker. */
  release(call: CallRecord): void;
  /** Tells the worker running `call`'s current attempt to stop it. */
  stopAttempt(call: CallRecord, reason: string): void;
  /** Something changed that placement may act on. */
  changed(): void;
}

const STATE_TO_PROTO: Record<CallStateName, CallState> = {
  queued: CallState.CALL_STATE_QUEUED,
  running: CallState.CALL_STATE_RUNNING,
  succeeded: CallState.CALL_STATE_SUCCEEDED,
  failed: CallState.CALL_STATE_FAILED,
};

export class CallBook {
  private readonly calls = new Map<string, CallRecord>();
  /** Ids of queued calls, oldest first (a call lost with its worker goes back to the front). */
  private queue: string[] = [];
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly finished = new EventEmitter().setMaxListeners(0);
  private sweeper: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly store: CallStore,
    private readonly log: Logger,
    private readonly resultTtlMs: number,
    private readonly hooks: CallHooks,
    private readonly observer?: BridgeObserver,
  ) {}

  /** Loads kept calls; running ones go back to the queue, claimable by their worker until `reclaimUntilMs`. */
  async load(reclaimMs: number): Promise<void> {
    const kept = (await this.store.loadCalls()).sort((a, b) => a.queuedAtMs - b.queuedAtMs);
    if (this.closed) return;
    const now = Date.now();
    for (const call of kept) {
      this.calls.set(call.id, call);
      if (call.state === 'running') {
        call.state = 'queued';
        call.reclaimUntilMs = now + reclaimMs;
        this.save(call);
      }
      if (call.state === 'queued') this.queue.push(call.id);
    }
    if (this.queue.length) this.log.info({ queued: this.queue.length }, 'bridge: calls kept from before the restart are queued again');
    this.sweeper = setInterval(() => this.sweep(), Math.min(this.resultTtlMs, 600_000)).unref();
  }

  close(): void {
    this.closed = true;
    clearInterval(this.sweeper);
    for (const t of this.timers.values()) clearTimeout(t);
  }

  get(id: string): CallRecord | undefined {
    return this.calls.get(id);
  }

  has(id: string): boolean {
    return this.calls.has(id);
  }

  /** The queued calls' ids, in queue order (a copy). */
  queued(): string[] {
    return [...this.queue];
  }

  get queuedCount(): number {
    return this.queue.length;
  }

  /** Stores new calls (all or none), then queues them. */
  async add(fresh: CallRecord[]): Promise<void> {
    if (!fresh.length) return;
    await this.store.putCalls(fresh);
    for (const c of fresh) {
      this.calls.set(c.id, c);
      this.queue.push(c.id);
    }
    this.hooks.changed();
  }

  /** Takes calls out of the queue (they were placed, or claimed by their worker). */
  dequeue(ids: ReadonlySet<string>): void {
    if (ids.size) this.queue = this.queue.filter((id) => !ids.has(id));
  }

  /** An attempt lost with its worker or runner: queue again, or fail once the retries are spent. */
  lost(call: CallRecord, why: string): void {
    if (this.closed || (call.state !== 'running' && call.state !== 'queued')) return;
    this.clearTimer(call.id);
    this.hooks.release(call);
    const attempts = 1 + call.spec.retries;
    if (call.attempt >= attempts) {
      this.finish(call, {
        error: {
          code: 'UNAVAILABLE',
          message: `call ${call.id} failed: ${why}, on attempt ${call.attempt} of ${attempts} (retries: ${call.spec.retries})`,
          name: '',
          stack: '',
        },
      }, 'lost');
      return;
    }
    this.observer?.attemptRequeued();
    this.log.info({ call: call.id, attempt: call.attempt }, `bridge: attempt lost (${why}); queued again`);
    call.state = 'queued';
    call.queuedAtMs = Date.now();
    call.reclaimUntilMs = undefined;
    this.queue = [call.id, ...this.queue.filter((id) => id !== call.id)];
    this.save(call);
    this.hooks.changed();
  }

  finish(call: CallRecord, r: { value?: Buffer; error?: CallError }, outcome: BridgeCallOutcome): void {
    if (this.closed) return; // its end is for the bridge that owns the calls now
    if (call.state !== 'succeeded' && call.state !== 'failed') this.observer?.callFinished(outcome);
    this.clearTimer(call.id);
    this.hooks.release(call);
    this.queue = this.queue.filter((id) => id !== call.id);
    call.state = r.error ? 'failed' : 'succeeded';
    call.value = r.value;
    call.error = r.error;
    call.finishedAtMs = Date.now();
    this.save(call);
    this.finished.emit(call.id);
    this.hooks.changed();
  }

  /** Fails the call with DEADLINE_EXCEEDED (and stops its attempt) if it runs past its timeout. */
  armTimeout(call: CallRecord): void {
    this.clearTimer(call.id);
    const ms = call.spec.timeoutMs;
    if (!ms) return;
    const left = Math.max(0, call.startedAtMs + ms - Date.now());
    const attempt = call.attempt;
    this.timers.set(
      call.id,
      setTimeout(() => {
        if (call.state !== 'running' || call.attempt !== attempt) return;
        this.hooks.stopAttempt(call, 'timeout');
        this.finish(call, {
          error: {
            code: 'DEADLINE_EXCEEDED',
            message: `call ${call.id} of ${call.spec.function} (${call.spec.module}) ran past its timeout of ${formatMs(ms)} on worker ${call.workerId} (attempt ${attempt}); raise it with app.function({ timeout }) or stowage run --timeout`,
            name: '',
            stack: '',
          },
        }, 'timeout');
      }, left),
    );
  }

  save(call: CallRecord): void {
    // A closed bridge writes nothing: with a lease, another server's bridge may own the calls now.
    if (this.closed) return;
    // Nobody waits on this write: a failure (a full disk) is logged, and the
    // call's next change of state writes its whole record again.
    this.store.putCalls([call]).catch((err: unknown) => this.log.error({ call: call.id, err: messageOf(err) }, 'bridge: cannot write a call to the store'));
  }

  /** Calls `onResult` once per call as each finishes (at once for finished ones); resolves when all have. */
  async watch(ids: string[], onResult: (r: CallResult) => Promise<void>, signal: AbortSignal): Promise<void> {
    for (const id of ids) if (!this.calls.has(id)) throw this.unknownCall(id);
    const pending = new Set(ids);
    await new Promise<void>((resolve, reject) => {
      const listeners = new Map<string, () => void>();
      const cleanup = () => {
        for (const [id, l] of listeners) this.finished.off(id, l);
        signal.removeEventListener('abort', onAbort);
      };
      const onAbort = () => {
        cleanup();
        resolve();
      };
      signal.addEventListener('abort', onAbort);
      const deliver = (id: string) => {
        if (!pending.has(id)) return;
        const call = this.calls.get(id);
        if (!call || (call.state !== 'succeeded' && call.state !== 'failed')) return;
        pending.delete(id);
        onResult(resultOf(call)).then(() => {
          if (pending.size === 0) {
            cleanup();
            resolve();
          }
        }, (err: unknown) => {
          cleanup();
          reject(err);
        });
      };
      for (const id of ids) {
        const l = () => deliver(id);
        listeners.set(id, l);
        this.finished.on(id, l);
      }
      for (const id of ids) deliver(id);
      if (ids.length === 0) resolve();
    });
  }

  info(id: string): CallInfo {
    const call = this.calls.get(id);
    if (!call) throw this.unknownCall(id);
    return infoOf(call);
  }

  list(schedule: string, limit: number): CallInfo[] {
    const all = [...this.calls.values()].filter((c) => !schedule || c.spec.schedule === schedule);
    all.sort((a, b) => b.createdAtMs - a.createdAtMs);
    return all.slice(0, limit || 100).map(infoOf);
  }

  unknownCall(id: string): NotFoundError {
    return new NotFoundError(`call ${quote(id)} not found (finished calls are kept for ${Math.round(this.resultTtlMs / 60_000)} minutes; list calls with: stowage bridge calls)`);
  }

  private clearTimer(id: string): void {
    const t = this.timers.get(id);
    if (t) clearTimeout(t);
    this.timers.delete(id);
  }

  private sweep(): void {
    const old = [...this.calls.values()].filter((c) => c.finishedAtMs && Date.now() - c.finishedAtMs > this.resultTtlMs).map((c) => c.id);
    for (const id of old) this.calls.delete(id);
    if (old.length) this.store.deleteCalls(old).catch((err: unknown) => this.log.warn({ err: messageOf(err) }, 'bridge: sweeping finished calls failed'));
  }
}

export function errorOf(err: unknown): CallError {
  const code = err instanceof StowageError ? err.code : 'INTERNAL';
  return { code, message: messageOf(err), name: '', stack: '' };
}

function resultOf(call: CallRecord): CallResult {
  return {
    callId: call.id,
    state: STATE_TO_PROTO[call.state],
    value: call.value ?? Buffer.alloc(0),
    error: call.error,
    attempts: call.attempt,
    workerId: call.workerId,
  };
}

function infoOf(call: CallRecord): CallInfo {
  return {
    callId: call.id,
    function: call.spec,
    state: STATE_TO_PROTO[call.state],
    attempt: call.attempt,
    workerId: call.workerId,
    createdAtMs: call.createdAtMs,
    finishedAtMs: call.finishedAtMs,
    versions: call.versions,
    reads: call.reads,
    decisions: call.decisions,
    error: call.error,
  };
}

export function formatMs(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}
