/**
 * The compute bridge: runs function calls on workers, each call next to the
 * data it reads.
 *
 * Three parts. Who is there: workers.ts (WorkerRoster, membership and
 * liveness). What each call is doing: calls.ts (CallBook, the call life
 * cycle, the queue and the store). Here: what joins them, and placement.
 * Beside them, logs.ts (LogKeeper) keeps what the calls' functions write.
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
import { InvalidArgumentError, UnavailableError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { quote } from '../common/quote.js';
import type { CallInfo, CallInput, CallOutcome, CallResult, FunctionSpec, RegisterWorker, WorkerInfo } from '../gen/stowage/v1/bridge.js';
import { CallBook, errorOf } from './calls.js';
import { LogKeeper, type LogSink } from './logs.js';
import { createPlacementPolicy, type PlacementPolicy, type QueuedCall } from './placement.js';
import { ReadResolver, checkSpec } from './reads.js';
import type { BridgeObserver, CallRecord, CallStore, PlacementPolicyName, VolumeResolver } from './types.js';
import { WorkerRoster, type Worker, type WorkerLink, type WorkerSession } from './workers.js';

export type { WorkerLink, WorkerSession } from './workers.js';

export interface BridgeOptions {
  placement?: PlacementPolicyName;
  localityWaitMs?: number;
  heartbeatMs?: number;
  workerTimeoutMs?: number;
  reclaimMs?: number;
  resultTtlMs?: number;
}

const MAX_CALLS_PER_SUBMIT = 10_000;

export class Bridge {
  private readonly calls: CallBook;
  private readonly workers: WorkerRoster;
  /** What the calls' functions wrote (logs.ts). */
  private readonly logs: LogKeeper;
  private readonly reads: ReadResolver;
  private readonly policy: PlacementPolicy;
  private readonly reclaimMs: number;
  private pumpScheduled = false;
  private wakeTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    store: CallStore,
    volumes: VolumeResolver,
    log: Logger,
    opts: BridgeOptions = {},
    /** Told of finished calls and placements (the server's metrics). */
    private readonly observer?: BridgeObserver,
  ) {
    this.reads = new ReadResolver(volumes);
    this.logs = new LogKeeper(store, log);
    this.policy = createPlacementPolicy(opts.placement ?? 'ours', { localityWaitMs: opts.localityWaitMs });
    const heartbeatMs = opts.heartbeatMs ?? 1000;
    this.reclaimMs = opts.reclaimMs ?? 5000;
    this.calls = new CallBook(store, log, opts.resultTtlMs ?? 6 * 3600_000, {
      release: (call) => this.workers.unbind(call.id, call.workerId),
      stopAttempt: (call, reason) => this.workers.send(call.workerId, { cancel: { callId: call.id, attempt: call.attempt, reason } }),
      changed: () => this.schedulePump(),
    }, observer);
    this.workers = new WorkerRoster(heartbeatMs, opts.workerTimeoutMs ?? 5 * heartbeatMs, log, {
      registered: (worker, reg, replaced) => this.registered(worker, reg, replaced),
      outcome: (worker, o) => this.onOutcome(worker, o),
      logs: (worker, entries) => this.logs.receive(worker.id, entries, (id) => this.calls.get(id)),
      gone: (worker, why) => {
        for (const id of worker.calls) {
          const call = this.calls.get(id);
          if (call) this.calls.lost(call, `worker ${worker.id} was lost (${why})`);
        }
        this.schedulePump();
      },
      chunksAdded: () => this.schedulePump(),
    });
  }

  get placement(): PlacementPolicyName {
    return this.policy.name;
  }

  /** Loads kept calls; running ones go back to the queue, claimable by their worker for `reclaimMs`. */
  async start(): Promise<void> {
    await this.calls.load(this.reclaimMs);
    if (this.closed) return;
    this.workers.start();
    this.schedulePump();
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.wakeTimer);
    this.calls.close();
    this.workers.close();
    await this.logs.close();
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
    await this.calls.add(fresh);
    return ids;
  }

  /** Calls `onResult` once per call as each finishes (at once for finished ones); resolves when all have. */
  watch(ids: string[], onResult: (r: CallResult) => Promise<void>, signal: AbortSignal): Promise<void> {
    return this.calls.watch(ids, onResult, signal);
  }

  /** Cancels the calls (CallBook.cancel); returns how many were queued or running. */
  cancel(ids: string[], ignoreFinished: boolean): number {
    if (this.closed) throw new UnavailableError('the bridge is shutting down');
    if (ids.length === 0) throw new InvalidArgumentError('CancelCalls names no call');
    if (ids.length > MAX_CALLS_PER_SUBMIT) throw new InvalidArgumentError(`at most ${MAX_CALLS_PER_SUBMIT} calls per CancelCalls, got ${ids.length}`);
    // All or none: every refusal (unknown, or finished without ignoreFinished) comes before any call is cancelled.
    for (const id of ids) this.calls.cancellable(id, ignoreFinished);
    let n = 0;
    for (const id of ids) if (this.calls.cancel(id, ignoreFinished)) n++;
    return n;
  }

  /** Sends what is kept of a call's output, then (follow) its new output until it finishes or `signal` aborts. */
  async watchLogs(id: string, follow: boolean, sink: LogSink, signal: AbortSignal): Promise<void> {
    this.calls.info(id); // NOT_FOUND naming how to list calls
    const finished = follow ? this.calls.watch([id], async () => undefined, signal) : Promise.resolve();
    await this.logs.watch(id, follow, sink, finished, signal);
  }

  getCall(id: string): CallInfo {
    return this.calls.info(id);
  }

  listCalls(schedule: string, limit: number): CallInfo[] {
    return this.calls.list(schedule, limit);
  }

  /** What the bridge holds now: workers registered, calls running on them, calls waiting to be placed. */
  stats(): { workers: number; runningCalls: number; queuedCalls: number } {
    return { workers: this.workers.size, runningCalls: this.workers.runningCalls(), queuedCalls: this.calls.queuedCount };
  }

  listWorkers(): WorkerInfo[] {
    return this.workers.list();
  }

  /** The chunks a registered worker's cache holds (undefined for an unknown worker). */
  cachedChunksOf(workerId: string): ReadonlySet<string> | undefined {
    return this.workers.get(workerId)?.chunks;
  }

  // ---- workers ---------------------------------------------------------------

  /** A new Work stream: nothing is sent to it before it registers. */
  attachWorker(link: WorkerLink): WorkerSession {
    return this.workers.attach(link);
  }

  /** A worker (re)registered: the attempts it still runs are claimed, or cancelled when no longer expected. */
  private registered(worker: Worker, reg: RegisterWorker, replaced: Worker | undefined): void {
    const stillRunning = new Set(reg.running.map((r) => `${r.callId}#${r.attempt}`));
    // The same worker on a new stream: the calls it no longer lists were lost.
    for (const id of replaced?.calls ?? []) {
      const call = this.calls.get(id);
      if (call && !stillRunning.has(`${id}#${call.attempt}`)) this.calls.lost(call, `worker ${worker.id} reconnected without it`);
    }
    const claimed = new Set<string>();
    for (const r of reg.running) {
      const call = this.calls.get(r.callId);
      const claimable =
        call &&
        call.attempt === r.attempt &&
        call.workerId === worker.id &&
        (call.state === 'running' || (call.state === 'queued' && call.reclaimUntilMs !== undefined));
      if (call && claimable) {
        if (call.state === 'queued') {
          claimed.add(call.id);
          call.state = 'running';
          call.reclaimUntilMs = undefined;
          this.calls.save(call);
        }
        this.workers.bind(call.id, worker);
        this.calls.armTimeout(call);
      } else {
        this.workers.send(worker.id, { cancel: { callId: r.callId, attempt: r.attempt, reason: 'the bridge no longer expects this attempt' } });
      }
    }
    this.calls.dequeue(claimed);
    this.schedulePump();
  }

  private onOutcome(worker: Worker, o: CallOutcome): void {
    const call = this.calls.get(o.callId);
    if (!call || call.attempt !== o.attempt || call.workerId !== worker.id) return; // stale or repeated
    // Queued with a reclaim window: it was running on this worker when the bridge restarted.
    const reclaimed = call.state === 'queued' && call.reclaimUntilMs !== undefined;
    if (call.state !== 'running' && !reclaimed) return;
    if (o.lost) {
      this.calls.lost(call, o.error?.message ?? `its runner on worker ${worker.id} died`);
      return;
    }
    if (o.ok) return this.calls.finish(call, { value: Buffer.from(o.value) }, 'succeeded');
    const error = o.error ?? { code: 'INTERNAL', message: 'the worker reported a failure without an error', name: '', stack: '' };
    // Only the handler's own exceptions are retried: a missing export or arguments that do not decode fail the same way again.
    if (error.code === 'FUNCTION_ERROR') this.calls.failed(call, error, 'failed');
    else this.calls.finish(call, { error }, 'failed');
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
    if (this.closed) return;
    const now = Date.now();
    let wakeIn = Infinity;
    const workers = this.workers.all();
    if (!workers.some((w) => w.running < w.slots)) return;
    const candidates: QueuedCall[] = [];
    for (const id of this.calls.queued()) {
      const call = this.calls.get(id);
      if (!call || call.state !== 'queued') continue;
      const notBefore = Math.max(call.reclaimUntilMs ?? 0, call.retryAtMs ?? 0);
      if (notBefore > now) {
        wakeIn = Math.min(wakeIn, notBefore - now);
        continue;
      }
      try {
        const extents = this.reads.cached(call.reads, call.spec.volumes, call.versions);
        // A function that names an image runs only on a worker that runs containers: it waits for one (one
        // restarting, or reconnecting, is back soon), as any call waits while no worker is registered.
        if (extents) candidates.push({ id, extents, containers: call.spec.image !== '' });
        else {
          // Not resolved since this bridge started (or evicted): placed once resolved.
          this.reads.resolve(call.reads, call.spec.volumes, call.versions).then(
            () => this.pump(),
            (err: unknown) => this.calls.finish(call, { error: errorOf(err) }, 'failed'),
          );
        }
      } catch (err) {
        this.calls.finish(call, { error: errorOf(err) }, 'failed');
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
      call.retryAtMs = undefined;
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
      this.workers.bind(call.id, worker);
      this.calls.save(call);
      this.calls.armTimeout(call);
      this.workers.send(worker.id, { assign: { callId: call.id, attempt: call.attempt, function: call.spec, args: call.args, versions: call.versions } });
    }
    this.calls.dequeue(placed);
    if (wakeIn !== Infinity && this.calls.queuedCount) this.wakeTimer = setTimeout(() => this.schedulePump(), wakeIn + 5).unref();
  }
}

