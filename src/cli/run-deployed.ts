/**
 * `stowage run APP/FUNCTION`: a deployed function, called without its
 * source. Its spec comes from the bridge (GetFunction); the flags of `run`
 * override what the deploy set, as they override a module's declared options.
 */
import { DeployedFunction, type Connection, type DeployResult, type VolumeMount } from '../client/index.js';
import { retryPolicyOf, volumeFields } from '../client/internal.js';
import type { FunctionSpec } from '../gen/stowage/v1/bridge.js';
import { durationArg, integerArg } from './values.js';

/** APP/FUNCTION (names of [A-Za-z0-9._-], no '#'); undefined for MODULE#FUNCTION. */
export function deployedTarget(target: string): { app: string; name: string } | undefined {
  const m = /^([A-Za-z0-9._-]{1,64})\/([A-Za-z0-9._-]{1,63})$/.exec(target);
  return m ? { app: m[1]!, name: m[2]! } : undefined;
}

export interface Overrides {
  volumes: Record<string, VolumeMount>;
  reads: string[];
  timeout?: string;
  retries?: string;
}

/** The deployed function's spec with the flags' overrides; NotFoundError naming `stowage deploy` when it is not deployed. */
export async function deployedSpec(connection: Connection, ref: { app: string; name: string }, o: Overrides): Promise<FunctionSpec> {
  const spec = await DeployedFunction.fromName(ref.app, ref.name, { connection }).spec();
  const retries = integerArg('--retries', o.retries, 0);
  const policy = retries === undefined ? undefined : { retryPolicy: retryPolicyOf(retries) };
  // A path the flags name takes their volume and mode; the deploy's other paths keep theirs.
  const given = volumeFields(o.volumes);
  return {
    ...spec,
    volumes: { ...spec.volumes, ...given.volumes },
    writable: [...spec.writable.filter((p) => !(p in given.volumes)), ...given.writable],
    reads: o.reads.length ? o.reads : spec.reads,
    timeoutMs: durationArg('--timeout', o.timeout) ?? spec.timeoutMs,
    ...(policy ? { retryPolicy: policy.retryPolicy, retries: policy.retryPolicy?.maxRetries ?? 0 } : {}),
  };
}

/** What `stowage deploy` prints for one app. */
export function deployLines(r: DeployResult): string[] {
  return [
    `deployed: ${r.functions.join(', ') || 'nothing'}`,
    ...(r.schedules.length ? [`scheduled: ${r.schedules.join(', ')}`] : []),
    ...(r.removed.length ? [`removed: ${r.removed.join(', ')}`] : []),
    ...r.notes.map((n) => `note: ${n}`),
  ];
}
