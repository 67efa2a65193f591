/**
 * Looking after volumes as a whole: garbage collection, retention, the
 * index, and what the server found damaged. `stowage volume gc`,
 * `retention`, `rebuild-index` and `damaged` call these.
 */
import { checkName } from '../common/validate.js';
import type { CollectGarbageResponse, DamagedObject, RebuildIndexResponse, VolumeInfo } from '../gen/stowage/v1/volume.js';
import { defaultConnection, type Connection } from './connection.js';

export type GcReport = CollectGarbageResponse;
export type { DamagedObject };

export interface GcOptions {
  /** Apply retention to this volume only (the sweep always covers the whole store). */
  volume?: string;
  /** Keep unreferenced objects younger than this, and uploads planned this recently (default: the server's, 1 h). 0 collects now. */
  graceMs?: number;
  /** Report what would be deleted; delete nothing. */
  dryRun?: boolean;
  connection?: Connection;
}

/** Removes versions retention no longer keeps, then every blob and tree object no kept version references. */
export async function collectGarbage(opts: GcOptions = {}): Promise<GcReport> {
  const conn = opts.connection ?? defaultConnection();
  return conn.unary(conn.volumes.collectGarbage.bind(conn.volumes), {
    volume: opts.volume === undefined ? '' : checkName('volume', opts.volume),
    graceMs: opts.graceMs,
    dryRun: opts.dryRun ?? false,
  });
}

export interface RetentionOptions {
  /** Keep the newest this many versions. */
  keepLast: number;
  /** Keep every version younger than this. */
  keepWithinMs: number;
  connection?: Connection;
}

/** Sets a volume's retention; both 0: back to the server's default. */
export async function setRetention(volume: string, opts: RetentionOptions): Promise<VolumeInfo> {
  const conn = opts.connection ?? defaultConnection();
  return conn.unary(conn.volumes.setRetention.bind(conn.volumes), {
    name: checkName('volume', volume),
    keepLast: opts.keepLast,
    keepWithinMs: opts.keepWithinMs,
  });
}

/** Rebuilds the server's index from the store (converting volumes of the manifest format). */
export async function rebuildIndex(opts: { connection?: Connection } = {}): Promise<RebuildIndexResponse> {
  const conn = opts.connection ?? defaultConnection();
  return conn.unary(conn.volumes.rebuildIndex.bind(conn.volumes), {});
}

/** What the server found damaged, or could not read, in the store. */
export async function listDamaged(opts: { connection?: Connection } = {}): Promise<DamagedObject[]> {
  const conn = opts.connection ?? defaultConnection();
  return (await conn.unary(conn.volumes.listDamaged.bind(conn.volumes), {})).objects;
}
