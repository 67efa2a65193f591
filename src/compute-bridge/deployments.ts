/**
 * Deployed functions: what `stowage deploy` (App.deploy) registers, so that a
 * function can be called as APP/NAME by a caller without its source
 * (GetFunction gives the spec; the caller Submits it like any call).
 *
 * A deploy replaces the app's whole set, as a Modal app deploy does: its
 * functions not named again are removed, and so are their schedules. Kept in
 * the CallStore (one record per app), so deploys survive a restart.
 *
 * Order of writes: everything is checked first (names, specs, cron
 * expressions, time zones), so a refused deploy changes nothing; then the
 * app's record is written, then its schedules are put and the schedules of
 * the functions it no longer has are deleted. A bridge that dies in between
 * keeps the new record with some schedules of the old deploy; deploying again
 * puts them right (a deploy is idempotent). Deploys and deletes run one at a
 * time, so two deploys of an app cannot interleave their schedule writes.
 */
import pLimit from 'p-limit';
import { InvalidArgumentError, NotFoundError } from '../common/errors.js';
import { quote } from '../common/quote.js';
import type { DeployAppRequest, DeployAppResponse, DeployedFunction, FunctionRef, Schedule } from '../gen/stowage/v1/bridge.js';
import { checkSpec } from './reads.js';
import { checkSchedule, type Schedules } from './schedules.js';
import type { CallStore } from './types.js';

/**
 * App names as App checks them; a function's name as a schedule name allows, but without '.': `<app>.<name>` is
 * its schedule and its scope name, which must name one function only (app "a" function "b.c" would be app "a.b"'s "c").
 */
const APP_NAME = /^[A-Za-z0-9._-]{1,64}$/;
const FUNCTION_NAME = /^[A-Za-z0-9_-]{1,63}$/;
/** Beyond this, a deploy is more likely a mistake than an app. */
const MAX_FUNCTIONS = 1000;

/** The schedule a deployed function with a cron expression runs under. */
export const scheduleNameOf = (app: string, name: string): string => `${app}.${name}`;

const HOW_TO_DEPLOY = 'deploy it with: stowage deploy MODULE';

export class Deployments {
  private readonly apps = new Map<string, DeployedFunction[]>();
  private readonly oneAtATime = pLimit(1);

  constructor(
    private readonly store: CallStore,
    private readonly schedules: Schedules,
  ) {}

  async start(): Promise<void> {
    for (const d of await this.store.loadDeployments()) this.apps.set(d.app, d.functions);
  }

  deploy(req: DeployAppRequest): Promise<DeployAppResponse> {
    return this.oneAtATime(() => this.replace(req));
  }

  /** Removes an app's deploy and its schedules; returns the names of the functions removed. */
  deleteApp(app: string): Promise<string[]> {
    return this.oneAtATime(() => this.remove(app));
  }

  private async replace(req: DeployAppRequest): Promise<DeployAppResponse> {
    checkAppName(req.app);
    if (req.functions.length > MAX_FUNCTIONS) throw new InvalidArgumentError(`app ${quote(req.app)} deploys ${req.functions.length} functions; at most ${MAX_FUNCTIONS}`);
    const now = Date.now();
    const seen = new Set<string>();
    const functions = req.functions.map((f): DeployedFunction => {
      if (!FUNCTION_NAME.test(f.name)) throw new InvalidArgumentError(`function name ${quote(f.name)} of app ${quote(req.app)} must be 1 to 63 of [A-Za-z0-9_-] (no '.': APP.FUNCTION names its schedule)`);
      if (seen.has(f.name)) throw new InvalidArgumentError(`app ${quote(req.app)} deploys two functions named ${quote(f.name)}; give one of them another { name }`);
      seen.add(f.name);
      if (!f.function?.bundlePath) throw new InvalidArgumentError(`function ${quote(f.name)} of app ${quote(req.app)} has no spec (bundle) to deploy`);
      checkSpec(f.function);
      if (!f.cron && f.timezone) throw new InvalidArgumentError(`function ${quote(f.name)} of app ${quote(req.app)} has a time zone but no cron schedule`);
      return { app: req.app, name: f.name, function: { ...f.function, schedule: '' }, cron: f.cron, timezone: f.timezone, deployedAtMs: now };
    });
    const schedules = functions.filter((f) => f.cron).map(scheduleOf);
    for (const s of schedules) checkSchedule(s);

    const before = this.apps.get(req.app) ?? [];
    await this.store.putDeployment({ app: req.app, functions });
    this.apps.set(req.app, functions);
    for (const s of schedules) await this.schedules.put(s);
    const scheduled = new Set(schedules.map((s) => s.name));
    for (const f of before) {
      const name = scheduleNameOf(f.app, f.name);
      if (f.cron && !scheduled.has(name)) await this.schedules.remove(name);
    }
    return { functions, removed: before.map((f) => f.name).filter((n) => !seen.has(n)) };
  }

  get(ref: FunctionRef): DeployedFunction {
    const fns = this.apps.get(ref.app);
    if (!fns) throw new NotFoundError(`app ${quote(ref.app)} is not deployed (${HOW_TO_DEPLOY}; list deployed functions with: stowage bridge functions)`);
    const f = fns.find((x) => x.name === ref.name);
    if (!f) {
      throw new NotFoundError(
        `function ${quote(ref.name)} of app ${quote(ref.app)} is not deployed (the app has: ${fns.map((x) => x.name).join(', ') || 'nothing'}; ${HOW_TO_DEPLOY})`,
      );
    }
    return f;
  }

  /** Every deployed function (of `app` when given), by app then name. */
  list(app: string): DeployedFunction[] {
    const apps = app ? [app] : [...this.apps.keys()].sort();
    return apps.flatMap((a) => [...(this.apps.get(a) ?? [])].sort((x, y) => x.name.localeCompare(y.name)));
  }

  private async remove(app: string): Promise<string[]> {
    const fns = this.apps.get(app);
    const existed = await this.store.deleteDeployment(app);
    if (!fns && !existed) throw new NotFoundError(`app ${quote(app)} is not deployed (list deployed functions with: stowage bridge functions)`);
    this.apps.delete(app);
    for (const f of fns ?? []) if (f.cron) await this.schedules.remove(scheduleNameOf(f.app, f.name));
    return (fns ?? []).map((f) => f.name);
  }
}

function checkAppName(app: string): void {
  if (!APP_NAME.test(app)) throw new InvalidArgumentError(`app name ${quote(app)} must be 1 to 64 of [A-Za-z0-9._-]`);
}

function scheduleOf(f: DeployedFunction): Schedule {
  return { name: scheduleNameOf(f.app, f.name), cron: f.cron, timezone: f.timezone, function: f.function, nextRunMs: 0 };
}
