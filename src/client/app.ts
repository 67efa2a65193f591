/**
 * Functions on the compute bridge, shaped like Modal's App and Function:
 *
 *   export const app = new App('shards');
 *   export async function countBytes(shard: number) {
 *     return (await readFile(`${volumePath('/data')}/shards/${shard}.bin`)).length;
 *   }
 *   export const count = app.function(
 *     { volumes: { '/data': 'my-dataset' }, reads: (shard) => [`/data/shards/${shard}.bin`], timeout: '5m', retries: 2 },
 *     countBytes,
 *   );
 *   await count.remote(3);                       // runs on the worker caching shard 3
 *   await count.map([0, 1, 2, 3]);               // results in input order
 *   const call = await count.spawn(4); ...; await call.get();
 *
 * The handler must be an export of the module that calls app.function (by
 * its own name, or `name`); the module is bundled and put into the code
 * volume on first use (bundle.ts), and workers import that bundle, so no
 * file system is shared. Arguments and results travel as msgpack. A function
 * reads its volumes under `volumePath(mountPath)`, where its worker mounted
 * them. `schedule` (a cron expression) takes effect at `app.deploy()`.
 */
import { randomUUID } from 'node:crypto';
import { basename, resolve as resolvePath } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ClientReadableStream } from '@grpc/grpc-js';
import { parseDuration } from '../common/duration.js';
import { quote } from '../common/quote.js';
import {
  DeadlineExceededError,
  ErrorCode,
  isErrorCode,
  FunctionError,
  InvalidArgumentError,
  NotFoundError,
  StowageError,
  errorForCode,
  isStowageError,
} from '../common/errors.js';
import { CallState, type CallError, type CallInfo, type CallResult, type FunctionSpec, type Schedule, type WorkerInfo } from '../gen/stowage/v1/bridge.js';
import { DEFAULT_CODE_VOLUME, bundleModule, uploadBundle, type Bundle } from './bundle.js';
import { codecFor } from './codec.js';
import { defaultConnection, type Connection } from './connection.js';
import { callLogs, type CallOutput, type LogsOptions } from './logs.js';

export { DeadlineExceededError, FunctionError };

/** How the runner recognises a function handle among a module's exports (Symbol.for: two copies of the SDK agree). */
const FUNCTION_BRAND = Symbol.for('stowage.function');
const msgpack = codecFor('msgpack');
const THIS_FILE = fileURLToPath(import.meta.url);
/** How long a caller keeps trying to reach a restarting bridge before giving up. */
const RECONNECT_FOR_MS = 60_000;

export interface FunctionOptions<A extends unknown[]> {
  /** Mount path the function sees -> volume name, e.g. { '/data': 'my-dataset' }. */
  volumes?: Record<string, string>;
  /** Globs over those paths that a call reads (for placement), or a function of the call's arguments giving them. */
  reads?: string[] | ((...args: A) => string[]);
  /** Milliseconds, or "30s", "5m"… (default: none). */
  timeout?: number | string;
  /** Further attempts for a call lost with its worker (default 0). */
  retries?: number;
  /** A cron expression (five fields, or six with seconds); registered by app.deploy(). */
  schedule?: string;
  /** The export to run (default: the handler's own name). */
  name?: string;
  /** The module exporting the handler (default: the module that calls app.function). */
  module?: string;
}

export interface AppOptions {
  connection?: Connection;
  /** Where bundles are kept (default "__code__"). */
  codeVolume?: string;
}

export interface MapOptions {
  /** Called after each result arrives. */
  onProgress?: (done: number, total: number) => void;
}

export class App {
  private readonly handles: FunctionHandle<never[], unknown>[] = [];

  constructor(
    readonly name: string,
    private readonly opts: AppOptions = {},
  ) {
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(name)) throw new InvalidArgumentError(`app name ${quote(name)} must be 1 to 64 of [A-Za-z0-9._-]`);
  }

  get connection(): Connection {
    return this.opts.connection ?? defaultConnection();
  }

  get codeVolume(): string {
    return this.opts.codeVolume ?? DEFAULT_CODE_VOLUME;
  }

  function<A extends unknown[], R>(opts: FunctionOptions<A>, handler: (...args: A) => R): FunctionHandle<A, Awaited<R>> {
    if (typeof handler !== 'function') throw new InvalidArgumentError('app.function needs a handler function');
    const name = opts.name ?? handler.name;
    if (!name) {
      throw new InvalidArgumentError('the handler has no name: pass an exported named function, or { name: "exportName" } naming the export that holds it');
    }
    const module = opts.module ? modulePath(opts.module) : callerModule();
    const h = new FunctionHandle<A, Awaited<R>>(this, name, module, opts, handler);
    this.handles.push(h as unknown as FunctionHandle<never[], unknown>);
    return h;
  }

  /** Registers (or replaces) the schedule of every function that has one; returns their names. */
  async deploy(): Promise<string[]> {
    const names: string[] = [];
    for (const h of this.handles) {
      if (!h.options.schedule) continue;
      const spec = await h.spec();
      const name = `${this.name}.${h.name}`;
      const bridge = this.connection.bridge;
      await this.connection.unary(bridge.putSchedule.bind(bridge), { name, cron: h.options.schedule, function: spec, nextRunMs: 0 });
      names.push(name);
    }
    return names;
  }
}

export class FunctionHandle<A extends unknown[], R> {
  readonly [FUNCTION_BRAND] = true;
  private bundled: Promise<FunctionSpec> | undefined;

  constructor(
    readonly app: App,
    readonly name: string,
    readonly module: string,
    readonly options: FunctionOptions<A>,
    readonly handler: (...args: A) => unknown,
  ) {}

  /** Runs one call and returns its result. */
  async remote(...args: A): Promise<R> {
    return (await this.spawn(...args)).get();
  }

  /** Starts one call; the handle's get() waits for its result. */
  async spawn(...args: A): Promise<FunctionCall<R>> {
    const [id] = await this.submit([args]);
    return new FunctionCall<R>(this.app.connection, id!);
  }

  /** One call per input (each input is the single argument), results in input order; rejects with the first failure. */
  async map(inputs: Iterable<A[0]>, opts: MapOptions = {}): Promise<R[]> {
    const list = [...inputs].map((x) => [x] as unknown as A);
    if (list.length === 0) return [];
    const ids = await this.submit(list);
    const index = new Map(ids.map((id, i) => [id, i]));
    const out = new Array<R>(ids.length);
    let done = 0;
    await watchResults(this.app.connection, ids, (r) => {
      out[index.get(r.callId)!] = valueOf<R>(r);
      opts.onProgress?.(++done, ids.length);
    });
    return out;
  }

  /** The spec the bridge runs: bundles and uploads the module once per handle. */
  spec(): Promise<FunctionSpec> {
    this.bundled ??= this.makeSpec();
    this.bundled.catch(() => (this.bundled = undefined));
    return this.bundled;
  }

  private async makeSpec(): Promise<FunctionSpec> {
    const bundle = await bundleModule(this.module);
    checkExport(bundle, this.name);
    await uploadBundle(this.app.connection, this.app.codeVolume, bundle);
    return functionSpec(this.app.codeVolume, bundle, this.name, this.options);
  }

  private async submit(argLists: A[]): Promise<string[]> {
    const spec = await this.spec();
    const reads = this.options.reads;
    const calls = argLists.map((args, i) => ({
      id: `fc-${randomUUID()}`,
      args: msgpack.encode(args, `the arguments of call ${i + 1} to ${this.name}`),
      reads: typeof reads === 'function' ? reads(...args) : [],
    }));
    return submitCalls(this.app.connection, spec, calls);
  }
}

/** A call started with spawn(). */
export class FunctionCall<R> {
  constructor(
    private readonly connection: Connection,
    readonly id: string,
  ) {}

  /** Waits for the result (or throws the call's error). */
  async get(): Promise<R> {
    let result: CallResult | undefined;
    await watchResults(this.connection, [this.id], (r) => (result = r));
    return valueOf<R>(result!);
  }

  /** What the function wrote to stdout and stderr (logs.ts): what is kept, then with `follow` new output until the call ends. */
  logs(opts: LogsOptions = {}): AsyncIterable<CallOutput> {
    return callLogs(this.connection, this.id, opts);
  }
}

/** Where the volume a function declared at `mountPath` is mounted on the worker running it. */
export function volumePath(mountPath: string): string {
  const raw = process.env.STOWAGE_VOLUME_PATHS;
  const map = raw ? (JSON.parse(raw) as Record<string, string>) : {};
  const clean = mountPath.replace(/\/+$/, '');
  for (const [declared, local] of Object.entries(map)) {
    if (clean === declared) return local;
    if (clean.startsWith(`${declared}/`)) return local + clean.slice(declared.length);
  }
  throw new NotFoundError(
    raw
      ? `no volume is declared at ${mountPath} (declared: ${Object.keys(map).join(', ') || 'none'}); add it to app.function({ volumes })`
      : `volumePath(${JSON.stringify(mountPath)}) works inside a function run by a stowage worker`,
  );
}

// ---- shared with the CLI -------------------------------------------------------

export function functionSpec(codeVolume: string, bundle: Bundle, name: string, o: Omit<FunctionOptions<never[]>, 'reads'> & { reads?: unknown }): FunctionSpec {
  const retries = o.retries ?? 0;
  if (!Number.isInteger(retries) || retries < 0 || retries > 100) throw new InvalidArgumentError(`retries must be 0 to 100, got ${retries}`);
  return {
    module: basename(bundle.module),
    function: name,
    codeVolume,
    bundlePath: bundle.path,
    bundleHash: bundle.hash,
    volumes: o.volumes ?? {},
    reads: Array.isArray(o.reads) ? (o.reads as string[]) : [],
    timeoutMs: o.timeout === undefined ? 0 : parseDuration('timeout', o.timeout),
    retries,
    schedule: '',
  };
}

export function checkExport(bundle: Bundle, name: string): void {
  if (!bundle.exports.includes(name)) {
    throw new NotFoundError(
      `function "${name}" not found in module ${basename(bundle.module)} (exported: ${bundle.exports.join(', ') || 'nothing'}); export the handler, or pass { name } naming its export`,
    );
  }
}

/** Submits calls, retrying while the bridge is unreachable (call ids make a repeated Submit harmless). */
export async function submitCalls(connection: Connection, spec: FunctionSpec, calls: { id: string; args: Buffer; reads: string[] }[]): Promise<string[]> {
  const bridge = connection.bridge;
  return retryUnavailable(() => connection.unary(bridge.submit.bind(bridge), { function: spec, calls }).then((r) => r.callIds));
}

/** Calls `onResult` once per call as results arrive; reconnects while the bridge restarts. */
export async function watchResults(connection: Connection, ids: string[], onResult: (r: CallResult) => void): Promise<void> {
  const waiting = new Set(ids);
  let lastProgress = Date.now();
  let pauseMs = 200;
  while (waiting.size) {
    try {
      const call: ClientReadableStream<CallResult> = connection.bridge.watchCalls({ callIds: [...waiting] });
      for await (const r of connection.stream(call)) {
        if (!waiting.delete(r.callId)) continue;
        lastProgress = Date.now();
        pauseMs = 200;
        onResult(r);
      }
    } catch (err) {
      if (!isStowageError(err, ErrorCode.UNAVAILABLE) || Date.now() - lastProgress > RECONNECT_FOR_MS) throw err;
      await new Promise((r) => setTimeout(r, pauseMs));
      pauseMs = Math.min(pauseMs * 2, 3000);
    }
  }
}

async function retryUnavailable<T>(fn: () => Promise<T>): Promise<T> {
  const start = Date.now();
  let pauseMs = 200;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (!isStowageError(err, ErrorCode.UNAVAILABLE) || Date.now() - start > RECONNECT_FOR_MS) throw err;
      await new Promise((r) => setTimeout(r, pauseMs));
      pauseMs = Math.min(pauseMs * 2, 3000);
    }
  }
}

/** The call's value, or its error as a typed StowageError (a handler's own error keeps its name and stack). */
export function valueOf<R>(r: CallResult): R {
  if (r.state === CallState.CALL_STATE_SUCCEEDED) return msgpack.decode(r.value) as R;
  throw callError(r.error, r.callId, r.workerId);
}

export interface RemoteErrorDetails {
  callId: string;
  workerId: string;
  /** For FUNCTION_ERROR: the name and stack of what the handler threw, on the worker. */
  remoteName?: string;
  remoteStack?: string;
}

export function callError(e: CallError | undefined, callId: string, workerId: string): StowageError & RemoteErrorDetails {
  const sent = e?.code;
  const code = isErrorCode(sent) ? sent : ErrorCode.INTERNAL;
  const err = errorForCode(code, e?.message ?? `call ${callId} failed without an error`) as StowageError & RemoteErrorDetails;
  err.callId = callId;
  err.workerId = workerId;
  if (code === ErrorCode.FUNCTION_ERROR && e) {
    err.remoteName = e.name;
    err.remoteStack = e.stack;
    if (e.stack) err.stack = `${e.stack}\n    at (call ${callId} on worker ${workerId})`;
  }
  return err;
}

// ---- bridge administration (stowage bridge …) ---------------------------------

export const BridgeAdmin = {
  async call(callId: string, connection = defaultConnection()): Promise<CallInfo> {
    const b = connection.bridge;
    return connection.unary(b.getCall.bind(b), { callId });
  },
  async calls(opts: { schedule?: string; limit?: number } = {}, connection = defaultConnection()): Promise<CallInfo[]> {
    const b = connection.bridge;
    return (await connection.unary(b.listCalls.bind(b), { schedule: opts.schedule ?? '', limit: opts.limit ?? 100 })).calls;
  },
  async workers(connection = defaultConnection()): Promise<WorkerInfo[]> {
    const b = connection.bridge;
    return (await connection.unary(b.listWorkers.bind(b), {})).workers;
  },
  async schedules(connection = defaultConnection()): Promise<Schedule[]> {
    const b = connection.bridge;
    return (await connection.unary(b.listSchedules.bind(b), {})).schedules;
  },
  async deleteSchedule(name: string, connection = defaultConnection()): Promise<void> {
    const b = connection.bridge;
    await connection.unary(b.deleteSchedule.bind(b), { name });
  },
};

// ---- where the handler's module is ------------------------------------------

function modulePath(m: string): string {
  return m.startsWith('file:') ? fileURLToPath(m) : resolvePath(m);
}

/** The file of the first stack frame outside this SDK file: the module calling app.function. */
function callerModule(): string {
  const saved = Error.prepareStackTrace;
  let files: (string | null)[] = [];
  try {
    Error.prepareStackTrace = (_e, frames) => frames.map((f) => f.getFileName() ?? null);
    const holder: { stack?: unknown } = {};
    Error.captureStackTrace(holder, callerModule);
    files = holder.stack as (string | null)[];
  } finally {
    Error.prepareStackTrace = saved;
  }
  for (const f of files) {
    if (!f || f.startsWith('node:')) continue;
    const path = f.startsWith('file:') ? fileURLToPath(f) : f;
    if (path !== THIS_FILE) return path;
  }
  throw new InvalidArgumentError('cannot tell which module calls app.function: pass { module: import.meta.url }');
}
