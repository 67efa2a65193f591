/**
 * The compute bridge: runs function calls on workers, each call next to the
 * data it reads.
 *
 * Workers. A worker (`stowage worker`, one per host) holds one Work stream.
 * It registers with its slots, the full set of chunks its host cache holds and
 * the calls it is still running; then it sends chunk-set deltas as its cache
 * changes, a heartbeat every `heartbeatMs`, and one outcome per attempt
 * (resent until acknowledged). A worker whose stream ends, or that sends
 * nothing for `workerTimeoutMs`, is dead: each call it was running is queued
 * again for another attempt while attempts <= 1 + retries, and fails with
 * UNAVAILABLE after that.
 *
 * Calls. A Submit pins the newest version of each volume the function
 * declares and resolves its `reads` into extents (ReadResolver), so bad
 * volumes and globs fail the Submit itself. Calls wait in one FIFO queue;
 * `pump` walks it whenever something changes (a submit, a free slot, a new
 * worker, a new chunk set) and asks the placement policy (placement.ts) to
 * place what it can, in queue order; a call waiting for a busy worker holds
 * up no other.
 * A call placed gets an attempt number; only the outcome of its current
 * attempt counts, so a result is taken once however often it is reported.
 * A handler's own exception ends the call (FUNCTION_ERROR with its stack);
 * retries are for attempts lost with a worker or its runner process.
 *
 * Timeouts. The bridge starts a timer when an attempt is assigned (so the
 * timeout covers mounting volumes and fetching code on the worker too); when
 * it fires the call fails with DEADLINE_EXCEEDED and the worker is told to
 * kill its runner.
 *
 * Durability. Every call is in the CallStore (LMDB) before Submit answers,
 * and is written again at each change of state. At start, calls that were
 * running go back to the queue with `reclaimUntilMs` = now + `reclaimMs`:
 * until then they are not placed, so the worker that was running them can
 * re-register (it lists them) and carry on without a second run. Finished
 * calls are kept `resultTtlMs` for WatchCalls and explain, then swept.
 *
 * Schedules (schedules.ts) submit a call of their function at each cron tick.
 *
 * One active instance. Of a set of servers sharing one Redis, only the holder
 * of the bridge lease (lease.ts) runs a Bridge; the others forward every
 * BridgeService call to it (forward.ts). A server that wins the lease starts
 * a fresh Bridge over the calls in Redis, which recovers them exactly as a
 * restart does (start() above); one that loses it closes its Bridge at once.
 * The bridge is not sharded or replicated: a failover leaves the set without
 * a bridge for up to the lease time, and calls that were running go through
 * the reclaim window as after a restart.
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import {
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  StowageError,
  UnavailableError,
  messageOf,
} from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { quote } from '../common/quote.js';
import {
  CallState,
  type BridgeMessage,
  type CallError,
  type CallInfo,
  type CallInput,
  type CallOutcome,
  type CallResult,
  type FunctionSpec,
  type RegisterWorker,
  type WorkerInfo,
  type WorkerMessage,
} from '../gen/stowage/v1/bridge.js';
import { createPlacementPolicy, type PlacementPolicy, type WorkerView } from './placement.js';
import { ReadResolver, checkMountPaths, splitRead } from './reads.js';
import type {
  BridgeCallOutcome,
  BridgeObserver,
  CallRecord,
  CallStore,
  CallStateName,
  ExtentRef,
  PlacementPolicyName,
  VolumeResolver,
} from './types.js';

export interface BridgeOptions {
  placement?: PlacementPolicyName;
  localityWaitMs?: number;
  heartbeatMs?: number;
  workerTimeoutMs?: number;
  reclaimMs?: number;
  resultTtlMs?: number;
}

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

interface Worker extends WorkerView {
  host: string;
  link: WorkerLink;
  chunks: Set<string>;
  calls: Set<string>;
  registeredAtMs: number;
  lastSeenMs: number;
}

const MAX_CALLS_PER_SUBMIT = 10_000;
const STATE_TO_PROTO: Record<CallStateName, CallState> = {
  queued: CallState.CALL_STATE_QUEUED,
  running: CallState.CALL_STATE_RUNNING,
  succeeded: CallState.CALL_STATE_SUCCEEDED,
  failed: CallState.CALL_STATE_FAILED,
};

export class Bridge {
  private readonly calls = new Map<string, CallRecord>();
  /** Ids of queued calls, oldest first (a call lost with its worker goes back to the front). */
  private queue: string[] = [];
  private readonly workers = new Map<string, Worker>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly finished = new EventEmitter().setMaxListeners(0);
  private readonly reads: ReadResolver;
  private readonly policy: PlacementPolicy;
  private readonly heartbeatMs: number;
  private readonly workerTimeoutMs: number;
  private readonly reclaimMs: number;
  private readonly resultTtlMs: number;
  private pumpScheduled = false;
  private wakeTimer: NodeJS.Timeout | undefined;
  private sweeper: NodeJS.Timeout | undefined;
  private livenessTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly store: CallStore,
    volumes: VolumeResolver,
    private readonly log: Logger,
    opts: BridgeOptions = {},
    /** Told of finished calls and placements (the server's metrics). */
    private readonly observer?: BridgeObserver,
  ) {
    this.reads = new ReadResolver(volumes);
    this.policy = createPlacementPolicy(opts.placement ?? 'ours', { localityWaitMs: opts.localityWaitMs });
    this.heartbeatMs = opts.heartbeatMs ?? 1000;
    this.workerTimeoutMs = opts.workerTimeoutMs ?? 5 * this.heartbeatMs;
    this.reclaimMs = opts.reclaimMs ?? 5000;
    this.resultTtlMs = opts.resultTtlMs ?? 6 * 3600_000;
  }

  get placement(): PlacementPolicyName {
    return this.policy.name;
  }

  /** Loads kept calls; running ones go back to the queue, claimable by their worker for `reclaimMs`. */
  async start(): Promise<void> {
    const kept = (await this.store.loadCalls()).sort((a, b) => a.queuedAtMs - b.queuedAtMs);
    if (this.closed) return;
    const now = Date.now();
    for (const call of kept) {
      this.calls.set(call.id, call);
      if (call.state === 'running') {
        call.state = 'queued';
        call.reclaimUntilMs = now + this.reclaimMs;
        this.save(call);
      }
      if (call.state === 'queued') this.queue.push(call.id);
    }
    if (this.queue.length) this.log.info({ queued: this.queue.length }, 'bridge: calls kept from before the restart are queued again');
    this.sweeper = setInterval(() => this.sweep(), Math.min(this.resultTtlMs, 600_000)).unref();
    this.livenessTimer = setInterval(() => this.checkLiveness(), this.heartbeatMs).unref();
    this.schedulePump();
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.sweeper);
    clearInterval(this.livenessTimer);
    clearTimeout(this.wakeTimer);
    for (const t of this.timers.values()) clearTimeout(t);
    // Forgotten before their links close: a stream that ends at once (UNAVAILABLE, emitted synchronously) must not count as a lost worker.
    const workers = [...this.workers.values()];
    this.workers.clear();
    for (const w of workers) w.link.close();
  }

  // ---- callers ---------------------------------------------------------------

  async submit(spec: FunctionSpec, inputs: CallInput[]): Promise<string[]> {
    if (this.closed) throw new UnavailableError('the bridge is shutting down');
    checkSpec(spec);
    if (inputs.length === 0) throw new InvalidArgumentError('Submit names no call');
    if (inputs.length > MAX_CALLS_PER_SUBMIT) throw new InvalidArgumentError(`at most ${MAX_CALLS_PER_SUBMIT} calls per Submit, got ${inputs.length}`);
    const versions: Record<string, number> = {};
    for (const volume of new Set(Object.values(spec.volumes))) versions[volume] = await this.reads.latestVersion(volume);
    const now = Date.now();
    const fresh: CallRecord[] = [];
    const ids: string[] = [];
    for (const input of inputs) {
      const id = input.id || `fc-${randomUUID()}`;
      if (!/^[A-Za-z0-9._-]{1,128}$/.test(id)) throw new InvalidArgumentError(`call id ${quote(id)} must be 1 to 128 of [A-Za-z0-9._-]`);
      ids.push(id);
      if (this.calls.has(id) || fresh.some((c) => c.id === id)) continue; // a Submit sent again
      const reads = input.reads.length ? input.reads : spec.reads;
      // Resolving now fails a bad glob at Submit and warms the cache for placement.
      await this.reads.resolve(reads, spec.volumes, versions);
      fresh.push({
        id,
        spec,
        args: Buffer.from(input.args),
        reads,
        versions,
        state: 'queued',
        attempt: 0,
        workerId: '',
        createdAtMs: now,
        queuedAtMs: now,
        startedAtMs: 0,
        finishedAtMs: 0,
        decisions: [],
      });
    }
    if (fresh.length) await this.store.putCalls(fresh);
    for (const c of fresh) {
      this.calls.set(c.id, c);
      this.queue.push(c.id);
    }
    this.schedulePump();
    return ids;
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

  getCall(id: string): CallInfo {
    const call = this.calls.get(id);
    if (!call) throw this.unknownCall(id);
    return infoOf(call);
  }

  listCalls(schedule: string, limit: number): CallInfo[] {
    const all = [...this.calls.values()].filter((c) => !schedule || c.spec.schedule === schedule);
    all.sort((a, b) => b.createdAtMs - a.createdAtMs);
    return all.slice(0, limit || 100).map(infoOf);
  }

  /** What the bridge holds now: workers registered, calls running on them, calls waiting to be placed. */
  stats(): { workers: number; runningCalls: number; queuedCalls: number } {
    let runningCalls = 0;
    for (const w of this.workers.values()) runningCalls += w.calls.size;
    return { workers: this.workers.size, runningCalls, queuedCalls: this.queue.length };
  }

  listWorkers(): WorkerInfo[] {
    return [...this.workers.values()].map((w) => ({
      workerId: w.id,
      host: w.host,
      slots: w.slots,
      running: w.running,
      cachedChunks: w.chunks.size,
      registeredAtMs: w.registeredAtMs,
    }));
  }

  /** The chunks a registered worker's cache holds (undefined for an unknown worker). */
  cachedChunksOf(workerId: string): ReadonlySet<string> | undefined {
    return this.workers.get(workerId)?.chunks;
  }

  private unknownCall(id: string): NotFoundError {
    return new NotFoundError(`call ${quote(id)} not found (finished calls are kept for ${Math.round(this.resultTtlMs / 60_000)} minutes; list calls with: stowage bridge calls)`);
  }

  // ---- workers ---------------------------------------------------------------

  /** A new Work stream: nothing is sent to it before it registers. */
  attachWorker(link: WorkerLink): WorkerSession {
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
            if (msg.chunks.added.length) this.schedulePump();
          }
          if (msg.outcome) this.onOutcome(worker, msg.outcome);
        } catch (err) {
          this.log.warn({ err: messageOf(err) }, 'bridge: bad message from a worker; closing its stream');
          link.close();
        }
      },
      ended: () => {
        if (!this.closed && worker && this.workers.get(worker.id) === worker) this.workerGone(worker, 'its stream to the bridge ended');
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
      running: 0,
      chunks: new Set(reg.chunks),
      calls: new Set(),
      link,
      registeredAtMs: now,
      lastSeenMs: now,
      freeSinceMs: now,
    };
    const stillRunning = new Set(reg.running.map((r) => `${r.callId}#${r.attempt}`));
    if (old) {
      // The same worker on a new stream: the calls it no longer lists were lost.
      this.workers.delete(old.id);
      for (const id of old.calls) {
        const call = this.calls.get(id);
        if (call && !stillRunning.has(`${id}#${call.attempt}`)) this.lost(call, `worker ${old.id} reconnected without it`);
      }
      old.link.close();
    }
    this.workers.set(worker.id, worker);
    link.send({ registered: { heartbeatMs: this.heartbeatMs }, assign: undefined, cancel: undefined, ack: undefined });
    for (const r of reg.running) {
      const call = this.calls.get(r.callId);
      const claimable =
        call &&
        call.attempt === r.attempt &&
        ((call.state === 'running' && call.workerId === worker.id) || (call.state === 'queued' && call.reclaimUntilMs !== undefined && call.workerId === worker.id));
      if (call && claimable) {
        if (call.state === 'queued') {
          this.queue = this.queue.filter((id) => id !== call.id);
          call.state = 'running';
          call.reclaimUntilMs = undefined;
          this.save(call);
        }
        this.bind(call, worker);
        this.armTimeout(call);
      } else {
        link.send({ cancel: { callId: r.callId, attempt: r.attempt, reason: 'the bridge no longer expects this attempt' }, registered: undefined, assign: undefined, ack: undefined });
      }
    }
    this.log.info({ worker: worker.id, slots: worker.slots, chunks: worker.chunks.size, running: reg.running.length }, 'bridge: worker registered');
    this.schedulePump();
    return worker;
  }

  // freeSinceMs restarts whenever a worker is given a call or frees a slot (placement's locality wait).
  private bind(call: CallRecord, worker: Worker): void {
    worker.calls.add(call.id);
    worker.running = worker.calls.size;
    worker.freeSinceMs = Date.now();
  }

  private unbind(call: CallRecord): void {
    const w = this.workers.get(call.workerId);
    if (w?.calls.delete(call.id)) {
      if (w.running >= w.slots) w.freeSinceMs = Date.now();
      w.running = w.calls.size;
    }
  }

  private workerGone(worker: Worker, why: string): void {
    this.workers.delete(worker.id);
    this.log.warn({ worker: worker.id, running: worker.calls.size }, `bridge: worker gone (${why})`);
    for (const id of worker.calls) {
      const call = this.calls.get(id);
      if (call) this.lost(call, `worker ${worker.id} was lost (${why})`);
    }
    worker.calls.clear();
    worker.link.close();
    this.schedulePump();
  }

  private checkLiveness(): void {
    const now = Date.now();
    for (const w of [...this.workers.values()]) {
      if (now - w.lastSeenMs > this.workerTimeoutMs) this.workerGone(w, `no heartbeat for ${now - w.lastSeenMs} ms`);
    }
  }

  private onOutcome(worker: Worker, o: CallOutcome): void {
    worker.link.send({ ack: { callId: o.callId, attempt: o.attempt }, registered: undefined, assign: undefined, cancel: undefined });
    const call = this.calls.get(o.callId);
    if (!call || call.attempt !== o.attempt || call.workerId !== worker.id) return; // stale or repeated
    // Queued with a reclaim window: it was running on this worker when the bridge restarted.
    const reclaimed = call.state === 'queued' && call.reclaimUntilMs !== undefined;
    if (call.state !== 'running' && !reclaimed) return;
    if (o.lost) {
      this.lost(call, o.error?.message ?? `its runner on worker ${worker.id} died`);
      this.schedulePump();
      return;
    }
    this.finish(
      call,
      o.ok ? { value: Buffer.from(o.value) } : { error: o.error ?? { code: 'INTERNAL', message: 'the worker reported a failure without an error', name: '', stack: '' } },
      o.ok ? 'succeeded' : 'failed',
    );
  }

  // ---- call life cycle -------------------------------------------------------

  /** An attempt lost with its worker or runner: queue again, or fail once the retries are spent. */
  private lost(call: CallRecord, why: string): void {
    if (this.closed || (call.state !== 'running' && call.state !== 'queued')) return;
    this.clearTimer(call.id);
    this.unbind(call);
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
  }

  private finish(call: CallRecord, r: { value?: Buffer; error?: CallError }, outcome: BridgeCallOutcome): void {
    if (this.closed) return; // its end is for the bridge that owns the calls now
    if (call.state !== 'succeeded' && call.state !== 'failed') this.observer?.callFinished(outcome);
    this.clearTimer(call.id);
    this.unbind(call);
    this.queue = this.queue.filter((id) => id !== call.id);
    call.state = r.error ? 'failed' : 'succeeded';
    call.value = r.value;
    call.error = r.error;
    call.finishedAtMs = Date.now();
    this.save(call);
    this.finished.emit(call.id);
    this.schedulePump();
  }

  private armTimeout(call: CallRecord): void {
    this.clearTimer(call.id);
    const ms = call.spec.timeoutMs;
    if (!ms) return;
    const left = Math.max(0, call.startedAtMs + ms - Date.now());
    const attempt = call.attempt;
    this.timers.set(
      call.id,
      setTimeout(() => {
        if (call.state !== 'running' || call.attempt !== attempt) return;
        const w = this.workers.get(call.workerId);
        w?.link.send({ cancel: { callId: call.id, attempt, reason: 'timeout' }, registered: undefined, assign: undefined, ack: undefined });
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

  private clearTimer(id: string): void {
    const t = this.timers.get(id);
    if (t) clearTimeout(t);
    this.timers.delete(id);
  }

  private save(call: CallRecord): void {
    // A closed bridge writes nothing: with a lease, another server's bridge may own the calls now.
    if (this.closed) return;
    // Nobody waits on this write: a failure (a full disk) is logged, and the
    // call's next change of state writes its whole record again.
    this.store.putCalls([call]).catch((err: unknown) => this.log.error({ call: call.id, err: messageOf(err) }, 'bridge: cannot write a call to the store'));
  }

  private sweep(): void {
    const old = [...this.calls.values()].filter((c) => c.finishedAtMs && Date.now() - c.finishedAtMs > this.resultTtlMs).map((c) => c.id);
    for (const id of old) this.calls.delete(id);
    if (old.length) this.store.deleteCalls(old).catch((err: unknown) => this.log.warn({ err: messageOf(err) }, 'bridge: sweeping finished calls failed'));
  }

  // ---- placement -------------------------------------------------------------

  private schedulePump(): void {
    if (this.pumpScheduled || this.closed) return;
    this.pumpScheduled = true;
    setImmediate(() => {
      this.pumpScheduled = false;
      this.pump();
    });
  }

  /** Places every queued call that can be placed now (placement.ts decides which, in queue order). */
  private pump(): void {
    clearTimeout(this.wakeTimer);
    const now = Date.now();
    let wakeIn = Infinity;
    const workers = [...this.workers.values()];
    if (!workers.some((w) => w.running < w.slots)) return;
    const candidates: { id: string; extents: ExtentRef[] }[] = [];
    for (const id of [...this.queue]) {
      const call = this.calls.get(id);
      if (!call || call.state !== 'queued') continue;
      if (call.reclaimUntilMs !== undefined && call.reclaimUntilMs > now) {
        wakeIn = Math.min(wakeIn, call.reclaimUntilMs - now);
        continue;
      }
      try {
        const extents = this.reads.cached(call.reads, call.spec.volumes, call.versions);
        if (extents) candidates.push({ id, extents });
        else {
          // Not resolved since this bridge started (or evicted): placed once resolved.
          this.reads.resolve(call.reads, call.spec.volumes, call.versions).then(
            () => this.pump(),
            (err: unknown) => this.finish(call, { error: errorOf(err) }, 'failed'),
          );
        }
      } catch (err) {
        this.finish(call, { error: errorOf(err) }, 'failed');
      }
    }
    const round = this.policy.place(candidates, workers, now);
    if (round.wakeInMs !== undefined) wakeIn = Math.min(wakeIn, round.wakeInMs);
    const placed = new Set<string>();
    for (const p of round.placed) {
      const call = this.calls.get(p.callId)!;
      const worker = this.workers.get(p.workerId)!;
      placed.add(call.id);
      if (p.readBytes > 0) this.observer?.placed((p.candidates.find((c) => c.workerId === worker.id)?.cachedBytes ?? 0) > 0);
      call.attempt++;
      call.state = 'running';
      call.workerId = worker.id;
      call.startedAtMs = now;
      call.reclaimUntilMs = undefined;
      call.decisions.push({
        attempt: call.attempt,
        atMs: now,
        policy: this.policy.name,
        workerId: worker.id,
        reason: p.reason,
        readBytes: p.readBytes,
        candidates: p.candidates,
        waitedMs: now - call.queuedAtMs,
      });
      this.bind(call, worker);
      this.save(call);
      this.armTimeout(call);
      worker.link.send({
        assign: { callId: call.id, attempt: call.attempt, function: call.spec, args: call.args, versions: call.versions },
        registered: undefined,
        cancel: undefined,
        ack: undefined,
      });
    }
    if (placed.size) this.queue = this.queue.filter((id) => !placed.has(id));
    if (wakeIn !== Infinity && this.queue.length) this.wakeTimer = setTimeout(() => this.schedulePump(), wakeIn + 5).unref();
  }
}

function checkSpec(spec: FunctionSpec): void {
  if (!/^[A-Za-z_$][\w$]*$/.test(spec.function)) {
    throw new InvalidArgumentError(`function name ${quote(spec.function)} is not an export name of a module`);
  }
  if (!spec.codeVolume || !spec.bundlePath) throw new InvalidArgumentError('the function names no code bundle (code_volume, bundle_path)');
  checkMountPaths(spec.volumes);
  for (const r of spec.reads) splitRead(r, spec.volumes);
}

function errorOf(err: unknown): CallError {
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
