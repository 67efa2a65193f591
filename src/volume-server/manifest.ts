/**
 * The manifest format of stowage before store format 2, read only to convert
 * it (rebuild.ts): each commit wrote one object,
 * manifests/<volume id>/<version>.json, holding the whole file list of that
 * version.
 */
import { IntegrityError } from '../common/errors.js';
import { quote } from '../common/quote.js';

export interface Manifest {
  format: number;
  volumeId: string;
  version: number;
  createdAtMs: number;
  /** Sorted by path; files only (directories are implied by paths). */
  files: StoredFile[];
}

/** A file as a manifest stores it: compact, with extents as tuples. */
export interface StoredFile {
  path: string;
  size: number;
  mode: number;
  mtimeMs: number;
  /** [blob, offset, length, hash] */
  extents: [string, number, number, string][];
}

export function manifestKey(volumeId: string, version: number): string {
  return `manifests/${volumeId}/${String(version).padStart(12, '0')}.json`;
}

export function parseManifestKey(key: string): { volumeId: string; version: number } | undefined {
  const m = /^manifests\/([^/]+)\/(\d{12})\.json$/.exec(key);
  return m ? { volumeId: m[1]!, version: Number(m[2]) } : undefined;
}

/** Parses a manifest, checking its shape; IntegrityError naming it otherwise. */
export function parseManifest(key: string, bytes: Buffer): Manifest {
  let m: Manifest;
  try {
    m = JSON.parse(bytes.toString('utf8')) as Manifest;
  } catch (err) {
    throw new IntegrityError(`${key} is not valid JSON (${(err as Error).message})`);
  }
  if (typeof m !== 'object' || m === null || !Array.isArray(m.files) || typeof m.createdAtMs !== 'number') {
    throw new IntegrityError(`${key} is not a manifest`);
  }
  const hex = (x: unknown): boolean => typeof x === 'string' && /^[0-9a-f]{64}$/.test(x);
  const whole = (x: unknown): boolean => Number.isSafeInteger(x) && (x as number) >= 0;
  for (const f of m.files) {
    if (typeof f?.path !== 'string' || !whole(f.size) || !Array.isArray(f.extents) || !Number.isFinite(f.mtimeMs) || !whole(f.mode)) {
      throw new IntegrityError(`${key}: a file entry is malformed`);
    }
    for (const x of f.extents as unknown[]) {
      if (!Array.isArray(x) || x.length !== 4 || !hex(x[0]) || !whole(x[1]) || !whole(x[2]) || !hex(x[3])) {
        throw new IntegrityError(`${key}: an extent of ${quote(f.path)} is malformed`);
      }
    }
  }
  return m;
}
