/**
 * Volumes and versions as stored, next to the tree objects (src/tree):
 * - `volumes/<id>.json`: a volume's record (name, creation, retention; a
 *   deleted volume keeps its record with `deletedAtMs`, so rebuilds skip it);
 * - `versions/<volume id>/<version, 12 digits>.json`: one per version, naming
 *   its root directory page and the totals read off it, and the next inode id
 *   the volume will give.
 * These and the tree objects are enough to rebuild the LMDB index from the
 * store alone. A record that does not parse is an IntegrityError naming it:
 * the rebuild skips it and reports it, and every other volume opens.
 */
import { IntegrityError } from '../common/errors.js';

export const STORE_FORMAT = 2;

export interface Retention {
  /** Keep the newest this many versions (0: no count rule). */
  keepLast: number;
  /** Keep versions younger than this (0: no age rule). */
  keepWithinMs: number;
}

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
  /** Unset: the server's default retention. */
  retention?: Retention;
}

export interface VersionRecord {
  format: number;
  volumeId: string;
  version: number;
  createdAtMs: number;
  /** Hash of the root directory's page. */
  root: string;
  fileCount: number;
  dirCount: number;
  totalBytes: number;
  /** The next inode id this volume gives (ids below it are taken). */
  nextId: number;
  /** The id its client gave the commit, so that a retry of it lands once (catalog.ts findCommit). */
  commitId?: string;
}

/** The root directory's inode id; entries get ids from 2 up. */
export const ROOT_ID = 1;
export const FIRST_ENTRY_ID = 2;

export function volumeRecordKey(id: string): string {
  return `volumes/${id}.json`;
}

/** The volume id of a volume record's key; undefined for any other key. */
export function parseVolumeRecordKey(key: string): string | undefined {
  return /^volumes\/([^/]+)\.json$/.exec(key)?.[1];
}

export function versionKey(volumeId: string, version: number): string {
  return `versions/${volumeId}/${String(version).padStart(12, '0')}.json`;
}

export function parseVersionKey(key: string): { volumeId: string; version: number } | undefined {
  const m = /^versions\/([^/]+)\/(\d{12})\.json$/.exec(key);
  return m ? { volumeId: m[1]!, version: Number(m[2]) } : undefined;
}

/** The volume record as stored: without what the index derives from versions. */
export function storedVolume(rec: VolumeRecord): Omit<VolumeRecord, 'latestVersion' | 'fileCount' | 'totalBytes'> {
  const { latestVersion: _v, fileCount: _f, totalBytes: _t, ...stored } = rec;
  return stored;
}

type Json = Record<string, unknown>;

function parseJson(key: string, bytes: Buffer): Json {
  let v: unknown;
  try {
    v = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw new IntegrityError(`${key} is not valid JSON (${(err as Error).message})`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new IntegrityError(`${key} is not a JSON object`);
  return v as Json;
}

function field<T>(key: string, o: Json, name: string, ok: (v: unknown) => boolean): T {
  if (!ok(o[name])) throw new IntegrityError(`${key}: field "${name}" is missing or invalid`);
  return o[name] as T;
}

const isCount = (v: unknown): boolean => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isTime = (v: unknown): boolean => typeof v === 'number' && Number.isFinite(v);
const isStr = (v: unknown): boolean => typeof v === 'string' && v.length > 0 && v.length <= 256;
const isHash = (v: unknown): boolean => typeof v === 'string' && /^[0-9a-f]{64}$/.test(v);

export function parseVolumeRecord(key: string, bytes: Buffer): VolumeRecord {
  const o = parseJson(key, bytes);
  const rec: VolumeRecord = {
    id: field(key, o, 'id', isStr),
    name: field(key, o, 'name', isStr),
    createdAtMs: field(key, o, 'createdAtMs', isTime),
    ephemeral: o.ephemeral === true,
    latestVersion: 0,
    fileCount: 0,
    totalBytes: 0,
  };
  if (o.deletedAtMs !== undefined) rec.deletedAtMs = field(key, o, 'deletedAtMs', isTime);
  if (o.retention !== undefined) {
    const r = o.retention as Json;
    if (typeof r !== 'object' || r === null) throw new IntegrityError(`${key}: field "retention" is invalid`);
    rec.retention = { keepLast: field(key, r, 'keepLast', isCount), keepWithinMs: field(key, r, 'keepWithinMs', isCount) };
  }
  if (volumeRecordKey(rec.id) !== key) throw new IntegrityError(`${key} holds the record of volume ${rec.id}`);
  return rec;
}

export function parseVersionRecord(key: string, bytes: Buffer): VersionRecord {
  const o = parseJson(key, bytes);
  const rec: VersionRecord = {
    format: field(key, o, 'format', (v) => v === STORE_FORMAT),
    volumeId: field(key, o, 'volumeId', isStr),
    version: field(key, o, 'version', (v) => isCount(v) && (v as number) > 0),
    createdAtMs: field(key, o, 'createdAtMs', isTime),
    root: field(key, o, 'root', isHash),
    fileCount: field(key, o, 'fileCount', isCount),
    dirCount: field(key, o, 'dirCount', isCount),
    totalBytes: field(key, o, 'totalBytes', isCount),
    nextId: field(key, o, 'nextId', isCount),
  };
  if (o.commitId !== undefined) rec.commitId = field(key, o, 'commitId', isStr);
  if (versionKey(rec.volumeId, rec.version) !== key) throw new IntegrityError(`${key} holds version ${rec.version} of volume ${rec.volumeId}`);
  return rec;
}
