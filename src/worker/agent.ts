/**
 * The worker agent (`stowage worker`), one per host: it runs the calls the
 * bridge places on it.
 *
 * Stream. The agent holds one Work stream to the bridge. It registers with
 * its id, slots, every chunk the host cache holds and the calls it is still
 * running; then it sends a heartbeat every `heartbeatMs` (the bridge says how
 * often) and, every `scanMs` and after every call, the chunks added to or
 * removed from the cache since the last report (it lists `<cache-dir>/chunks/`,
 * which the mounts fill). The report after a call goes before its outcome, so
 * the bridge knows what the call cached before it places the next call in the
 * slot the outcome frees. When the stream fails it reconnects with backoff (250 ms doubling to
 * 5 s) and registers again, with the full chunk set; except when the server
 * refused its token: that will not mend by waiting, so the agent stops and
 * reports the error (`onFatal`; `stowage worker` exits with it, status 7).
 *
 * Calls. An assignment names a function (its bundle in a code volume), its
 * arguments and the pinned versions of its volumes. The agent mounts each
 * volume version it does not have yet (mounts.ts), fetches the bundle
 * (code.ts), and hands the call to a runner process (runners.ts: started as
 * calls arrive, up to `slots`, stopped after `idleTimeoutMs` idle). Mounts
 * live under the work dir (several workers may share a host); where the
 * worker can, each runner has a mount namespace of its own in which the
 * call's volumes are bound at their declared paths ('/data'), else the
 * function finds them through `volumePath('/data')` (namespaces.ts; said
 * once at start). A writable volume gets a mount of its own per call
 * (mounts.ts): committed when the call returns normally, dropped when it
 * fails (logged, and said in the call's error).
 *
 * Outcomes. Each attempt's outcome is kept until the bridge acknowledges it
 * and sent again after a reconnect, so a bridge restart loses no result. A
 * runner that dies, or a volume that cannot be mounted, reports the attempt
 * `lost` (the bridge may retry it elsewhere); a cancel (timeout, or an
 * attempt the bridge no longer expects) kills the call's runner.
 *
 * Output. What a call's function writes to stdout and stderr is told apart
 * per call (output.ts) and sent on the stream before the call's outcome,
 * bounded per call and never waited for (log-shipper.ts); after a reconnect
 * it goes before the outcomes sent again.
 */
import { existsSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { ClientDuplexStream } from '@grpc/grpc-js';
import type { Connection } from '../client/index.js';
import pRetry from 'p-retry';
import { ErrorCode, FailedPreconditionError, isStowageError, messageOf, StowageError } from '../common/errors.js';
import { stowageVersion } from '../common/version.js';
import { PRIVATE, ensureDir, setTreeModes } from '../common/file-modes.js';
import { fromGrpcError } from '../common/grpc-errors.js';
import type { Logger } from '../common/logger.js';
import { listCachedChunks } from '../fuse-mount/cache/cache-listing.js';
import type { Assignment, BridgeMessage, CallOutcome, FunctionSpec, WorkerMessage } from '../gen/stowage/v1/bridge.js';
import { CodeCache } from './code.js';
import { MountManager } from './mounts.js';
import { LogShipper } from './log-shipper.js';
import { setUpVolumePaths, tearDownVolumePaths, type VolumePathSupport } from './namespaces.js';
import { CallVolumes } from './call-volumes.js';
import { DockerRuntime } from './docker-runtime.js';
import { RunnerPool, forkRunners } from './runners.js';

export interface WorkerOptions {
  id?: string;
  slots: number;
  cacheDir: string;
  cacheSize: string;
  workDir: string;
  idleTimeoutMs: number;
  /** How often the cache directory is listed for changes (default 500 ms). */
  scanMs?: number;
  connection: Connection;
  /** Environment of the mount and runner processes (server address and token included). */
  env: NodeJS.ProcessEnv;
  mountArgs?: string[];
  /** false: do not bind volumes at their declared paths (functions use volumePath()). */
  volumePaths?: boolean;
  /** How function processes run: forked on this host (default), or in containers (docker-runtime.ts). */
  runtime?: 'process' | 'docker';
  /** The image of functions that name none (docker runtime). */
  image?: string;
  log: Logger;
  /** Called at each (re)registration with the bridge. */
  onRegistered?: () => void;
  /** Called, once, when the agent gives up for good (the server refused its token); it has stopped reconnecting. */
  onFatal?: (err: StowageError) => void;
}

const EMPTY_MSG: WorkerMessage = { register: undefined, chunks: undefined, heartbeat: undefined, outcome: undefined, logs: undefined };
const BACKOFF_MIN_MS = 250;
const BACKOFF_MAX_MS = 5000;

export class WorkerAgent {
  readonly id: string;
  private readonly mounts: MountManager;
  private readonly code: CodeCache;
  private readonly runners: RunnerPool;
  /** What the calls' functions write, on its way to the bridge (log-shipper.ts). */
  private readonly output: LogShipper;
  private readonly volumePaths: VolumePathSupport;
  /** Set with the docker runtime. */
  private readonly docker: DockerRuntime | undefined;
  /** The volumes of the calls in progress, by call id. */
  private readonly callVolumes = new Map<string, CallVolumes>();
  private stream: ClientDuplexStream<WorkerMessage, BridgeMessage> | undefined;
  private registered = false;
  private reported = new Set<string>();
  /** Calls in progress: "callId#attempt" -> assignment. */
  private readonly running = new Map<string, Assignment>();
  /** Calls in progress the bridge cancelled ("callId#attempt"): not run, or not committed, whatever stage they reached. */
  private readonly cancelled = new Set<string>();
  /** Outcomes not yet acknowledged by the bridge. */
  private readonly unacked = new Map<string, CallOutcome>();
  private heartbeat: NodeJS.Timeout | undefined;
  private scanner: NodeJS.Timeout | undefined;
  private retry: NodeJS.Timeout | undefined;
  private backoffMs = BACKOFF_MIN_MS;
  private scanning = false;
  private scanDone: Promise<void> = Promise.resolve();
  private stopped = false;

  constructor(private readonly opts: WorkerOptions) {
    this.id = opts.id ?? `${hostname()}-${process.pid}`;
    // Mounts of volumes and function code: this user's alone (0700), whatever was there before.
    if (ensureDir(opts.workDir, PRIVATE)) opts.log.info({ workDir: opts.workDir }, `set the mode of the work directory ${opts.workDir} to 0700: other local users could enter it`);
    this.mounts = new MountManager({ workDir: opts.workDir, cacheDir: opts.cacheDir, cacheSize: opts.cacheSize, env: opts.env, extraArgs: opts.mountArgs, clientName: `worker ${this.id}` });
    this.code = new CodeCache(opts.workDir, opts.connection);
    const mountsDir = join(opts.workDir, 'mounts');
    ensureDir(mountsDir, PRIVATE);
    this.volumePaths = setUpVolumePaths(mountsDir, opts.volumePaths === false);
    if (this.volumePaths.ok) {
      if (opts.runtime !== 'docker') opts.log.info({ worker: this.id }, 'worker: functions see their volumes at their declared paths (a mount namespace per function process)');
    } else opts.log.warn({ worker: this.id }, `worker: functions see their volumes only through volumePath(), not at their declared paths: ${this.volumePaths.why}`);
    const runnerEnv = { ...opts.env, STOWAGE_WORKER_ID: this.id };
    if (opts.runtime === 'docker') {
      if (!this.volumePaths.ok) throw new FailedPreconditionError(`--runtime docker binds each function's volumes at their declared paths, and this worker cannot: ${this.volumePaths.why}`);
      this.docker = new DockerRuntime({
        image: opts.image ?? `stowage:${stowageVersion()}`,
        workerId: this.id,
        workDir: opts.workDir,
        mountsDir,
        env: runnerEnv,
        log: opts.log,
      });
    }
    this.runners = new RunnerPool(opts.slots, opts.idleTimeoutMs, runnerEnv, {
      start: this.docker?.starter() ?? forkRunners(runnerEnv, this.volumePaths.ok ? { execPath: this.volumePaths.execPath, execArgv: this.volumePaths.execArgv } : undefined),
      onVolumeOp: (op) => {
        const cv = this.callVolumes.get(op.callId);
        if (!cv) return Promise.resolve({ id: op.id, ok: false as const, code: 'FAILED_PRECONDITION', message: `call ${op.callId} is not running on this worker` });
        return cv.request(op);
      },
    });
    this.output = new LogShipper({
      ready: (force) => !!this.stream && this.registered && (force || !this.stream.writableNeedDrain),
      send: (entries) => this.send({ logs: { entries } }),
    });
  }

  /** Starts the agent; with the docker runtime, once its engine answers and its image is there (else it throws). */
  async start(): Promise<void> {
    if (this.docker) {
      await this.docker.start();
      this.opts.log.info({ worker: this.id }, `worker: functions run in containers (docker runtime, image ${this.opts.image ?? `stowage:${stowageVersion()}`} unless a function names its own)`);
    }
    // Bundles an earlier run left: 0600 like new ones. Only code/: mounts/ holds live FUSE mounts.
    setTreeModes(join(this.opts.workDir, 'code'), PRIVATE).catch((err: unknown) =>
      this.opts.log.warn({ err: messageOf(err) }, 'worker: cannot set the modes of fetched code in the work directory'),
    );
    this.connect();
    this.scanner = setInterval(() => void this.reportChunks(), this.opts.scanMs ?? 500);
  }

  /** Runner processes alive now (scale to zero: none when idle). */
  runnerPids(): number[] {
    return this.runners.pids();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.scanner);
    clearInterval(this.heartbeat);
    clearTimeout(this.retry);
    this.output.stop();
    this.stream?.cancel();
    await this.runners.stop();
    await this.docker?.stop();
    await this.mounts.stopAll();
    if (this.volumePaths.ok) tearDownVolumePaths(join(this.opts.workDir, 'mounts'));
  }

  private send(msg: Partial<WorkerMessage>): void {
    if (this.stream && this.registered) this.stream.write({ ...EMPTY_MSG, ...msg });
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    const chunks = await listCachedChunks(this.opts.cacheDir);
    const stream = this.opts.connection.bridge.work();
    this.stream = stream;
    this.registered = false;
    stream.on('data', (msg: BridgeMessage) => this.onMessage(stream, msg, chunks));
    const fail = (why: string) => {
      if (this.stream !== stream) return;
      this.stream = undefined;
      this.registered = false;
      clearInterval(this.heartbeat);
      if (this.stopped) return;
      this.opts.log.warn({ retryInMs: this.backoffMs }, `worker: stream to the bridge ${why}; reconnecting`);
      this.retry = setTimeout(() => void this.connect(), this.backoffMs);
      this.backoffMs = Math.min(this.backoffMs * 2, BACKOFF_MAX_MS);
    };
    stream.on('error', (err: Error) => {
      const error = fromGrpcError(err, this.opts.connection.server, this.opts.connection.tls);
      // A token refused, or one without bridge:*:write: retrying cannot help.
      if ((error.code === ErrorCode.UNAUTHENTICATED || error.code === ErrorCode.PERMISSION_DENIED) && this.stream === stream && !this.stopped) {
        this.stream = undefined;
        this.stopped = true;
        clearInterval(this.heartbeat);
        clearInterval(this.scanner);
        if (this.opts.onFatal) this.opts.onFatal(error);
        else this.opts.log.error({ worker: this.id }, `worker: the bridge refused this worker, giving up: ${error.message}`);
        return;
      }
      fail(`failed (${messageOf(err)})`);
    });
    stream.on('end', () => fail('ended'));
    stream.write({
      ...EMPTY_MSG,
      register: {
        workerId: this.id,
        host: hostname(),
        slots: this.opts.slots,
        chunks: [...chunks],
        running: [...this.running.values()].map((a) => ({ callId: a.callId, attempt: a.attempt })),
        containers: !!this.docker,
      },
    });
  }

  private onMessage(stream: ClientDuplexStream<WorkerMessage, BridgeMessage>, msg: BridgeMessage, registeredChunks: Set<string>): void {
    if (msg.registered) {
      this.registered = true;
      this.reported = registeredChunks;
      this.backoffMs = BACKOFF_MIN_MS;
      clearInterval(this.heartbeat);
      this.heartbeat = setInterval(() => this.send({ heartbeat: { running: this.running.size } }), msg.registered.heartbeatMs || 1000);
      this.opts.log.info({ worker: this.id }, 'worker: registered with the bridge');
      this.opts.onRegistered?.();
      // Output of finished attempts before their outcomes, as on the first try.
      this.output.flush(true);
      for (const o of this.unacked.values()) this.send({ outcome: o });
    }
    if (this.stream !== stream) return;
    if (msg.ack) this.unacked.delete(`${msg.ack.callId}#${msg.ack.attempt}`);
    if (msg.cancel) {
      const key = `${msg.cancel.callId}#${msg.cancel.attempt}`;
      if (this.running.has(key)) {
        this.opts.log.info({ call: msg.cancel.callId, reason: msg.cancel.reason }, 'worker: call cancelled');
        // Also while the call is still being prepared (no runner has it yet) or committed: runCall checks this.
        this.cancelled.add(key);
        this.runners.cancel(msg.cancel.callId);
      }
    }
    if (msg.assign) void this.runCall(msg.assign);
  }

  /** Sends what changed in the cache since the last report; `wait` waits for a scan in progress instead of skipping. */
  private async reportChunks(wait = false): Promise<void> {
    while (wait && this.scanning) await this.scanDone;
    if (!this.registered || this.scanning) return;
    this.scanning = true;
    let done!: () => void;
    this.scanDone = new Promise<void>((r) => (done = r));
    try {
      const now = await listCachedChunks(this.opts.cacheDir);
      const added = [...now].filter((h) => !this.reported.has(h));
      const removed = [...this.reported].filter((h) => !now.has(h));
      if ((added.length || removed.length) && this.registered) {
        this.send({ chunks: { added, removed } });
        this.reported = now;
      }
    } finally {
      this.scanning = false;
      done();
    }
  }

  /** Why this worker cannot run `spec` as it asks, if it cannot; an engine it cannot reach throws (UNAVAILABLE: the attempt is lost). */
  private async checkRuntime(spec: FunctionSpec): Promise<string | undefined> {
    if (this.docker) {
      try {
        await this.docker.prepare(spec, spec.function);
        return undefined;
      } catch (err) {
        if (isStowageError(err, 'FAILED_PRECONDITION')) return err.message;
        throw err;
      }
    }
    if (spec.image) return `function ${spec.function} names the image ${spec.image}, but worker ${this.id} runs functions as processes on its host (start workers with --runtime docker to run functions in containers)`;
    if (spec.gpu && !existsSync('/dev/nvidiactl')) return `function ${spec.function} asks for gpu '${spec.gpu}', but worker ${this.id}'s host has no NVIDIA device (/dev/nvidiactl)`;
    return undefined;
  }

  private async runCall(a: Assignment): Promise<void> {
    const key = `${a.callId}#${a.attempt}`;
    if (this.running.has(key)) return;
    this.running.set(key, a);
    const spec = a.function!;
    const volumes = new CallVolumes(a, this.mounts, this.opts.connection, this.opts.log);
    let outcome: CallOutcome;
    try {
      // Where and how it can run (its image, its GPU): a refusal is the call's error, not a lost attempt (another
      // attempt here would fail alike).
      const refused = await this.checkRuntime(spec);
      if (refused) throw new RuntimeRefusal(refused);
      // The server may be restarting (it hosts the bridge and the volumes): preparation waits for it a while.
      const bundle = await pRetry(
        async () => {
          await volumes.mount();
          return this.code.bundle(spec);
        },
        { ...PREPARE_RETRY, shouldRetry: (err) => isStowageError(err, 'UNAVAILABLE') },
      );
      if (this.cancelled.has(key)) return; // cancelled (or timed out) while it was prepared: it never runs
      this.callVolumes.set(a.callId, volumes);
      const sink = this.output.sink(a.callId, a.attempt);
      const reply = await this.runners.run(
        { callId: a.callId, bundle, module: spec.module, function: spec.function, args: a.args, mounts: volumes.list(), bind: this.volumePaths.ok && !this.docker, bound: !!this.docker },
        sink,
        this.docker?.key(spec),
      );
      this.callVolumes.delete(a.callId);
      if ('cancelled' in reply) return;
      if ('lost' in reply) outcome = lostOutcome(a, `${reply.message} on worker ${this.id}${await volumes.drop('its runner process was lost')}`);
      else if (reply.ok) {
        if (this.cancelled.has(key)) return; // cancelled as it returned: its writes are dropped, not committed
        const failed = await volumes.commit();
        outcome = failed
          ? { callId: a.callId, attempt: a.attempt, ok: false, value: Buffer.alloc(0), error: failed, lost: false }
          : { callId: a.callId, attempt: a.attempt, ok: true, value: Buffer.from(reply.value), error: undefined, lost: false };
      } else {
        const dropped = await volumes.drop('the call failed');
        outcome = { callId: a.callId, attempt: a.attempt, ok: false, value: Buffer.alloc(0), error: { ...reply.error, message: reply.error.message + dropped }, lost: false };
      }
    } catch (err) {
      if (err instanceof RuntimeRefusal) outcome = { callId: a.callId, attempt: a.attempt, ok: false, value: Buffer.alloc(0), error: { code: 'FAILED_PRECONDITION', message: err.message, name: '', stack: '' }, lost: false };
      // Mount or code fetch failed on this worker: another one may do better.
      else outcome = lostOutcome(a, `worker ${this.id} could not prepare the call: ${messageOf(err)}`, err instanceof StowageError ? err.code : 'UNAVAILABLE');
    } finally {
      // Its output goes before its outcome (the stream keeps messages in order).
      this.output.end(a.callId, a.attempt);
      this.running.delete(key);
      this.cancelled.delete(key);
      this.callVolumes.delete(a.callId);
      // A cancelled call's writable mounts go too (their writes dropped); a no-op after commit() or drop().
      await volumes.release('the call was cancelled');
    }
    // The chunks this call brought into the cache reach the bridge before the slot it frees, so the next
    // placement already sees them (the stream keeps messages in order).
    await this.reportChunks(true);
    this.unacked.set(key, outcome);
    this.send({ outcome });
  }
}

/** A call this worker's runtime cannot run (an image without the docker runtime, a GPU it does not have). */
class RuntimeRefusal extends Error {}

/** Retries of a call's preparation (mounts, code) while the server is unreachable: about 20 s in all. */
const PREPARE_RETRY = { retries: 8, minTimeout: 250, maxTimeout: 4000 };

function lostOutcome(a: Assignment, message: string, code = 'UNAVAILABLE'): CallOutcome {
  return { callId: a.callId, attempt: a.attempt, ok: false, value: Buffer.alloc(0), error: { code, message, name: '', stack: '' }, lost: true };
}
