/**
 * Inside a function run by a stowage worker: where its volumes are, and
 * commit/reload of them (Modal's `vol.commit()`, `vol.reload()`).
 *
 * Where the worker can give each function process its own mount namespace
 * (root, util-linux `unshare`), every volume is bound at the path the
 * function declared, so `readFile('/data/x')` works and `volumePath('/data')`
 * is '/data'. Elsewhere the volumes stay under the worker's work directory
 * and `volumePath()` is the way to find them. Either way the runner
 * (worker/runner.ts) sets STOWAGE_VOLUME_PATHS for each call: declared path
 * -> where to open it.
 *
 * commit() and reload() are carried out by the worker (it owns the mounts):
 * the runner hangs a VolumeOps on globalThis under a Symbol.for key, so the
 * SDK copy a bundle imports finds it whichever copy that is.
 */
import { FailedPreconditionError, InvalidArgumentError, NotFoundError } from '../common/errors.js';

/** A volume as app.function({ volumes }) declares it: a name (read-only), or a name and whether calls may write to it. */
export type VolumeMount = string | { name: string; writable?: boolean };

/** What the runner offers the SDK inside a function process. */
export interface VolumeOps {
  /** Asks the worker to commit (writable volumes) or reload the volume declared at `mountPath`; resolves to the version the function sees then. */
  request(action: 'commit' | 'reload', mountPath: string): Promise<number>;
}

/** Where the runner keeps its VolumeOps (Symbol.for: two copies of the SDK agree). */
export const VOLUME_OPS = Symbol.for('stowage.runner.volumeOps');

/** A declared volume, inside a function. */
export interface FunctionVolume {
  /** The declared mount path, e.g. "/out". */
  readonly mountPath: string;
  /** Where to open its files now (the declared path itself where the worker binds volumes there). */
  readonly path: string;
  /** Commits what the function has written to it so far as one new version (writable volumes); returns that version. */
  commit(): Promise<number>;
  /** Moves the function's view to the newest version of the volume (its own staged writes stay, for a writable one); returns that version. */
  reload(): Promise<number>;
}

function declaredPaths(): Record<string, string> | undefined {
  const raw = process.env.STOWAGE_VOLUME_PATHS;
  return raw ? (JSON.parse(raw) as Record<string, string>) : undefined;
}

/** Where the volume a function declared at `mountPath` (or a path below it) is mounted on the worker running it. */
export function volumePath(mountPath: string): string {
  const map = declaredPaths();
  const clean = mountPath.replace(/\/+$/, '');
  for (const [declared, local] of Object.entries(map ?? {})) {
    if (clean === declared) return local;
    if (clean.startsWith(`${declared}/`)) return local + clean.slice(declared.length);
  }
  throw new NotFoundError(
    map
      ? `no volume is declared at ${mountPath} (declared: ${Object.keys(map).join(', ') || 'none'}); add it to app.function({ volumes })`
      : `volumePath(${JSON.stringify(mountPath)}) works inside a function run by a stowage worker`,
  );
}

/** The volume the running function declared at `mountPath`, for commit() and reload(). */
export function volume(mountPath: string): FunctionVolume {
  const clean = mountPath.replace(/\/+$/, '');
  const map = declaredPaths();
  const ops = (globalThis as Record<symbol, unknown>)[VOLUME_OPS] as VolumeOps | undefined;
  if (!map || !ops) throw new FailedPreconditionError(`volume(${JSON.stringify(mountPath)}) works inside a function run by a stowage worker`);
  if (map[clean] === undefined) {
    throw new InvalidArgumentError(`no volume is declared at ${mountPath} (declared: ${Object.keys(map).join(', ') || 'none'}); give the path as declared in app.function({ volumes })`);
  }
  return {
    mountPath: clean,
    get path() {
      return volumePath(clean);
    },
    commit: () => ops.request('commit', clean),
    reload: () => ops.request('reload', clean),
  };
}

/** The FunctionSpec fields for `volumes`: mount path -> volume name, and the mount paths that are writable. */
export function volumeFields(volumes: Record<string, VolumeMount> = {}): { volumes: Record<string, string>; writable: string[] } {
  const names: Record<string, string> = {};
  const writable: string[] = [];
  for (const [path, v] of Object.entries(volumes)) {
    const name = typeof v === 'string' ? v : v?.name;
    if (typeof name !== 'string' || !name) {
      throw new InvalidArgumentError(`volumes[${JSON.stringify(path)}] must be a volume name or { name, writable }`);
    }
    names[path] = name;
    if (typeof v === 'object' && v.writable) writable.push(path);
  }
  return { volumes: names, writable };
}
