/**
 * MetadataIndex on LMDB (lmdb-js): durable, transactional, embedded. Every
 * write goes through LmdbEnv, so that a full disk fails that write with
 * RESOURCE_EXHAUSTED (naming the index) and nothing else.
 */
import type { Database, Key, RootDatabase } from 'lmdb';
import { LmdbEnv } from '../../common/lmdb.js';
import { createLogger, type Logger } from '../../common/logger.js';
import type { Extent } from '../../gen/stowage/v1/volume.js';
import type { VersionRecord, VolumeRecord } from '../versions.js';
import type { DamageRecord, MetadataIndex, PlannedBlob, VersionBlobs } from './types.js';

const MAX_VERSION = Number.MAX_SAFE_INTEGER;

export class LmdbIndex implements MetadataIndex {
  private readonly env: LmdbEnv;
  private readonly root: RootDatabase;
  private readonly volumes: Database<VolumeRecord, string>;
  private readonly names: Database<string, string>;
  private readonly versions: Database<VersionRecord, [string, number]>;
  private readonly blobs: Database<number, string>;
  private readonly contents: Database<[string, number, number], string>;
  private readonly damaged: Database<number, string>;
  private readonly trees: Database<Buffer | true, string>;
  private readonly planned: Database<PlannedBlob, string>;
  private readonly damage: Database<DamageRecord, string>;
  private readonly meta: Database<unknown, string>;
  /** Databases of the manifest format (before store format 2), emptied once converted. */
  private readonly legacy: Database<unknown, Key>[];

  constructor(path: string, log: Logger = createLogger('volume-index')) {
    this.env = new LmdbEnv({ dir: path, what: 'volume index', log });
    this.root = this.env.root;
    this.volumes = this.root.openDB({ name: 'volumes' });
    this.names = this.root.openDB({ name: 'names' });
    this.versions = this.root.openDB({ name: 'version-records' });
    this.blobs = this.root.openDB({ name: 'blobs' });
    this.contents = this.root.openDB({ name: 'contents' });
    this.damaged = this.root.openDB({ name: 'damaged' });
    this.trees = this.root.openDB({ name: 'trees', encoding: 'msgpack' });
    this.planned = this.root.openDB({ name: 'planned' });
    this.damage = this.root.openDB({ name: 'damage' });
    this.meta = this.root.openDB({ name: 'meta' });
    this.legacy = [this.root.openDB({ name: 'manifests' }), this.root.openDB({ name: 'versions' })];
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
    await this.env.transaction(() => {
      const old = this.volumes.get(rec.id);
      if (old && old.name !== rec.name && this.names.get(old.name) === rec.id) {
        void this.names.remove(old.name);
      }
      void this.volumes.put(rec.id, rec);
      void this.names.put(rec.name, rec.id);
    });
  }

  async removeVolume(id: string): Promise<void> {
    await this.env.transaction(() => {
      const rec = this.volumes.get(id);
      if (rec && this.names.get(rec.name) === id) void this.names.remove(rec.name);
      void this.volumes.remove(id);
      for (const key of this.versions.getKeys({ start: [id, 0], end: [id, MAX_VERSION] })) void this.versions.remove(key);
    });
  }

  async putVersion(rec: VolumeRecord, version: VersionRecord, blobs?: VersionBlobs): Promise<void> {
    await this.env.transaction(() => {
      void this.versions.put([version.volumeId, version.version], version);
      void this.volumes.put(rec.id, rec);
      void this.names.put(rec.name, rec.id);
      for (const [blob, size] of blobs?.sizes ?? []) {
        const known = this.blobs.get(blob);
        if (known === undefined || size > known) void this.blobs.put(blob, size);
      }
      for (const [hash, x] of blobs?.contents ?? []) {
        const old = this.contents.get(hash);
        if (!old || this.damaged.doesExist(old[0])) void this.contents.put(hash, [x.blob, x.offset, x.length]);
      }
    });
  }

  getVersion(volumeId: string, version: number): VersionRecord | undefined {
    return this.versions.get([volumeId, version]);
  }

  listVersions(volumeId: string): VersionRecord[] {
    return [...this.versions.getRange({ start: [volumeId, 0], end: [volumeId, MAX_VERSION] }).map(({ value }) => value)];
  }

  async removeVersions(volumeId: string, versions: number[]): Promise<void> {
    await this.env.transaction(() => {
      for (const v of versions) void this.versions.remove([volumeId, v]);
    });
  }

  blobSize(hash: string): number | undefined {
    return this.blobs.get(hash);
  }

  findContent(hash: string): Extent | undefined {
    const hit = this.contents.get(hash);
    if (!hit || this.damaged.doesExist(hit[0]) || !this.blobs.doesExist(hit[0])) return undefined;
    return { blob: hit[0], offset: hit[1], length: hit[2], hash };
  }

  async forgetBlobs(hashes: string[]): Promise<void> {
    if (hashes.length === 0) return;
    await this.env.transaction(() => {
      for (const h of hashes) {
        void this.blobs.remove(h);
        void this.damaged.remove(h);
      }
    });
  }

  async dropStaleContents(): Promise<number> {
    const stale: string[] = [];
    for (const { key, value } of this.contents.getRange()) if (!this.blobs.doesExist(value[0])) stale.push(key);
    for (let i = 0; i < stale.length; i += 4096) {
      const run = stale.slice(i, i + 4096);
      await this.env.transaction(() => {
        // A blob stored again since it was listed (the same hash, the same bytes) makes its contents right again.
        for (const k of run) {
          const v = this.contents.get(k);
          if (v && !this.blobs.doesExist(v[0])) void this.contents.remove(k);
        }
      });
    }
    return stale.length;
  }

  async markDamaged(hash: string): Promise<void> {
    await this.env.transaction(() => void this.damaged.put(hash, Date.now()));
  }

  async clearDamaged(hash: string): Promise<void> {
    await this.env.transaction(() => void this.damaged.remove(hash));
  }

  isDamaged(hash: string): boolean {
    return this.damaged.doesExist(hash);
  }

  hasTree(hash: string): boolean {
    return this.trees.doesExist(hash);
  }

  getTree(hash: string): Buffer | undefined {
    const v = this.trees.get(hash);
    return v === true || v === undefined ? undefined : Buffer.from(v);
  }

  async putTrees(objects: [string, Buffer | undefined][]): Promise<void> {
    if (objects.length === 0) return;
    await this.env.transaction(() => {
      for (const [hash, bytes] of objects) void this.trees.put(hash, bytes ?? true);
    });
  }

  async forgetTrees(hashes: string[]): Promise<void> {
    if (hashes.length === 0) return;
    await this.env.transaction(() => {
      for (const h of hashes) void this.trees.remove(h);
    });
  }

  getPlanned(hash: string): PlannedBlob | undefined {
    return this.planned.get(hash);
  }

  async putPlanned(hashes: string[], planned: PlannedBlob): Promise<void> {
    if (hashes.length === 0) return;
    await this.env.transaction(() => {
      for (const h of hashes) {
        const old = this.planned.get(h);
        if (!old || old.expiresAtMs < planned.expiresAtMs) void this.planned.put(h, planned);
      }
    });
  }

  async clearPlanned(hashes: string[]): Promise<void> {
    if (hashes.length === 0) return;
    await this.env.transaction(() => {
      for (const h of hashes) void this.planned.remove(h);
    });
  }

  listPlanned(): Iterable<[string, PlannedBlob]> {
    return this.planned.getRange().map(({ key, value }): [string, PlannedBlob] => [key, value]);
  }

  async recordDamage(d: DamageRecord): Promise<void> {
    await this.env.transaction(() => void this.damage.put(d.key, d));
  }

  async clearDamage(key: string): Promise<void> {
    await this.env.transaction(() => void this.damage.remove(key));
  }

  listDamage(): DamageRecord[] {
    return [...this.damage.getRange().map(({ value }) => value)];
  }

  isSynced(): boolean {
    return this.meta.get('synced') === true;
  }

  async setSynced(): Promise<void> {
    await this.env.transaction(() => void this.meta.put('synced', true));
  }

  storeFormat(): number | undefined {
    const f = this.meta.get('storeFormat');
    return typeof f === 'number' ? f : undefined;
  }

  async setStoreFormat(format: number): Promise<void> {
    await this.env.transaction(() => {
      void this.meta.put('storeFormat', format);
      // The manifest format's databases are not read any more: give their pages back.
      for (const db of this.legacy) for (const key of db.getKeys()) void db.remove(key);
    });
  }

  async close(): Promise<void> {
    await this.env.close();
  }
}
