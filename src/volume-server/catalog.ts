/**
 * The volume catalogue: volumes, versions, upload planning and commit, on top
 * of a BlobStore (the truth) and a MetadataIndex (the fast local copy).
 *
 * Commit order is what makes versions atomic and durable: blobs are in the
 * store before a commit is accepted; the manifest is written to the store
 * before the index moves the volume's head, in one index transaction. A crash
 * before the index write leaves an unreferenced manifest that a rebuild
 * adopts, never a half version. Commits to one volume are serialised here.
 */
import { randomUUID } from 'node:crypto';
import pLimit from 'p-limit';
import {
  AlreadyExistsError,
  FailedPreconditionError,
  IntegrityError,
  NotFoundError,
} from '../common/errors.js';
import { sha256 } from '../common/hash.js';
import type { Logger } from '../common/logger.js';
import { checkHash, checkName, normalizeFilePath, normalizePath } from '../common/validate.js';
import {
  FileType,
  type CopyOp,
  type Extent,
  type FileEntry,
  type RemoveOp,
  type VersionInfo,
  type VolumeInfo,
} from '../gen/stowage/v1/volume.js';
import { applyCopies, applyPuts, applyRemoves, checkPut, parentOf } from './file-ops.js';
import type { MetadataIndex } from './index/types.js';
import {
  MANIFEST_FORMAT,
  extentsOf,
  manifestKey,
  parseManifestKey,
  volumeRecordKey,
  type Manifest,
  type StoredFile,
  type VolumeRecord,
} from './manifest.js';
import { blobKey, type BlobStore } from './store/interface.js';

export interface CatalogOptions {
  /** Hand out presigned URLs when the store can make them (default true). */
  presign?: boolean;
  presignExpirySeconds?: number;
  /** An ephemeral volume without a heartbeat for this long is deleted. */
  ephemeralTimeoutMs?: number;
}

export interface CommitInput {
  volume: string;
  puts: FileEntry[];
  removes: RemoveOp[];
  copies: CopyOp[];
  force: boolean;
}

export interface UploadPlan {
  missingBlobs: string[];
  putUrls: Record<string, string>;
  knownContents: Record<string, Extent>;
}


export class VolumeCatalog {
  private readonly locks = new Map<string, Promise<unknown>>();
  private readonly heartbeats = new Map<string, number>();
  private readonly presign: boolean;
  private readonly presignExpiry: number;
  private readonly ephemeralTimeoutMs: number;
  private readonly storeLimit = pLimit(32);
  /** Set while the index has not yet been filled from an unreachable store. */
  private syncRetry: NodeJS.Timeout | undefined;
  private retrying: Promise<void> | undefined;
  private closed = false;

  constructor(
    readonly store: BlobStore,
    private readonly index: MetadataIndex,
    private readonly log: Logger,
    opts: CatalogOptions = {},
  ) {
    this.presign = opts.presign ?? true;
    this.presignExpiry = opts.presignExpirySeconds ?? 3600;
    this.ephemeralTimeoutMs = opts.ephemeralTimeoutMs ?? 5 * 60_000;
  }

  /**
   * Fills the index from the store unless it was filled before (a fresh or
   * lost index). When the store is unreachable the server still starts, and
   * the rebuild is retried until it succeeds.
   */
  async init(retryMs = 5000): Promise<void> {
    if (this.closed || this.index.isSynced()) return;
    try {
      const result = await this.rebuildIndex();
      if (result.volumes > 0) this.log.info(result, 'index was empty: rebuilt it from the store');
    } catch (err) {
      if (this.closed) return;
      this.log.warn({ err: (err as Error).message }, 'cannot rebuild the index from the store yet; retrying');
      this.syncRetry = setTimeout(() => {
        this.syncRetry = undefined;
        this.retrying = this.init(retryMs).catch((e: unknown) =>
          this.log.warn({ err: (e as Error).message }, 'index rebuild failed'),
        );
      }, retryMs);
      this.syncRetry.unref();
    }
  }

  /** Stops the rebuild retries and waits for one in flight, so that the index can be closed. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.syncRetry) clearTimeout(this.syncRetry);
    this.syncRetry = undefined;
    await this.retrying;
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
        if (existOk) return info(existing);
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
      return info(rec);
    });
  }

  getVolume(name: string): VolumeInfo {
    return info(this.record(name));
  }

  listVolumes(includeEphemeral: boolean): VolumeInfo[] {
    return this.index
      .listVolumes()
      .filter((v) => includeEphemeral || !v.ephemeral)
      .map(info);
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
        const renamed = { ...this.index.getVolume(rec.id)!, name: newName };
        await this.writeRecord(renamed);
        await this.index.putVolume(renamed);
        return info(renamed);
      }),
    );
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
    return this.index.listVersions(this.record(name).id);
  }

  // ---- reads ---------------------------------------------------------------

  /** Files (and implied directories) at or below `path`. */
  listFiles(name: string, path: string, recursive: boolean, version: number): { version: number; entries: FileEntry[] } {
    const dir = normalizePath(path);
    const m = this.manifest(name, version);
    const file = findFile(m, dir);
    if (file) return { version: m.version, entries: [toEntry(file)] };
    const entries: FileEntry[] = [];
    const seenDirs = new Set<string>();
    const prefix = dir === '' ? '' : `${dir}/`;
    let any = false;
    for (const f of m.files) {
      if (!f.path.startsWith(prefix)) continue;
      any = true;
      const rest = f.path.slice(prefix.length);
      const parts = rest.split('/');
      // Every directory between `dir` and the file, once.
      const dirDepth = recursive ? parts.length - 1 : Math.min(1, parts.length - 1);
      for (let i = 1; i <= dirDepth; i++) {
        const d = prefix + parts.slice(0, i).join('/');
        if (!seenDirs.has(d)) {
          seenDirs.add(d);
          entries.push(dirEntry(d, m.createdAtMs));
        }
      }
      if (recursive || parts.length === 1) entries.push(toEntry(f));
    }
    if (!any && dir !== '') throw notFoundPath(name, dir, m.version);
    return { version: m.version, entries };
  }

  stat(name: string, path: string, version: number): { version: number; entry: FileEntry } {
    const p = normalizePath(path);
    const m = this.manifest(name, version);
    const file = findFile(m, p);
    if (file) return { version: m.version, entry: toEntry(file) };
    if (p === '' || m.files.some((f) => f.path.startsWith(`${p}/`))) {
      return { version: m.version, entry: dirEntry(p, m.createdAtMs) };
    }
    throw notFoundPath(name, p, m.version);
  }

  async getFile(
    name: string,
    path: string,
    version: number,
    presign: boolean,
  ): Promise<{ version: number; entry: FileEntry; getUrls: Record<string, string> }> {
    const p = normalizeFilePath(path);
    const m = this.manifest(name, version);
    const file = findFile(m, p);
    if (!file) {
      if (m.files.some((f) => f.path.startsWith(`${p}/`))) {
        throw new FailedPreconditionError(`"${p}" in volume "${name}" is a directory, not a file`);
      }
      throw notFoundPath(name, p, m.version);
    }
    const entry = toEntry(file);
    const getUrls = presign ? await this.presignBlobs(entry.extents.map((e) => e.blob)) : {};
    return { version: m.version, entry, getUrls };
  }

  /** Whether a caller may be given presigned URLs (`sameHost`: it called from this host). */
  canPresign(sameHost: boolean): boolean {
    return this.presign && (this.store.presignScope !== 'local-host' || sameHost);
  }

  async presignBlobs(blobs: string[]): Promise<Record<string, string>> {
    const urls: Record<string, string> = {};
    const presignGet = this.store.presignGet?.bind(this.store);
    if (!this.presign || !presignGet) return urls;
    for (const b of new Set(blobs)) urls[b] = await presignGet(blobKey(checkHash(b)), this.presignExpiry);
    return urls;
  }

  /** Reads a blob or a range of it, as stored (the client verifies hashes). */
  async readBlob(hash: string, offset: number, length: number): Promise<Buffer> {
    checkHash(hash);
    return this.store.get(blobKey(hash), { offset, length: length === 0 ? undefined : length });
  }

  // ---- writes --------------------------------------------------------------

  async planUpload(name: string, blobs: string[], contents: string[], presign: boolean): Promise<UploadPlan> {
    this.record(name);
    const unique = [...new Set(blobs.map(checkHash))];
    const present = await Promise.all(unique.map((b) => this.blobPresent(b)));
    const missingBlobs = unique.filter((_, i) => !present[i]);
    const putUrls: Record<string, string> = {};
    const presignPut = this.store.presignPut?.bind(this.store);
    if (presign && this.presign && presignPut) {
      for (const b of missingBlobs) putUrls[b] = await presignPut(blobKey(b), this.presignExpiry);
    }
    const knownContents: Record<string, Extent> = {};
    for (const c of new Set(contents.map(checkHash))) {
      const hit = this.index.findContent(c);
      if (hit) knownContents[c] = hit;
    }
    return { missingBlobs, putUrls, knownContents };
  }

  /** Stores a blob sent through the server, after checking its hash. */
  async putBlob(hash: string, data: Buffer): Promise<boolean> {
    checkHash(hash);
    const actual = sha256(data);
    if (actual !== hash) {
      throw new IntegrityError(`blob upload rejected: its bytes hash to ${actual}, not ${hash}`);
    }
    if (await this.blobPresent(hash)) return false;
    await this.store.put(blobKey(hash), data);
    return true;
  }

  /**
   * A client found bytes of this blob that do not match their hash. Re-read
   * and check the whole blob; if it is damaged (or gone), mark it so that the
   * next upload of the same data stores a good copy.
   */
  async reportDamaged(hash: string): Promise<boolean> {
    checkHash(hash);
    let damaged: boolean;
    try {
      damaged = sha256(await this.store.get(blobKey(hash))) !== hash;
    } catch (err) {
      if (!(err instanceof NotFoundError)) throw err;
      damaged = true;
    }
    if (damaged && !this.index.isDamaged(hash)) {
      await this.index.markDamaged(hash);
      this.log.warn({ blob: hash }, 'blob in the store does not match its hash: marked damaged, next upload repairs it');
    }
    return damaged;
  }

  async commit(input: CommitInput): Promise<{ version: number; volume: VolumeInfo }> {
    const rec0 = this.record(input.volume);
    return this.withLock(rec0.id, async () => {
      const rec = this.index.getVolume(rec0.id);
      if (!rec) throw this.notFoundVolume(input.volume);
      const base = this.manifestOf(rec, rec.latestVersion);
      const files = new Map(base.files.map((f) => [f.path, f]));
      applyRemoves(files, input.removes, rec.name);
      applyCopies(files, input.copies, rec.name, input.force);
      const puts = input.puts.map(checkPut);
      const blobSizes = await this.checkBlobsPresent(puts);
      applyPuts(files, puts, rec.name, input.force);

      const version = rec.latestVersion + 1;
      const manifest: Manifest = {
        format: MANIFEST_FORMAT,
        volumeId: rec.id,
        volumeName: rec.name,
        version,
        createdAtMs: Date.now(),
        files: [...files.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0)),
      };
      // The store first: once the index moves, the version must be durable.
      await this.store.put(manifestKey(rec.id, version), Buffer.from(JSON.stringify(manifest)));
      const next: VolumeRecord = {
        ...rec,
        latestVersion: version,
        fileCount: manifest.files.length,
        totalBytes: manifest.files.reduce((n, f) => n + f.size, 0),
      };
      await this.index.putVersion(next, manifest, blobSizes);
      this.log.debug({ volume: rec.name, version, files: manifest.files.length }, 'committed');
      return { version, volume: info(next) };
    });
  }

  // ---- rebuild -------------------------------------------------------------

  /**
   * Fills the index from volume records and manifests in the store. Safe on
   * a live index: it adds volumes and versions the index lacks, forgets
   * volumes the store says were deleted, and never moves a head backwards.
   * Returns the live volumes and their versions found in the store.
   */
  async rebuildIndex(): Promise<{ volumes: number; versions: number }> {
    const records: VolumeRecord[] = [];
    for await (const key of this.store.list('volumes/')) {
      if (!key.endsWith('.json')) continue;
      records.push(JSON.parse((await this.store.get(key)).toString('utf8')) as VolumeRecord);
    }
    // Newest first, so that a name reused after a delete goes to the live volume.
    records.sort((a, b) => b.createdAtMs - a.createdAtMs);
    const claimed = new Set<string>();
    let volumes = 0;
    let versions = 0;
    for (const r of records) {
      if (r.deletedAtMs !== undefined) {
        if (this.index.getVolume(r.id)) await this.index.removeVolume(r.id);
        continue;
      }
      if (claimed.has(r.name)) continue;
      claimed.add(r.name);
      const holder = this.index.getVolumeByName(r.name);
      if (holder && holder.id !== r.id) {
        this.log.warn({ name: r.name, id: r.id, holder: holder.id }, 'rebuild: name taken by another volume; skipped');
        continue;
      }
      await this.withLock(r.id, async () => {
        const existing = this.index.getVolume(r.id);
        let rec: VolumeRecord = existing ?? { ...r, latestVersion: 0, fileCount: 0, totalBytes: 0 };
        if (rec.name !== r.name) rec = { ...rec, name: r.name };
        const found: number[] = [];
        for await (const key of this.store.list(`manifests/${r.id}/`)) {
          const parsed = parseManifestKey(key);
          if (parsed) found.push(parsed.version);
        }
        found.sort((a, b) => a - b);
        versions += found.length;
        const newer = found.filter((n) => n > rec.latestVersion);
        // A volume new to the index appears with its first whole version, never empty.
        if (existing ? existing.name !== rec.name : newer.length === 0) await this.index.putVolume(rec);
        for (const v of newer) {
          const m = JSON.parse((await this.store.get(manifestKey(r.id, v))).toString('utf8')) as Manifest;
          rec = { ...rec, latestVersion: v, fileCount: m.files.length, totalBytes: m.files.reduce((n, f) => n + f.size, 0) };
          await this.index.putVersion(rec, m);
        }
      });
      volumes++;
    }
    await this.index.setSynced();
    return { volumes, versions };
  }

  // ---- helpers -------------------------------------------------------------

  private record(name: string): VolumeRecord {
    checkName('volume', name);
    const rec = this.index.getVolumeByName(name);
    if (!rec) throw this.notFoundVolume(name);
    return rec;
  }

  private manifest(name: string, version: number): Manifest {
    return this.manifestOf(this.record(name), version);
  }

  private manifestOf(rec: VolumeRecord, version: number): Manifest {
    const v = version === 0 ? rec.latestVersion : version;
    if (v === 0) {
      return { format: MANIFEST_FORMAT, volumeId: rec.id, volumeName: rec.name, version: 0, createdAtMs: rec.createdAtMs, files: [] };
    }
    const m = v <= rec.latestVersion ? this.index.getManifest(rec.id, v) : undefined;
    if (!m) {
      throw new NotFoundError(
        `volume "${rec.name}" has no version ${v} (latest is ${rec.latestVersion}; list them with: stowage volume versions ${rec.name})`,
      );
    }
    return m;
  }

  private async blobPresent(hash: string): Promise<boolean> {
    if (this.index.isDamaged(hash)) return false;
    if (this.index.blobSize(hash) !== undefined) return true;
    return (await this.storeLimit(() => this.store.head(blobKey(hash)))) !== undefined;
  }

  /**
   * Checks that every blob the puts reference is stored and long enough;
   * returns the sizes it read from the store. A blob marked damaged must
   * have been replaced by a good copy.
   */
  private async checkBlobsPresent(puts: StoredFile[]): Promise<Map<string, number>> {
    const need = new Map<string, number>();
    for (const f of puts) {
      for (const [blob, offset, length] of f.extents) need.set(blob, Math.max(need.get(blob) ?? 0, offset + length));
    }
    const sizes = new Map<string, number>();
    const missing: string[] = [];
    const damaged: string[] = [];
    await Promise.all(
      [...need].map(async ([blob, end]) => {
        if (this.index.isDamaged(blob)) {
          if (!(await this.storeLimit(() => this.reportDamaged(blob)))) await this.index.clearDamaged(blob);
          else return void damaged.push(blob);
        }
        if ((this.index.blobSize(blob) ?? -1) >= end) return;
        const size = await this.storeLimit(() => this.store.head(blobKey(blob)));
        if (size === undefined || size < end) missing.push(blob);
        else sizes.set(blob, size);
      }),
    );
    if (missing.length) {
      throw new FailedPreconditionError(
        `commit refused: ${missing.length} chunk(s) are not in the store (first: ${missing[0]}); upload them before committing`,
      );
    }
    if (damaged.length) {
      throw new FailedPreconditionError(
        `commit refused: ${damaged.length} chunk(s) in the store are damaged (first: ${damaged[0]}); upload them again before committing`,
      );
    }
    return sizes;
  }

  private async writeRecord(rec: VolumeRecord): Promise<void> {
    const { latestVersion: _v, fileCount: _f, totalBytes: _t, ...stored } = rec;
    await this.store.put(volumeRecordKey(rec.id), Buffer.from(JSON.stringify(stored)));
  }

  private withLock<T>(key: string, fn: () => Promise<T>): Promise<T> {
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

function info(rec: VolumeRecord): VolumeInfo {
  return {
    name: rec.name,
    id: rec.id,
    createdAtMs: rec.createdAtMs,
    latestVersion: rec.latestVersion,
    fileCount: rec.fileCount,
    totalBytes: rec.totalBytes,
    ephemeral: rec.ephemeral,
  };
}

function notFoundPath(volume: string, path: string, version: number): NotFoundError {
  return new NotFoundError(
    `"${path}" not found in volume "${volume}" at version ${version} (list it with: stowage volume ls ${volume} ${parentOf(path) || '/'})`,
  );
}

function findFile(m: Manifest, path: string): StoredFile | undefined {
  if (path === '') return undefined;
  let lo = 0;
  let hi = m.files.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const p = m.files[mid]!.path;
    if (p === path) return m.files[mid];
    if (p < path) lo = mid + 1;
    else hi = mid - 1;
  }
  return undefined;
}

function toEntry(f: StoredFile): FileEntry {
  return { path: f.path, type: FileType.FILE_TYPE_FILE, size: f.size, mode: f.mode, mtimeMs: f.mtimeMs, extents: extentsOf(f) };
}

function dirEntry(path: string, mtimeMs: number): FileEntry {
  return { path, type: FileType.FILE_TYPE_DIRECTORY, size: 0, mode: 0o755, mtimeMs, extents: [] };
}
