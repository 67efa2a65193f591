/**
 * What a call reads: its `reads` globs (over the mount paths the function
 * declares, e.g. "/data/shards/*") resolved against the pinned versions of
 * its volumes into distinct extents (hash, length). A glob without glob
 * characters names a file or everything below a directory. Resolutions are
 * cached by (volume, version, glob): versions never change.
 */
import { LRUCache } from 'lru-cache';
import { InvalidArgumentError } from '../common/errors.js';
import { quote } from '../common/quote.js';
import { checkContainerFields } from '../common/validate.js';
import type { FunctionSpec } from '../gen/stowage/v1/bridge.js';
import type { ExtentRef, VolumeResolver } from './types.js';

/** Checks a function's mount paths: absolute, normalised, not nested in each other; `writable` names only declared ones. */
export function checkMountPaths(volumes: Record<string, string>, writable: readonly string[] = []): void {
  for (const w of writable) {
    if (volumes[w] === undefined) throw new InvalidArgumentError(`writable mount path ${quote(w)} is not one of the function's volumes`);
  }
  const paths = Object.keys(volumes);
  for (const p of paths) {
    if (!/^\/[^/]/.test(p) || p.endsWith('/') || p.split('/').some((c) => c === '.' || c === '..')) {
      throw new InvalidArgumentError(`volume mount path ${quote(p)} must be an absolute path such as /data (no trailing '/', '.' or '..')`);
    }
    if (!volumes[p]) throw new InvalidArgumentError(`mount path ${quote(p)} names no volume`);
    for (const q of paths) {
      if (q !== p && q.startsWith(`${p}/`)) throw new InvalidArgumentError(`mount paths ${quote(p)} and ${quote(q)} are nested: give each volume its own path`);
    }
  }
}

/** The volume a read glob falls under, and the glob inside that volume. */
export function splitRead(glob: string, volumes: Record<string, string>): { mountPath: string; volume: string; inner: string } {
  for (const [mountPath, volume] of Object.entries(volumes)) {
    if (glob === mountPath) return { mountPath, volume, inner: '' };
    if (glob.startsWith(`${mountPath}/`)) return { mountPath, volume, inner: glob.slice(mountPath.length + 1) };
  }
  const declared = Object.keys(volumes);
  throw new InvalidArgumentError(
    `reads ${quote(glob)} is under no volume of the function (${declared.length ? `volumes: ${declared.map((d) => quote(d)).join(', ')}` : 'it declares no volumes'}); reads are paths the function sees, e.g. /data/shards/*`,
  );
}

export class ReadResolver {
  private readonly globs = new LRUCache<string, ExtentRef[]>({ max: 4096 });
  private readonly resolving = new Map<string, Promise<ExtentRef[]>>();

  constructor(private readonly volumes: VolumeResolver) {}

  latestVersion(volume: string): Promise<number> {
    return this.volumes.latestVersion(volume);
  }

  /** Distinct extents of every file the globs match, at the pinned versions (resolved and cached). */
  async resolve(reads: readonly string[], mounts: Record<string, string>, versions: Record<string, number>): Promise<ExtentRef[]> {
    const lists = await Promise.all(reads.map((glob) => this.globExtents(glob, mounts, versions)));
    return merge(lists);
  }

  /** The same as resolve() when every glob is cached; undefined when one is not (resolve() it first). */
  cached(reads: readonly string[], mounts: Record<string, string>, versions: Record<string, number>): ExtentRef[] | undefined {
    const lists: ExtentRef[][] = [];
    for (const glob of reads) {
      const hit = this.globs.get(this.key(glob, mounts, versions));
      if (!hit) return undefined;
      lists.push(hit);
    }
    return merge(lists);
  }

  private key(glob: string, mounts: Record<string, string>, versions: Record<string, number>): string {
    const { volume, inner } = splitRead(glob, mounts);
    const version = versions[volume];
    if (version === undefined) throw new InvalidArgumentError(`no version pinned for volume ${quote(volume)}`);
    return `${volume}\0${version}\0${inner}`;
  }

  private async globExtents(glob: string, mounts: Record<string, string>, versions: Record<string, number>): Promise<ExtentRef[]> {
    const key = this.key(glob, mounts, versions);
    const hit = this.globs.get(key);
    if (hit) return hit;
    let p = this.resolving.get(key);
    if (!p) {
      const { volume, inner } = splitRead(glob, mounts);
      p = this.volumes
        .matchFiles(volume, versions[volume]!, inner)
        .then((files) => {
          const seen = new Map<string, ExtentRef>();
          for (const f of files) for (const e of f.extents) seen.set(e.hash, { hash: e.hash, length: e.length });
          const out = [...seen.values()];
          this.globs.set(key, out);
          return out;
        })
        .finally(() => this.resolving.delete(key));
      this.resolving.set(key, p);
    }
    return p;
  }
}

function merge(lists: ExtentRef[][]): ExtentRef[] {
  if (lists.length === 1) return lists[0]!;
  const seen = new Map<string, ExtentRef>();
  for (const l of lists) for (const e of l) seen.set(e.hash, e);
  return [...seen.values()];
}

/** Refuses a spec the bridge could not run: a bad export name, no bundle, bad mount paths or reads, a retry policy out of bounds. */
export function checkSpec(spec: FunctionSpec): void {
  if (!/^[A-Za-z_$][\w$]*$/.test(spec.function)) {
    throw new InvalidArgumentError(`function name ${quote(spec.function)} is not an export name of a module`);
  }
  if (!spec.codeVolume || !spec.bundlePath) throw new InvalidArgumentError('the function names no code bundle (code_volume, bundle_path)');
  checkMountPaths(spec.volumes, spec.writable);
  for (const r of spec.reads) splitRead(r, spec.volumes);
  const p = spec.retryPolicy;
  // The SDK's bounds (app.ts retryPolicyOf), again here: a raw gRPC caller must not get a million retries back to back.
  if (p && (p.maxRetries > 100 || !(p.backoffCoefficient >= 1 && p.backoffCoefficient <= 10) || p.maxDelayMs > 24 * 3600_000)) {
    throw new InvalidArgumentError(`retry policy out of bounds (max_retries 0 to 100, backoff_coefficient 1 to 10, max_delay_ms up to a day): ${JSON.stringify(p)}`);
  }
  if (spec.retries > 100) throw new InvalidArgumentError(`retries must be 0 to 100, got ${spec.retries}`);
  checkContainerFields(spec);
}
