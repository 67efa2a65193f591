/**
 * Versions as stored: each commit writes one immutable manifest object
 * (manifests/<volume id>/<version>.json) holding the whole file list of that
 * version, and volume records (volumes/<id>.json) hold names. Together they are
 * enough to rebuild the LMDB index from the store alone.
 */
import type { Extent, FileEntry } from '../gen/stowage/v1/volume.js';

export const MANIFEST_FORMAT = 1;

export interface VolumeRecord {
  id: string;
  name: string;
  createdAtMs: number;
  ephemeral: boolean;
  /** 0 before the first commit. */
  latestVersion: number;
  fileCount: number;
  totalBytes: number;
  /** Set when the volume was deleted; the record stays so rebuilds skip it. */
  deletedAtMs?: number;
}

export interface Manifest {
  format: number;
  volumeId: string;
  volumeName: string;
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

export function volumeRecordKey(id: string): string {
  return `volumes/${id}.json`;
}

export function manifestKey(volumeId: string, version: number): string {
  return `manifests/${volumeId}/${String(version).padStart(12, '0')}.json`;
}

export function parseManifestKey(key: string): { volumeId: string; version: number } | undefined {
  const m = /^manifests\/([^/]+)\/(\d{12})\.json$/.exec(key);
  return m ? { volumeId: m[1]!, version: Number(m[2]) } : undefined;
}

export function toStoredFile(e: FileEntry): StoredFile {
  return {
    path: e.path,
    size: e.size,
    mode: e.mode,
    mtimeMs: e.mtimeMs,
    extents: e.extents.map((x) => [x.blob, x.offset, x.length, x.hash]),
  };
}

export function extentsOf(f: StoredFile): Extent[] {
  return f.extents.map(([blob, offset, length, hash]) => ({ blob, offset, length, hash }));
}
