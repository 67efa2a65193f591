/**
 * The call life cycle: every call the bridge holds, the queue of those
 * waiting to be placed, their timers, and the CallStore that keeps them.
 *
 *   queued --place--> running --outcome--> succeeded | failed
 *      ^                 |
 *      +----lost---------+   (while attempts <= 1 + retries; then failed)
 *      +----retry later--+   (threw or timed out, with a retry policy)
 *   queued | running --cancel--> failed (CANCELLED)
 *
 * A lost attempt is queued again at once, at the front. With a retry policy
 * (FunctionSpec.retry_policy, as Modal's Retries), an attempt whose handler
 * threw or that ran past its timeout is queued again too, at the back, not
 * placed before `retryAtMs` (the backoff); all retries count towards one
 * max_retries. A cancel fails the call with CANCELLED at once and tells the
 * worker running it (if any) to stop the attempt; a late outcome of that
 * attempt is then stale, like any other.
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
import { FailedPreconditionError, NotFoundError, StowageError, messageOf } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { quote } from '../common/quote.js';
import { CallState, type CallError, type CallInfo, type CallResult } from '../gen/stowage/v1/bridge.js';
import { type BridgeCallOutcome, type BridgeObserver, type CallRecord, type CallStateName, type CallStore, maxRetriesOf } from './types.js';

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
    const retries = maxRetriesOf(call.spec);
    const attempts = 1 + retries;
    if (call.attempt >= attempts) {
      this.finish(call, {
        error: {
          code: 'UNAVAILABLE',
          message: `call ${call.id} failed: ${why}, on attempt ${call.attempt} of ${attempts} (retries: ${retries})`,
          name: '',
          stack: '',
        },
      }, 'lost');
      return;
    }
    this.log.info({ call: call.id, attempt: call.attempt }, `bridge: attempt lost (${why}); queued again`);
    this.requeue(call);
  }

  /**
   * The attempt failed by itself (the handler threw, or it timed out): queued
   * again after the policy's backoff when the call has a retry policy and
   * retries left; otherwise it finishes with `error`. Returns whether it was
   * queued again.
   */
  failed(call: CallRecord, error: CallError, outcome: BridgeCallOutcome): boolean {
    const policy = call.spec.retryPolicy;
    if (this.closed || !policy || call.attempt >= 1 + policy.maxRetries) {
      if (policy && policy.maxRetries > 0) error = { ...error, message: `${error.message} (attempt ${call.attempt} of ${1 + policy.maxRetries}; no retries left)` };
      this.finish(call, { error }, outcome);
      return false;
    }
    const delayMs = retryDelayMs(policy, call.attempt);
    this.log.info({ call: call.id, attempt: call.attempt, delayMs }, `bridge: attempt failed (${error.code}); retrying after the backoff`);
    call.error = error; // the last failure, shown by explain while the call waits
    this.requeue(call, delayMs);
    return true;
  }

  /**
   * Another attempt: a lost one at the front of the queue at once, a failed
   * one at the back once `delayMs` (its backoff) is over.
   */
  private requeue(call: CallRecord, delayMs?: number): void {
    this.clearTimer(call.id);
    this.hooks.release(call);
    this.observer?.attemptRequeued();
    const now = Date.now();
    call.state = 'queued';
    call.queuedAtMs = now;
    call.reclaimUntilMs = undefined;
    call.retryAtMs = delayMs === undefined ? undefined : now + delayMs;
    const rest = this.queue.filter((id) => id !== call.id);
    this.queue = delayMs === undefined ? [call.id, ...rest] : [...rest, call.id];
    this.save(call);
    this.hooks.changed();
  }

  /**
   * Cancels a queued or running call: it fails with CANCELLED, and the worker
   * running its attempt is told to stop it. A finished call is passed over
   * (false) when `ignoreFinished`, and is an error otherwise.
   */
  cancel(id: string, ignoreFinished: boolean): boolean {
    const call = this.cancellable(id, ignoreFinished);
    if (!call) return false;
    const running = call.state === 'running';
    if (running) this.hooks.stopAttempt(call, 'cancelled');
    this.finish(call, {
      error: {
        code: 'CANCELLED',
        message: running ? `call ${id} of ${call.spec.function} was cancelled while running on worker ${call.workerId} (attempt ${call.attempt})` : `call ${id} of ${call.spec.function} was cancelled before it ran`,
        name: '',
        stack: '',
      },
    }, 'cancelled');
    return true;
  }

  /** The call if cancel() would cancel it, undefined if it would pass it over; throws what cancel() would throw. */
  cancellable(id: string, ignoreFinished: boolean): CallRecord | undefined {
    const call = this.calls.get(id);
    if (!call) throw this.unknownCall(id);
    if (call.state !== 'succeeded' && call.state !== 'failed') return call;
    if (ignoreFinished) return undefined;
    throw new FailedPreconditionError(`call ${quote(id)} already finished (${call.state}${call.error ? `: ${call.error.code}` : ''}); there is nothing to cancel`);
  }

  finish(call: CallRecord, r: { value?: Buffer; error?: CallError }, outcome: BridgeCallOutcome): void {
    if (this.closed) return; // its end is for the bridge that owns the calls now
    if (call.state !== 'succeeded' && call.state !== 'failed') this.observer?.callFinished(outcome);
    this.clearTimer(call.id);
    this.hooks.release(call);
    this.queue = this.queue.filter((id) => id !== call.id);
    call.state = r.error ? 'failed' : 'succeeded';
    call.retryAtMs = undefined;
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
        this.failed(call, {
          code: 'DEADLINE_EXCEEDED',
          message: `call ${call.id} of ${call.spec.function} (${call.spec.module}) ran past its timeout of ${formatMs(ms)} on worker ${call.workerId} (attempt ${attempt}); raise it with app.function({ timeout }) or stowage run --timeout`,
          name: '',
          stack: '',
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

/** The wait before retry number `attempt` (1 for the first retry), as Modal's Retries computes it. */
export function retryDelayMs(policy: { initialDelayMs: number; backoffCoefficient: number; maxDelayMs: number }, attempt: number): number {
  const raw = policy.initialDelayMs * Math.pow(policy.backoffCoefficient || 1, Math.max(0, attempt - 1));
  return Math.round(Math.min(raw, policy.maxDelayMs || 60_000));
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
