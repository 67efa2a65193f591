/**
 * MetadataIndex: the volume server's fast local index (LMDB by default). It is
 * a cache of what the store holds, never the only copy: volume heads and
 * version records are rebuilt from the volume and version records in the
 * BlobStore (rebuild.ts), tree objects are re-read from the store, and what
 * is left (blob sizes, the small-file content index, damage marks) refills as
 * commits and reads go on. A data directory whose index is lost opens again.
 */
import type { Extent } from '../../gen/stowage/v1/volume.js';
import type { VersionRecord, VolumeRecord } from '../versions.js';

/** What the rebuild, a read or a repair found damaged in the store. */
export interface DamageRecord {
  kind: 'volume' | 'version' | 'tree' | 'blob';
  key: string;
  volume?: string;
  version?: number;
  reason: string;
  foundAtMs: number;
}

/** A blob an upload planned (sent, or found stored): a lease that keeps garbage collection off it until it expires. */
export interface PlannedBlob {
  expiresAtMs: number;
}

/** What a committed version brings into the index besides its record. */
export interface VersionBlobs {
  /** Blob → a size it has at least (read from the store, or the end of the furthest extent in it). */
  sizes: Map<string, number>;
  /** Small files' content hash → where that content lives. */
  contents: Map<string, Extent>;
}

export interface MetadataIndex {
  getVolumeByName(name: string): VolumeRecord | undefined;
  getVolume(id: string): VolumeRecord | undefined;
  /** Live volumes, by name. */
  listVolumes(): VolumeRecord[];
  /** Inserts or replaces a volume; moves its name entry when it was renamed. */
  putVolume(rec: VolumeRecord): Promise<void>;
  /** Forgets a volume, its name and its version records. */
  removeVolume(id: string): Promise<void>;

  /**
   * Records a committed version in one transaction: its record, the volume's
   * new head, and the blobs and contents it brings. Readers see all of it or
   * none of it.
   */
  putVersion(rec: VolumeRecord, version: VersionRecord, blobs?: VersionBlobs): Promise<void>;
  getVersion(volumeId: string, version: number): VersionRecord | undefined;
  /** A volume's versions, oldest first. */
  listVersions(volumeId: string): VersionRecord[];
  /** Forgets versions that garbage collection removed. */
  removeVersions(volumeId: string, versions: number[]): Promise<void>;

  /**
   * For a blob that a committed version references (or did, until garbage
   * collection sweeps it): a size it is known to have at least. undefined for
   * blobs no version has referenced.
   */
  blobSize(hash: string): number | undefined;
  /** Where a small file with this content hash lives in an intact blob, if anywhere. */
  findContent(hash: string): Extent | undefined;
  /** Forgets blobs garbage collection deleted (their sizes and damage marks; findContent ignores contents in them from now on). */
  forgetBlobs(hashes: string[]): Promise<void>;
  /** Drops the contents whose blob is gone (once per collection, after the sweep); returns how many. */
  dropStaleContents(): Promise<number>;

  /** Blobs whose stored bytes were found not to match their hash (or missing). */
  markDamaged(hash: string): Promise<void>;
  clearDamaged(hash: string): Promise<void>;
  isDamaged(hash: string): boolean;

  /** Whether a tree object is known to be in the store. */
  hasTree(hash: string): boolean;
  /** A tree object's bytes, when the index keeps them (stores far away: S3). */
  getTree(hash: string): Buffer | undefined;
  /** Records tree objects written to (or read from) the store; bytes undefined: only that it is there. */
  putTrees(objects: [string, Buffer | undefined][]): Promise<void>;
  forgetTrees(hashes: string[]): Promise<void>;

  getPlanned(hash: string): PlannedBlob | undefined;
  /** Leases blobs until `planned.expiresAtMs` (a lease only grows). */
  putPlanned(hashes: string[], planned: PlannedBlob): Promise<void>;
  clearPlanned(hashes: string[]): Promise<void>;
  /** Every planned blob (for garbage collection). */
  listPlanned(): Iterable<[string, PlannedBlob]>;

  recordDamage(d: DamageRecord): Promise<void>;
  clearDamage(key: string): Promise<void>;
  listDamage(): DamageRecord[];

  /** Whether the index was once filled from the store (so an empty index is really empty). */
  isSynced(): boolean;
  setSynced(): Promise<void>;
  /** The store format the index was filled from (undefined: before format 2). */
  storeFormat(): number | undefined;
  setStoreFormat(format: number): Promise<void>;
  close(): Promise<void>;
}
