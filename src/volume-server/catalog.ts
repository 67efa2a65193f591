/**
 * The volume catalogue: volumes, versions, reads and commits, on top of a
 * BlobStore (the truth) and a MetadataIndex (the fast local copy). Reads are
 * in reads.ts, blobs in blobs.ts, what a commit writes in commit.ts (and what
 * it does to the tree in draft.ts), the index rebuild in rebuild.ts, garbage
 * collection in gc.ts; this file holds volumes, and the locks around commits.
 *
 * Commit order is what makes versions atomic and durable: the blobs a commit
 * uses are in the store (and checked) before it is accepted; then the new
 * tree pages are written (a huge commit stores the pages of directories it
 * is done with as it goes, before that check; a failed commit leaves them to
 * garbage collection), then the version record naming the new root, and
 * only then does the index move the volume's head, in one index transaction.
 * A crash before the index write leaves pages and perhaps a version record
 * that nothing acknowledged: the volume still shows its previous version, the
 * next commit writes its own record over the orphan, and garbage collection
 * deletes unreferenced pages. Commits to one volume are serialised here.
 */
import { randomUUID } from 'node:crypto';
import pLimit from 'p-limit';
import { AlreadyExistsError, InvalidArgumentError, NotFoundError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { quote } from '../common/quote.js';
import { checkName, normalizeFilePath } from '../common/validate.js';
import type { FileEntry, VersionInfo, VolumeInfo } from '../gen/stowage/v1/volume.js';
import { BlobKeeper, type UploadPlan } from './blobs.js';
import { CommitGate } from './commit-gate.js';
import { commitVersion, type CommitHeader } from './commit.js';
import type { DamageRecord, MetadataIndex } from './index/types.js';
import { fileAt, listPath, matchGlob, statPath, decodeToken, type ListBatch, type MatchedFile, type VersionView } from './reads.js';
import { IndexRebuilder, type RebuildResult } from './rebuild.js';
import type { BlobStore } from './store/interface.js';
import { TreeObjects, type TreeCacheCounter } from './tree-objects.js';
import { storedVolume, volumeRecordKey, type Retention, type VersionRecord, type VolumeRecord } from './versions.js';

export interface CatalogOptions {
  /** Hand out presigned URLs when the store can make them (default true). */
  presign?: boolean;
  presignExpirySeconds?: number;
  /** An ephemeral volume without a heartbeat for this long is deleted. */
  ephemeralTimeoutMs?: number;
  /** Retention of volumes that set none (default: the last 10 versions, and every version younger than 24 h). */
  retention?: Retention;
  /** Grace period of garbage collection, and lease of planned uploads (default 1 h). */
  graceMs?: number;
  /** Memory for decoded tree pages (default 64 MiB). */
  treeMemoryBytes?: number;
  /** Told of each lookup in that memory (the server's metrics). */
  treeCacheCounter?: TreeCacheCounter;
}

export const DEFAULT_RETENTION: Retention = { keepLast: 10, keepWithinMs: 24 * 3600_000 };
export const DEFAULT_GRACE_MS = 3600_000;



export class VolumeCatalog {
  private readonly locks = new Map<string, Promise<unknown>>();
  private readonly heartbeats = new Map<string, number>();
  private readonly ephemeralTimeoutMs: number;
  readonly trees: TreeObjects;
  readonly blobs: BlobKeeper;
  readonly retention: Retention;
  readonly graceMs: number;
  private readonly rebuilder: IndexRebuilder;
  private readonly gate = new CommitGate();
  private readonly treeReads = pLimit(32);

  constructor(
    readonly store: BlobStore,
    readonly index: MetadataIndex,
    private readonly log: Logger,
    opts: CatalogOptions = {},
  ) {
    this.ephemeralTimeoutMs = opts.ephemeralTimeoutMs ?? 5 * 60_000;
    this.retention = opts.retention ?? DEFAULT_RETENTION;
    this.graceMs = opts.graceMs ?? DEFAULT_GRACE_MS;
    this.trees = new TreeObjects(store, index, log, {
      memoryBytes: opts.treeMemoryBytes,
      keepInIndex: store.presignScope !== 'local-host',
      cacheCounter: opts.treeCacheCounter,
    });
    this.blobs = new BlobKeeper(store, index, log, { presign: opts.presign, presignExpirySeconds: opts.presignExpirySeconds, leaseMs: this.graceMs });
    this.rebuilder = new IndexRebuilder(store, index, this.trees, log, (key, fn) => this.withLock(key, fn));
  }

  /**
   * Fills the index from the store unless it was filled before (a fresh or
   * lost index), converting volumes of the manifest format. When the store is
   * unreachable the server still starts, and the rebuild is retried until it
   * succeeds.
   */
  init(retryMs = 5000): Promise<void> {
    return this.rebuilder.init(retryMs);
  }

  /** Stops the rebuild retries and waits for one in flight, so that the index can be closed. */
  close(): Promise<void> {
    return this.rebuilder.close();
  }

  rebuildIndex(): Promise<RebuildResult> {
    return this.rebuilder.rebuild();
  }

  listDamaged(): DamageRecord[] {
    return this.index.listDamage();
  }

  private notFoundVolume(name: string): NotFoundError {
    const pending = this.index.isSynced()
      ? ''
      : `; note: the index is not yet rebuilt from ${this.store.description}, which was unreachable, so existing volumes may not show yet`;
    return new NotFoundError(`volume "${name}" not found (create it with: stowage volume create ${name})${pending}`);
  }

  // ---- volumes -------------------------------------------------------------

  async createVolume(name: string, ephemeral: boolean, existOk: boolean): Promise<VolumeInfo> {
    checkName('volume', name);
    return this.withLock(`name:${name}`, async () => {
      const existing = this.index.getVolumeByName(name);
      if (existing) {
        if (existOk) return this.info(existing);
        throw new AlreadyExistsError(`volume "${name}" already exists`);
      }
      const rec: VolumeRecord = {
        id: randomUUID(),
        name,
        createdAtMs: Date.now(),
        ephemeral,
        latestVersion: 0,
        fileCount: 0,
        totalBytes: 0,
      };
      await this.writeRecord(rec);
      await this.index.putVolume(rec);
      if (ephemeral) this.heartbeats.set(rec.id, Date.now());
      return this.info(rec);
    });
  }

  getVolume(name: string): VolumeInfo {
    return this.info(this.record(name));
  }

  listVolumes(includeEphemeral: boolean): VolumeInfo[] {
    return this.index
      .listVolumes()
      .filter((v) => includeEphemeral || !v.ephemeral)
      .map((v) => this.info(v));
  }

  async deleteVolume(name: string): Promise<void> {
    const rec = this.record(name);
    await this.withLock(rec.id, async () => {
      await this.writeRecord({ ...rec, deletedAtMs: Date.now() });
      await this.index.removeVolume(rec.id);
      this.heartbeats.delete(rec.id);
    });
  }

  async renameVolume(name: string, newName: string): Promise<VolumeInfo> {
    checkName('volume', newName);
    const rec = this.record(name);
    return this.withLock(`name:${newName}`, () =>
      this.withLock(rec.id, async () => {
        if (this.index.getVolumeByName(newName)) {
          throw new AlreadyExistsError(`cannot rename "${name}": volume "${newName}" already exists`);
        }
        const now = this.index.getVolume(rec.id);
        if (!now) throw this.notFoundVolume(name);
        const renamed = { ...now, name: newName };
        await this.writeRecord(renamed);
        await this.index.putVolume(renamed);
        return this.info(renamed);
      }),
    );
  }

  /** Sets a volume's retention (keepLast 0 and keepWithinMs 0 together: back to the server's default). */
  async setRetention(name: string, keepLast: number, keepWithinMs: number): Promise<VolumeInfo> {
    if (!Number.isSafeInteger(keepLast) || keepLast < 0 || !Number.isSafeInteger(keepWithinMs) || keepWithinMs < 0) {
      throw new InvalidArgumentError('retention: keep-last and keep-within must be whole numbers, 0 or more');
    }
    const rec0 = this.record(name);
    return this.withLock(rec0.id, async () => {
      const rec = this.index.getVolume(rec0.id);
      if (!rec) throw this.notFoundVolume(name);
      const next: VolumeRecord = { ...rec };
      if (keepLast === 0 && keepWithinMs === 0) delete next.retention;
      else next.retention = { keepLast, keepWithinMs };
      await this.writeRecord(next);
      await this.index.putVolume(next);
      return this.info(next);
    });
  }

  /** The retention that applies to a volume. */
  retentionOf(rec: VolumeRecord): Retention {
    return rec.retention ?? this.retention;
  }

  heartbeat(name: string): void {
    this.heartbeats.set(this.record(name).id, Date.now());
  }

  /** Deletes ephemeral volumes whose client stopped sending heartbeats. */
  async reapEphemeral(now = Date.now()): Promise<string[]> {
    const reaped: string[] = [];
    for (const v of this.index.listVolumes()) {
      if (!v.ephemeral) continue;
      const last = this.heartbeats.get(v.id);
      if (last === undefined) {
        // Unknown since this server started: give its client a full timeout.
        this.heartbeats.set(v.id, now);
      } else if (now - last > this.ephemeralTimeoutMs) {
        await this.deleteVolume(v.name);
        reaped.push(v.name);
      }
    }
    if (reaped.length) this.log.info({ reaped }, 'deleted ephemeral volumes without heartbeat');
    return reaped;
  }

  listVersions(name: string): VersionInfo[] {
    return this.index.listVersions(this.record(name).id).map(versionInfo);
  }

  getVersion(name: string, version: number): VersionInfo {
    const rec = this.record(name);
    if (version === 0 && rec.latestVersion === 0) {
      return { version: 0, createdAtMs: rec.createdAtMs, fileCount: 0, totalBytes: 0, root: '', dirCount: 0 };
    }
    return versionInfo(this.versionRecord(rec, version));
  }

  // ---- reads ---------------------------------------------------------------

  /** One version of a volume as reads see it (0: the latest). */
  view(name: string, version: number): VersionView {
    const rec = this.record(name);
    if (version === 0 && rec.latestVersion === 0) return { volume: rec.name, version: 0, root: undefined, createdAtMs: rec.createdAtMs };
    const v = this.versionRecord(rec, version);
    return { volume: rec.name, version: v.version, root: v.root, createdAtMs: v.createdAtMs };
  }

  /** A listing in batches (see reads.ts listPath); `pageToken` continues an earlier page. */
  async *listFiles(
    name: string,
    path: string,
    recursive: boolean,
    version: number,
    pageSize = 0,
    pageToken = '',
    withExtents = true,
  ): AsyncGenerator<ListBatch & { version: number }> {
    const token = pageToken ? decodeToken(pageToken, path, recursive) : undefined;
    const view = this.view(name, token?.v ?? version);
    let any = false;
    for await (const b of listPath(this.trees, view, path, recursive, pageSize, token?.a, withExtents)) {
      any = true;
      yield { ...b, version: view.version };
    }
    if (!any) yield { entries: [], version: view.version };
  }

  async stat(name: string, path: string, version: number): Promise<{ version: number; entry: FileEntry }> {
    const view = this.view(name, version);
    return { version: view.version, entry: await statPath(this.trees, view, path) };
  }

  async getFile(name: string, path: string, version: number, presign: boolean): Promise<{ version: number; entry: FileEntry; getUrls: Record<string, string> }> {
    normalizeFilePath(path);
    const view = this.view(name, version);
    const entry = await fileAt(this.trees, view, path);
    const getUrls = presign ? await this.blobs.presignBlobs(entry.extents.map((e) => e.blob)) : {};
    return { version: view.version, entry, getUrls };
  }

  /** Tree objects of a volume's versions, checked, for clients that walk trees themselves. */
  async *treeObjects(name: string, hashes: string[]): AsyncGenerator<{ hash: string; data: Buffer }> {
    this.record(name);
    if (hashes.length > 1024) throw new InvalidArgumentError(`at most 1024 tree objects per request, not ${hashes.length}`);
    for (const h of hashes) {
      if (!/^[0-9a-f]{64}$/.test(h)) throw new InvalidArgumentError(`invalid tree object hash ${quote(h)}`);
    }
    // Read concurrently (a request names a directory's worth of pages), answered in order.
    const reads = hashes.map((hash) => this.treeReads(() => this.trees.bytes(hash)));
    for (const r of reads) r.catch(() => undefined);
    for (let i = 0; i < hashes.length; i++) yield { hash: hashes[i]!, data: await reads[i]! };
  }

  /** Files of one version that a glob matches (the compute bridge's `reads`). */
  matchFiles(name: string, version: number, glob: string): Promise<MatchedFile[]> {
    return matchGlob(this.trees, this.view(name, version), glob);
  }

  // ---- writes --------------------------------------------------------------

  async planUpload(name: string, blobs: string[], contents: string[], presign: boolean): Promise<UploadPlan> {
    this.record(name);
    return this.blobs.planUpload(blobs, contents, presign);
  }

  /**
   * Damage a client found in a blob; with the file it was found in (volume,
   * path, version), every blob of that file is checked. Returns the damaged ones.
   */
  async reportDamaged(hash: string, file?: { volume: string; path: string; version: number }): Promise<string[]> {
    let fileBlobs: string[] = [];
    if (file?.volume) {
      const entry = await this.getFile(file.volume, file.path, file.version, false).catch(() => undefined);
      fileBlobs = entry?.entry.extents.map((e) => e.blob) ?? [];
    }
    return this.blobs.reportDamaged(hash, fileBlobs);
  }

  /**
   * Applies removals, then copies, then the puts (which may arrive in
   * batches) to the latest version, and commits the result as the next one.
   */
  async commit(header: CommitHeader, puts: AsyncIterable<FileEntry[]>): Promise<{ version: number; volume: VolumeInfo }> {
    const rec0 = this.record(header.volume);
    return this.withLock(rec0.id, () =>
      this.gate.pass(async () => {
        const rec = this.index.getVolume(rec0.id);
        if (!rec) throw this.notFoundVolume(header.volume);
        const head = rec.latestVersion === 0 ? undefined : this.versionRecord(rec, rec.latestVersion);
        const done = await commitVersion({ store: this.store, index: this.index, trees: this.trees, blobs: this.blobs, log: this.log }, rec, head, header, puts);
        this.gate.landed(done.referenced);
        return { version: done.version.version, volume: this.info(done.volume) };
      }),
    );
  }

  /** For garbage collection: what commits landing from now on reference. */
  watchCommits(): { has(hash: string): boolean; stop(): void } {
    return this.gate.watch();
  }

  /** For garbage collection: runs `fn` while no commit is under way. */
  exclusively<T>(fn: () => Promise<T>): Promise<T> {
    return this.gate.exclusively(fn);
  }

  // ---- helpers -------------------------------------------------------------

  private record(name: string): VolumeRecord {
    checkName('volume', name);
    const rec = this.index.getVolumeByName(name);
    if (!rec) throw this.notFoundVolume(name);
    return rec;
  }

  versionRecord(rec: VolumeRecord, version: number): VersionRecord {
    const v = version === 0 ? rec.latestVersion : version;
    const vr = v > 0 && v <= rec.latestVersion ? this.index.getVersion(rec.id, v) : undefined;
    if (!vr) {
      const gone = v > 0 && v < rec.latestVersion ? ' (it was removed by garbage collection, or never existed)' : '';
      throw new NotFoundError(
        `volume "${rec.name}" has no version ${v}${gone} (latest is ${rec.latestVersion}; list them with: stowage volume versions ${rec.name})`,
      );
    }
    return vr;
  }

  private info(rec: VolumeRecord): VolumeInfo {
    const r = this.retentionOf(rec);
    return {
      name: rec.name,
      id: rec.id,
      createdAtMs: rec.createdAtMs,
      latestVersion: rec.latestVersion,
      fileCount: rec.fileCount,
      totalBytes: rec.totalBytes,
      ephemeral: rec.ephemeral,
      keepLast: r.keepLast,
      keepWithinMs: r.keepWithinMs,
    };
  }

  private async writeRecord(rec: VolumeRecord): Promise<void> {
    await this.store.put(volumeRecordKey(rec.id), Buffer.from(JSON.stringify(storedVolume(rec))));
  }

  withLock<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(key) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const tail = run.catch(() => undefined);
    this.locks.set(key, tail);
    void tail.then(() => {
      if (this.locks.get(key) === tail) this.locks.delete(key);
    });
    return run;
  }
}

function versionInfo(v: VersionRecord): VersionInfo {
  return { version: v.version, createdAtMs: v.createdAtMs, fileCount: v.fileCount, totalBytes: v.totalBytes, root: v.root, dirCount: v.dirCount };
}
