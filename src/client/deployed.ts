/**
 * Deployed functions, as Modal's `Function.from_name`: `app.deploy()` (or
 * `stowage deploy MODULE`) registers every function of an app with the
 * bridge, and any caller then calls one by name, without the module's
 * source:
 *
 *   const count = DeployedFunction.fromName('shards', 'count');   // also exported as `Function`
 *   await count.remote(3);
 *
 * fromName asks nothing of the bridge: the spec is fetched on first use (and
 * kept), so a function that is not deployed fails there, with NotFoundError
 * naming `stowage deploy`. What travels in a deploy is the spec: volumes,
 * timeout, retries, and reads when they are a fixed list. A `reads` function
 * of the arguments cannot travel (it is code of the caller's module), so calls
 * by name are placed by the spec's reads (none, for such a function).
 */
import { InvalidArgumentError } from '../common/errors.js';
import type { DeployAppResponse, DeployedFunction as DeployedFunctionInfo, FunctionSpec } from '../gen/stowage/v1/bridge.js';
import { defaultConnection, type Connection } from './connection.js';
import { FunctionInvoker } from './invoke.js';

export type { DeployedFunctionInfo };

export interface FunctionFromNameOptions {
  connection?: Connection;
}

/** A function registered by a deploy, called by APP and NAME. */
export class DeployedFunction<A extends unknown[] = unknown[], R = unknown> extends FunctionInvoker<A, R> {
  private fetched: Promise<DeployedFunctionInfo> | undefined;

  private constructor(
    readonly app: string,
    readonly name: string,
    private readonly opts: FunctionFromNameOptions,
  ) {
    super();
  }

  /** The function `name` of the deployed app `app`; nothing is asked of the bridge until the first call (or describe()). */
  static fromName<A extends unknown[] = unknown[], R = unknown>(app: string, name: string, opts: FunctionFromNameOptions = {}): DeployedFunction<A, R> {
    if (!app || !name) throw new InvalidArgumentError(`fromName needs an app and a function name, got ${JSON.stringify(app)} and ${JSON.stringify(name)}`);
    return new DeployedFunction<A, R>(app, name, opts);
  }

  get connection(): Connection {
    return this.opts.connection ?? defaultConnection();
  }

  /** What the bridge holds of this function (fetched once): NotFoundError when it is not deployed. */
  describe(): Promise<DeployedFunctionInfo> {
    this.fetched ??= (async () => {
      const b = this.connection.bridge;
      return this.connection.unary(b.getFunction.bind(b), { app: this.app, name: this.name });
    })();
    // A failed fetch (not deployed yet, bridge unreachable) is asked again on the next use.
    this.fetched.catch(() => (this.fetched = undefined));
    return this.fetched;
  }

  async spec(): Promise<FunctionSpec> {
    return (await this.describe()).function!;
  }
}

export interface DeployResult {
  /** APP/NAME of every function deployed. */
  functions: string[];
  /** Names of the schedules registered (APP.NAME). */
  schedules: string[];
  /** Functions of the app's earlier deploy that this one removed. */
  removed: string[];
  /** What did not travel with the deploy (a reads function), one line each. */
  notes: string[];
}

/** A function's schedule: a cron expression (in UTC), or one with an IANA time zone. */
export type ScheduleOption = string | { cron: string; timezone?: string };

/** What deployApp needs of an App and its FunctionHandles (structural: app.ts imports this file). */
interface DeployableApp {
  name: string;
  connection: Connection;
}
interface DeployableFunction {
  name: string;
  options: { schedule?: ScheduleOption; reads?: unknown };
  spec(): Promise<FunctionSpec>;
}

/** App.deploy: registers the app's functions, replacing its earlier deploy (bundles are uploaded as for a call). */
export async function deployApp(app: DeployableApp, handles: readonly DeployableFunction[]): Promise<DeployResult> {
  const notes: string[] = [];
  const functions: DeployedFunctionInfo[] = [];
  for (const h of handles) {
    const { cron, timezone } = scheduleOf(h.options.schedule);
    if (typeof h.options.reads === 'function') {
      notes.push(`${app.name}/${h.name}: its reads are a function of the arguments, which cannot be deployed; calls by name are placed without reads`);
    }
    functions.push({ app: app.name, name: h.name, function: await h.spec(), cron, timezone, deployedAtMs: 0 });
  }
  const b = app.connection.bridge;
  const res: DeployAppResponse = await app.connection.unary(b.deployApp.bind(b), { app: app.name, functions });
  return {
    functions: res.functions.map((f) => `${f.app}/${f.name}`),
    schedules: res.functions.filter((f) => f.cron).map((f) => `${f.app}.${f.name}`),
    removed: res.removed.map((n) => `${app.name}/${n}`),
    notes,
  };
}

/** Every deployed function (of `app` when given). */
export async function listDeployedFunctions(opts: { app?: string } = {}, connection = defaultConnection()): Promise<DeployedFunctionInfo[]> {
  const b = connection.bridge;
  return (await connection.unary(b.listFunctions.bind(b), { app: opts.app ?? '' })).functions;
}

/** Removes an app's deploy (its functions and their schedules); returns the names of the functions removed. */
export async function deleteApp(app: string, connection = defaultConnection()): Promise<string[]> {
  const b = connection.bridge;
  return (await connection.unary(b.deleteApp.bind(b), { app })).removed;
}

function scheduleOf(s: ScheduleOption | undefined): { cron: string; timezone: string } {
  if (s === undefined) return { cron: '', timezone: '' };
  if (typeof s === 'string') return { cron: s, timezone: '' };
  if (typeof s !== 'object' || s === null || typeof s.cron !== 'string') {
    throw new InvalidArgumentError(`schedule must be a cron string or { cron, timezone }, got ${JSON.stringify(s)}`);
  }
  return { cron: s.cron, timezone: s.timezone ?? '' };
}
