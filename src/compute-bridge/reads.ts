/**
 * What a call reads: its `reads` globs (over the mount paths the function
 * declares, e.g. "/data/shards/*") resolved against the pinned versions of
 * its volumes into distinct extents (hash, length). A glob without glob
 * characters names a file or everything below a directory. Resolutions are
 * cached by (volume, version, glob): versions never change.
 */
import { LRUCache } from 'lru-cache';
import picomatch from 'picomatch';
import { InvalidArgumentError } from '../common/errors.js';
import { quote } from '../common/quote.js';
import type { ExtentRef, ResolvedFile, VolumeResolver } from './types.js';

/** Checks a function's mount paths: absolute, normalised, not nested in each other. */
export function checkMountPaths(volumes: Record<string, string>): void {
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
  private readonly listings = new LRUCache<string, ResolvedFile[]>({ max: 32 });

  constructor(private readonly volumes: VolumeResolver) {}

  latestVersion(volume: string): number {
    return this.volumes.latestVersion(volume);
  }

  /** Distinct extents of every file the globs match, at the pinned versions. */
  extents(reads: readonly string[], mounts: Record<string, string>, versions: Record<string, number>): ExtentRef[] {
    if (reads.length === 1) return this.globExtents(reads[0]!, mounts, versions);
    const seen = new Map<string, ExtentRef>();
    for (const glob of reads) for (const e of this.globExtents(glob, mounts, versions)) seen.set(e.hash, e);
    return [...seen.values()];
  }

  private globExtents(glob: string, mounts: Record<string, string>, versions: Record<string, number>): ExtentRef[] {
    const { volume, inner } = splitRead(glob, mounts);
    const version = versions[volume];
    if (version === undefined) throw new InvalidArgumentError(`no version pinned for volume ${quote(volume)}`);
    const key = `${volume}\0${version}\0${inner}`;
    const hit = this.globs.get(key);
    if (hit) return hit;
    const files = this.listing(volume, version);
    const isGlob = picomatch.scan(inner).isGlob;
    const matcher = inner === '' ? () => true : picomatch(inner, { dot: true });
    const seen = new Map<string, ExtentRef>();
    for (const f of files) {
      if (matcher(f.path) || (!isGlob && f.path.startsWith(`${inner}/`))) {
        for (const e of f.extents) seen.set(e.hash, { hash: e.hash, length: e.length });
      }
    }
    const out = [...seen.values()];
    this.globs.set(key, out);
    return out;
  }

  private listing(volume: string, version: number): ResolvedFile[] {
    const key = `${volume}\0${version}`;
    let files = this.listings.get(key);
    if (!files) {
      files = this.volumes.files(volume, version);
      this.listings.set(key, files);
    }
    return files;
  }
}
