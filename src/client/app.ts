/**
 * Functions on the compute bridge, shaped like Modal's App and Function:
 *
 *   export const app = new App('shards');
 *   export async function countBytes(shard: number) {
 *     return (await readFile(`/data/shards/${shard}.bin`)).length;
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
 * sees its volumes at the paths it declared (or, on a worker that cannot
 * bind them there, under `volumePath(mountPath)`: function-volumes.ts).
 * `app.deploy()` registers the app's functions, so that they can be called
 * by name without this module (deployed.ts), and their schedules.
 */
import { basename, resolve as resolvePath } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseDuration } from '../common/duration.js';
import { quote } from '../common/quote.js';
import { parseSize } from '../common/size.js';
import { checkContainerFields } from '../common/validate.js';
import { CancelledError, DeadlineExceededError, FunctionError, InvalidArgumentError, NotFoundError } from '../common/errors.js';
import type { CallInfo, FunctionSpec, RetryPolicy, Schedule, WorkerInfo } from '../gen/stowage/v1/bridge.js';
import { DEFAULT_CODE_VOLUME, bundleModule, uploadBundle, type Bundle } from './bundle.js';
import { defaultConnection, type Connection } from './connection.js';
import { deployApp, type DeployResult, type ScheduleOption } from './deployed.js';
import { FunctionInvoker, cancelCalls } from './invoke.js';
import { volumeFields, type VolumeMount } from './function-volumes.js';

export { CancelledError, DeadlineExceededError, FunctionError };

/** How the runner recognises a function handle among a module's exports (Symbol.for: two copies of the SDK agree). */
const FUNCTION_BRAND = Symbol.for('stowage.function');
const THIS_FILE = fileURLToPath(import.meta.url);

export interface FunctionOptions<A extends unknown[]> {
  /**
   * Mount path the function sees -> volume name, e.g. { '/data': 'my-dataset' } (read-only, at the
   * version current when the call is submitted), or { name, writable: true }: each call writes
   * through its own mount of the newest version, committed when it returns (see volume()).
   */
  volumes?: Record<string, VolumeMount>;
  /** Globs over those paths that a call reads (for placement), or a function of the call's arguments giving them. */
  reads?: string[] | ((...args: A) => string[]);
  /** Milliseconds, or "30s", "5m"… (default: none). */
  timeout?: number | string;
  /**
   * Further attempts (default 0), as Modal's `retries`: a number N retries a
   * call whose handler threw, or that timed out, up to N times, 1 s apart, and
   * a call lost with its worker at once; `{ maxRetries, initialDelayMs,
   * backoffCoefficient, maxDelayMs }` sets the backoff (the k-th retry waits
   * min(initialDelayMs × backoffCoefficient^(k-1), maxDelayMs)).
   */
  retries?: number | RetryOptions;
  /**
   * A cron expression (five fields, or six with seconds), read in UTC, or
   * `{ cron, timezone }` with an IANA zone such as "Europe/Berlin";
   * registered by app.deploy().
   */
  schedule?: ScheduleOption;
  /**
   * The container image the function runs in, e.g. 'my-image:tag', on a worker started with
   * `--runtime docker` (default: that worker's --image). The image must be on the worker's Docker
   * engine, or pullable by it; its `node` (20 or newer) runs the function. A worker that runs
   * functions as processes refuses the call.
   */
  image?: string;
  /** CPU cores the function's container may use (docker runtime), e.g. 0.5 or 4. */
  cpu?: number;
  /** Memory limit of the function's container (docker runtime): bytes, or "512MiB", "2GiB". */
  memory?: number | string;
  /** 'any': each call needs a GPU (the NVIDIA runtime on a docker worker's engine); it fails, naming what is missing, where none is. */
  gpu?: 'any';
  /** The export to run (default: the handler's own name). */
  name?: string;
  /** The module exporting the handler (default: the module that calls app.function). */
  module?: string;
}

/** As Modal's Retries (defaults: initialDelayMs 1000, backoffCoefficient 2, maxDelayMs 60000). */
export interface RetryOptions {
  maxRetries: number;
  initialDelayMs?: number;
  backoffCoefficient?: number;
  maxDelayMs?: number;
}

export interface AppOptions {
  connection?: Connection;
  /** Where bundles are kept (default "__code__"). */
  codeVolume?: string;
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

  /**
   * Registers every function of this app (and the schedule of each that has
   * one) as APP/NAME, callable by name without this module; replaces the
   * app's earlier deploy, removing the functions it no longer has.
   */
  deploy(): Promise<DeployResult> {
    return deployApp(this, this.handles);
  }
}

export class FunctionHandle<A extends unknown[], R> extends FunctionInvoker<A, R> {
  readonly [FUNCTION_BRAND] = true;
  private bundled: Promise<FunctionSpec> | undefined;

  constructor(
    readonly app: App,
    readonly name: string,
    readonly module: string,
    readonly options: FunctionOptions<A>,
    readonly handler: (...args: A) => unknown,
  ) {
    super();
  }

  get connection(): Connection {
    return this.app.connection;
  }

  protected override readsOf(args: A): string[] {
    const reads = this.options.reads;
    return typeof reads === 'function' ? reads(...args) : [];
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
}

// ---- shared with the CLI -------------------------------------------------------

export function functionSpec(codeVolume: string, bundle: Bundle, name: string, o: Omit<FunctionOptions<never[]>, 'reads'> & { reads?: unknown }): FunctionSpec {
  const retryPolicy = retryPolicyOf(o.retries);
  const retries = retryPolicy?.maxRetries ?? 0;
  return {
    module: basename(bundle.module),
    function: name,
    codeVolume,
    bundlePath: bundle.path,
    bundleHash: bundle.hash,
    ...volumeFields(o.volumes),
    reads: Array.isArray(o.reads) ? (o.reads as string[]) : [],
    timeoutMs: o.timeout === undefined ? 0 : parseDuration('timeout', o.timeout),
    retries,
    schedule: '',
    retryPolicy,
    ...containerFields(o),
  };
}

/** image, cpu, memory and gpu, checked (the bridge checks them again: checkSpec). */
function containerFields(o: Pick<FunctionOptions<never[]>, 'image' | 'cpu' | 'memory' | 'gpu'>): Pick<FunctionSpec, 'image' | 'cpu' | 'memoryBytes' | 'gpu'> {
  if (o.cpu !== undefined && !(typeof o.cpu === 'number' && o.cpu > 0)) throw new InvalidArgumentError(`cpu must be a number of cores above 0, got ${JSON.stringify(o.cpu)}`);
  const memoryBytes = o.memory === undefined ? 0 : typeof o.memory === 'string' ? parseSize('memory', o.memory) : o.memory;
  const fields = { image: o.image ?? '', cpu: o.cpu ?? 0, memoryBytes, gpu: (o.gpu ?? '') as string };
  checkContainerFields(fields);
  return fields;
}

/** Modal's rule: a number N is N retries 1 s apart; an object sets the backoff. Undefined for no retries. */
export function retryPolicyOf(r: number | RetryOptions | undefined): RetryPolicy | undefined {
  if (r === undefined) return undefined;
  const o: RetryOptions = typeof r === 'number' ? { maxRetries: r, initialDelayMs: 1000, backoffCoefficient: 1 } : r;
  if (typeof o !== 'object' || o === null) throw new InvalidArgumentError(`retries must be a number or { maxRetries, initialDelayMs, backoffCoefficient, maxDelayMs }, got ${JSON.stringify(r)}`);
  const max = o.maxRetries;
  if (!Number.isInteger(max) || max < 0 || max > 100) throw new InvalidArgumentError(`retries must be 0 to 100, got ${JSON.stringify(max)}`);
  const initialDelayMs = parseDuration('retries.initialDelayMs', o.initialDelayMs ?? 1000);
  const maxDelayMs = parseDuration('retries.maxDelayMs', o.maxDelayMs ?? 60_000);
  const backoffCoefficient = o.backoffCoefficient ?? 2;
  if (!Number.isFinite(backoffCoefficient) || backoffCoefficient < 1 || backoffCoefficient > 10) {
    throw new InvalidArgumentError(`retries.backoffCoefficient must be 1 to 10, got ${JSON.stringify(backoffCoefficient)}`);
  }
  if (max === 0) return undefined;
  return { maxRetries: max, initialDelayMs, backoffCoefficient, maxDelayMs: Math.max(maxDelayMs, 1) };
}

export function checkExport(bundle: Bundle, name: string): void {
  if (!bundle.exports.includes(name)) {
    throw new NotFoundError(
      `function "${name}" not found in module ${basename(bundle.module)} (exported: ${bundle.exports.join(', ') || 'nothing'}); export the handler, or pass { name } naming its export`,
    );
  }
}

// ---- bridge administration (stowage bridge …) ---------------------------------

export const BridgeAdmin = {
  async call(callId: string, connection = defaultConnection()): Promise<CallInfo> {
    const b = connection.bridge;
    return connection.unary(b.getCall.bind(b), { callId });
  },
  /** Cancels calls (see FunctionCall.cancel); returns how many were still queued or running. */
  async cancel(callIds: string[], opts: { ignoreFinished?: boolean } = {}, connection = defaultConnection()): Promise<number> {
    return cancelCalls(connection, callIds, opts.ignoreFinished ?? false);
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
