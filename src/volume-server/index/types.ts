/**
 * MetadataIndex: the volume server's fast local index (LMDB by default). It is
 * a cache of what the store holds, never the only copy: every record in it can
 * be rebuilt from volume records and manifests in the BlobStore.
 */
import type { Extent, VersionInfo } from '../../gen/stowage/v1/volume.js';
import type { Manifest, VolumeRecord } from '../manifest.js';

export interface MetadataIndex {
  /** True when the index holds no volume at all (a fresh or lost index). */
  isEmpty(): boolean;
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
   * Readers see all of it or none of it.
   */
  putVersion(rec: VolumeRecord, manifest: Manifest): Promise<void>;
  getManifest(volumeId: string, version: number): Manifest | undefined;
  /** Summaries of every version, oldest first (manifests are not loaded). */
  listVersions(volumeId: string): VersionInfo[];
  /** True when a committed version references this blob. */
  hasBlob(hash: string): boolean;
  /** Where a small file with this content hash already lives, if anywhere. */
  findContent(hash: string): Extent | undefined;
  close(): Promise<void>;
}
