/**
 * MetadataIndex: the volume server's fast local index (LMDB by default). It is
 * a cache of what the store holds, never the only copy: every record in it can
 * be rebuilt from volume records and manifests in the BlobStore.
 */
import type { Extent, VersionInfo } from '../../gen/stowage/v1/volume.js';
import type { Manifest, VolumeRecord } from '../manifest.js';

export interface MetadataIndex {
  getVolumeByName(name: string): VolumeRecord | undefined;
  getVolume(id: string): VolumeRecord | undefined;
  /** Live volumes, by name. */
  listVolumes(): VolumeRecord[];
  /** Inserts or replaces a volume; moves its name entry when it was renamed. */
  putVolume(rec: VolumeRecord): Promise<void>;
  /** Forgets a volume, its name and its manifests. */
  removeVolume(id: string): Promise<void>;
  /**
   * Records a committed version in one transaction: the manifest, the
   * volume's new head, the blobs it references and the small-file contents.
   * Readers see all of it or none of it. `blobSizes` holds sizes read from
   * the store; other blobs are recorded with the end of their furthest extent.
   */
  putVersion(rec: VolumeRecord, manifest: Manifest, blobSizes?: Map<string, number>): Promise<void>;
  getManifest(volumeId: string, version: number): Manifest | undefined;
  /** Summaries of every version, oldest first (manifests are not loaded). */
  listVersions(volumeId: string): VersionInfo[];
  /**
   * For a blob that a committed version references: a size it is known to
   * have at least (its real size, or the end of the furthest extent in it).
   * undefined for blobs no version references.
   */
  blobSize(hash: string): number | undefined;
  /** Where a small file with this content hash lives in an intact blob, if anywhere. */
  findContent(hash: string): Extent | undefined;
  /** Blobs whose stored bytes were found not to match their hash. */
  markDamaged(hash: string): Promise<void>;
  clearDamaged(hash: string): Promise<void>;
  isDamaged(hash: string): boolean;
  /** Whether the index was once filled from the store (so an empty index is really empty). */
  isSynced(): boolean;
  setSynced(): Promise<void>;
  close(): Promise<void>;
}
