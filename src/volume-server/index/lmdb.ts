/** MetadataIndex on LMDB (lmdb-js): durable, transactional, embedded. */
import { open, type Database, type RootDatabase } from 'lmdb';
import type { Extent, VersionInfo } from '../../gen/stowage/v1/volume.js';
import type { Manifest, VolumeRecord } from '../manifest.js';
import type { MetadataIndex } from './types.js';

/** Small files at or below this size get a content-index entry. */
const CONTENT_INDEX_MAX = 4 * 1024 * 1024;

export class LmdbIndex implements MetadataIndex {
  private readonly root: RootDatabase;
  private readonly volumes: Database<VolumeRecord, string>;
  private readonly names: Database<string, string>;
  private readonly manifests: Database<Manifest, [string, number]>;
  private readonly versions: Database<VersionInfo, [string, number]>;
  private readonly blobs: Database<number, string>;
  private readonly contents: Database<[string, number, number], string>;
  private readonly damaged: Database<number, string>;
  private readonly meta: Database<unknown, string>;

  constructor(path: string) {
    this.root = open({ path, compression: false });
    this.volumes = this.root.openDB({ name: 'volumes' });
    this.names = this.root.openDB({ name: 'names' });
    this.manifests = this.root.openDB({ name: 'manifests' });
    this.versions = this.root.openDB({ name: 'versions' });
    this.blobs = this.root.openDB({ name: 'blobs' });
    this.contents = this.root.openDB({ name: 'contents' });
    this.damaged = this.root.openDB({ name: 'damaged' });
    this.meta = this.root.openDB({ name: 'meta' });
  }

  getVolumeByName(name: string): VolumeRecord | undefined {
    const id = this.names.get(name);
    return id === undefined ? undefined : this.volumes.get(id);
  }

  getVolume(id: string): VolumeRecord | undefined {
    return this.volumes.get(id);
  }

  listVolumes(): VolumeRecord[] {
    const out: VolumeRecord[] = [];
    for (const { value: id } of this.names.getRange()) {
      const rec = this.volumes.get(id);
      if (rec && rec.deletedAtMs === undefined) out.push(rec);
    }
    return out;
  }

  async putVolume(rec: VolumeRecord): Promise<void> {
    await this.root.transaction(() => {
      const old = this.volumes.get(rec.id);
      if (old && old.name !== rec.name && this.names.get(old.name) === rec.id) {
        void this.names.remove(old.name);
      }
      void this.volumes.put(rec.id, rec);
      void this.names.put(rec.name, rec.id);
    });
  }

  async removeVolume(id: string): Promise<void> {
    await this.root.transaction(() => {
      const rec = this.volumes.get(id);
      if (rec && this.names.get(rec.name) === id) void this.names.remove(rec.name);
      void this.volumes.remove(id);
      const range = { start: [id, 0], end: [id, Number.MAX_SAFE_INTEGER] };
      for (const key of this.manifests.getKeys(range)) void this.manifests.remove(key);
      for (const key of this.versions.getKeys(range)) void this.versions.remove(key);
    });
  }

  async putVersion(rec: VolumeRecord, manifest: Manifest, blobSizes = new Map<string, number>()): Promise<void> {
    await this.root.transaction(() => {
      const key: [string, number] = [manifest.volumeId, manifest.version];
      void this.manifests.put(key, manifest);
      void this.versions.put(key, {
        version: manifest.version,
        createdAtMs: manifest.createdAtMs,
        fileCount: manifest.files.length,
        totalBytes: manifest.files.reduce((n, f) => n + f.size, 0),
      });
      void this.volumes.put(rec.id, rec);
      void this.names.put(rec.name, rec.id);
      for (const f of manifest.files) {
        for (const [blob, offset, length, hash] of f.extents) {
          const known = Math.max(this.blobs.get(blob) ?? 0, blobSizes.get(blob) ?? 0, offset + length);
          if (known !== this.blobs.get(blob)) void this.blobs.put(blob, known);
          const old = this.contents.get(hash);
          if (f.extents.length === 1 && f.size <= CONTENT_INDEX_MAX && (!old || this.damaged.doesExist(old[0]))) {
            void this.contents.put(hash, [blob, offset, length]);
          }
        }
      }
    });
  }

  getManifest(volumeId: string, version: number): Manifest | undefined {
    return this.manifests.get([volumeId, version]);
  }

  listVersions(volumeId: string): VersionInfo[] {
    return [
      ...this.versions
        .getRange({ start: [volumeId, 0], end: [volumeId, Number.MAX_SAFE_INTEGER] })
        .map(({ value }) => value),
    ];
  }

  blobSize(hash: string): number | undefined {
    return this.blobs.get(hash);
  }

  findContent(hash: string): Extent | undefined {
    const hit = this.contents.get(hash);
    if (!hit || this.damaged.doesExist(hit[0])) return undefined;
    return { blob: hit[0], offset: hit[1], length: hit[2], hash };
  }

  async markDamaged(hash: string): Promise<void> {
    await this.damaged.put(hash, Date.now());
  }

  async clearDamaged(hash: string): Promise<void> {
    await this.damaged.remove(hash);
  }

  isDamaged(hash: string): boolean {
    return this.damaged.doesExist(hash);
  }

  isSynced(): boolean {
    return this.meta.get('synced') === true;
  }

  async setSynced(): Promise<void> {
    await this.meta.put('synced', true);
  }

  async close(): Promise<void> {
    await this.root.close();
  }
}
