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
 *
 * With `shared` (several servers over one bucket, shared.ts), Redis holds
 * which volume a name means, each volume's record and its head, and the
 * index is a cache: a call refreshes the volume it names from Redis before it
 * answers (one round trip; a read of a version the index holds needs none),
 * so a commit acknowledged by any server is seen by the next call on every
 * server. A commit there takes the volume's commit lock in Redis, stores its
 * pages, moves the head by compare-and-swap, and only then stores its version
 * record; a server that finds a head whose record the store lacks stores it.
 * With Redis away, reads fall back to what the index holds (after one has
 * waited out Redis's timeout, the next ones wait only REDIS_DOWN_WAIT_MS),
 * and writes fail with UNAVAILABLE naming Redis.
 */
import { randomUUID } from 'node:crypto';
import pLimit from 'p-limit';
import { AlreadyExistsError, InvalidArgumentError, NotFoundError, UnavailableError, messageOf } from '../common/errors.js';
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
import type { SharedHeads, SharedVolume } from './shared.js';
import {
  parseVersionRecord,
  parseVolumeRecord,
  storedVolume,
  versionKey,
  volumeRecordKey,
  type Retention,
  type VersionRecord,
  type VolumeRecord,
} from './versions.js';

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
  /** Heads, names and commit locks shared with other servers over the same bucket (default: this server alone). */
  shared?: SharedHeads;
}

export const DEFAULT_RETENTION: Retention = { keepLast: 10, keepWithinMs: 24 * 3600_000 };
export const DEFAULT_GRACE_MS = 3600_000;
/** A shared commit lock lasts this long unless renewed (every third of it while the commit runs). */
const COMMIT_LOCK_MS = 10_000;
/** How long a commit waits for another server's commit to the same volume. */
const COMMIT_LOCK_WAIT_MS = 60_000;
/** After Redis failed to answer, reads wait for it at most REDIS_DOWN_WAIT_MS for this long (writes wait as usual, and fail). */
const REDIS_DOWN_SKIP_MS = 1000;
const REDIS_DOWN_WAIT_MS = 100;
/** A retried commit is found among this many newest versions (findCommit). */
const COMMIT_ID_DEPTH = 64;


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
  /** Set when several servers share this bucket's heads (see the header). */
  readonly shared: SharedHeads | undefined;
  /** Until when reads wait only briefly for Redis, after it failed to answer one (so that each read does not wait out its timeout). */
  private redisDownUntil = 0;

  constructor(
    readonly store: BlobStore,
    readonly index: MetadataIndex,
    private readonly log: Logger,
    opts: CatalogOptions = {},
  ) {
    this.ephemeralTimeoutMs = opts.ephemeralTimeoutMs ?? 5 * 60_000;
    this.retention = opts.retention ?? DEFAULT_RETENTION;
    this.graceMs = opts.graceMs ?? DEFAULT_GRACE_MS;
    this.shared = opts.shared;
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
  async init(retryMs = 5000): Promise<void> {
    await this.rebuilder.init(retryMs);
    if (this.shared && this.index.isSynced()) await this.seedShared();
  }

  /**
   * Volumes the store holds that Redis does not know (a server that ran alone
   * on this bucket before) are made known, with their heads, unless their
   * name or id is known there already. Each record is read again from the
   * store, so a volume deleted while this server was away stays deleted, and
   * the store is asked for versions newer than the index holds (committed
   * through other servers), so the head given is the newest: a commit on an
   * older one would write over a version record someone was told of.
   */
  private async seedShared(): Promise<void> {
    let seeded = 0;
    const known = new Set((await this.shared!.all(this.knownVersion)).map((v) => (JSON.parse(v.record) as { id: string }).id));
    for (let local of this.index.listVolumes()) {
      if (known.has(local.id)) continue;
      const stored = await this.store.get(volumeRecordKey(local.id)).then(
        (b) => parseVolumeRecord(volumeRecordKey(local.id), b),
        () => undefined,
      );
      if (!stored || stored.deletedAtMs !== undefined) continue;
      for (let v = local.latestVersion + 1; ; v++) {
        const key = versionKey(local.id, v);
        if ((await this.store.head(key)) === undefined) break;
        const newer = parseVersionRecord(key, await this.store.get(key));
        local = { ...local, latestVersion: v, fileCount: newer.fileCount, totalBytes: newer.totalBytes };
        await this.index.putVersion(local, newer);
      }
      const head = local.latestVersion > 0 ? this.index.getVersion(local.id, local.latestVersion) : undefined;
      if (await this.shared!.seed(stored.name, stored.id, JSON.stringify(storedVolume(stored)), head)) seeded++;
    }
    if (seeded) this.log.info({ seeded, heads: this.shared!.describe() }, 'volumes of the store made known to the other servers');
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
      const existing = this.shared ? await this.fresh(name).catch(notFoundAsUndefined) : this.index.getVolumeByName(name);
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
      if (this.shared && !(await this.shared.create(name, rec.id, JSON.stringify(storedVolume(rec))))) {
        // Another server made it first: ours was never visible, and its record in the store says so.
        await this.writeRecord({ ...rec, deletedAtMs: Date.now() });
        if (existOk) return this.info(await this.fresh(name));
        throw new AlreadyExistsError(`volume "${name}" already exists`);
      }
      await this.index.putVolume(rec);
      if (ephemeral) await this.heartbeat(name, rec.id);
      return this.info(rec);
    });
  }

  async getVolume(name: string): Promise<VolumeInfo> {
    return this.info(await this.fresh(name));
  }

  async listVolumes(includeEphemeral: boolean): Promise<VolumeInfo[]> {
    await this.freshAll();
    return this.index
      .listVolumes()
      .filter((v) => includeEphemeral || !v.ephemeral)
      .map((v) => this.info(v));
  }

  async deleteVolume(name: string): Promise<void> {
    const rec = await this.fresh(name, 'write');
    await this.withLock(rec.id, async () => {
      await this.writeRecord({ ...rec, deletedAtMs: Date.now() });
      if (this.shared) await this.shared.remove(name, rec.id);
      await this.index.removeVolume(rec.id);
      this.heartbeats.delete(rec.id);
    });
  }

  async renameVolume(name: string, newName: string): Promise<VolumeInfo> {
    checkName('volume', newName);
    const rec = await this.fresh(name, 'write');
    return this.withLock(`name:${newName}`, () =>
      this.withLock(rec.id, async () => {
        const taken = (): AlreadyExistsError => new AlreadyExistsError(`cannot rename "${name}": volume "${newName}" already exists`);
        if (this.index.getVolumeByName(newName)) throw taken();
        const now = this.index.getVolume(rec.id);
        if (!now) throw this.notFoundVolume(name);
        const renamed = { ...now, name: newName };
        if (this.shared) {
          const r = await this.shared.rename(name, newName, rec.id, JSON.stringify(storedVolume(renamed)));
          if (r === 'taken') throw taken();
          if (r === 'gone') throw this.notFoundVolume(name);
        }
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
    const rec0 = await this.fresh(name, 'write');
    return this.withLock(rec0.id, async () => {
      const rec = this.index.getVolume(rec0.id);
      if (!rec) throw this.notFoundVolume(name);
      const next: VolumeRecord = { ...rec };
      if (keepLast === 0 && keepWithinMs === 0) delete next.retention;
      else next.retention = { keepLast, keepWithinMs };
      if (this.shared && !(await this.shared.update(name, rec.id, JSON.stringify(storedVolume(next))))) throw this.notFoundVolume(name);
      await this.writeRecord(next);
      await this.index.putVolume(next);
      return this.info(next);
    });
  }

  /** The retention that applies to a volume. */
  retentionOf(rec: VolumeRecord): Retention {
    return rec.retention ?? this.retention;
  }

  /** Notes that an ephemeral volume's client is alive (in Redis when servers share heads: its client may send them to any). */
  async heartbeat(name: string, id?: string): Promise<void> {
    const volumeId = id ?? (await this.known(name)).id;
    const now = Date.now();
    if (this.shared) await this.shared.heartbeat(volumeId, now);
    else this.heartbeats.set(volumeId, now);
  }

  /** Deletes ephemeral volumes whose client stopped sending heartbeats. */
  async reapEphemeral(now = Date.now()): Promise<string[]> {
    const reaped: string[] = [];
    const volumes = (await this.listVolumes(true)).filter((v) => v.ephemeral);
    if (volumes.length === 0) return reaped;
    const heartbeats = this.shared ? await this.shared.heartbeats() : this.heartbeats;
    for (const v of volumes) {
      const last = heartbeats.get(v.id);
      if (last === undefined) {
        // Unknown since this server started: give its client a full timeout.
        if (this.shared) await this.shared.heartbeat(v.id, now);
        else this.heartbeats.set(v.id, now);
      } else if (now - last > this.ephemeralTimeoutMs) {
        await this.deleteVolume(v.name);
        reaped.push(v.name);
      }
    }
    if (reaped.length) this.log.info({ reaped }, 'deleted ephemeral volumes without heartbeat');
    return reaped;
  }

  async listVersions(name: string): Promise<VersionInfo[]> {
    return this.index.listVersions((await this.fresh(name)).id).map(versionInfo);
  }

  async getVersion(name: string, version: number): Promise<VersionInfo> {
    const rec = await this.fresh(name);
    if (version === 0 && rec.latestVersion === 0) {
      return { version: 0, createdAtMs: rec.createdAtMs, fileCount: 0, totalBytes: 0, root: '', dirCount: 0 };
    }
    return versionInfo(this.versionRecord(rec, version));
  }

  // ---- reads ---------------------------------------------------------------

  /** One version of a volume as reads see it (0: the latest). */
  async view(name: string, version: number): Promise<VersionView> {
    // A version the index holds is immutable: only the latest needs Redis.
    const local = this.shared && version > 0 ? this.index.getVolumeByName(name) : undefined;
    const rec = local && version <= local.latestVersion ? local : await this.fresh(name);
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
    const view = await this.view(name, token?.v ?? version);
    let any = false;
    for await (const b of listPath(this.trees, view, path, recursive, pageSize, token?.a, withExtents)) {
      any = true;
      yield { ...b, version: view.version };
    }
    if (!any) yield { entries: [], version: view.version };
  }

  async stat(name: string, path: string, version: number): Promise<{ version: number; entry: FileEntry }> {
    const view = await this.view(name, version);
    return { version: view.version, entry: await statPath(this.trees, view, path) };
  }

  async getFile(name: string, path: string, version: number, presign: boolean): Promise<{ version: number; entry: FileEntry; getUrls: Record<string, string> }> {
    normalizeFilePath(path);
    const view = await this.view(name, version);
    const entry = await fileAt(this.trees, view, path);
    const getUrls = presign ? await this.blobs.presignBlobs(entry.extents.map((e) => e.blob)) : {};
    return { version: view.version, entry, getUrls };
  }

  /** Tree objects of a volume's versions, checked, for clients that walk trees themselves. */
  async *treeObjects(name: string, hashes: string[]): AsyncGenerator<{ hash: string; data: Buffer }> {
    await this.known(name);
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
  async matchFiles(name: string, version: number, glob: string): Promise<MatchedFile[]> {
    return matchGlob(this.trees, await this.view(name, version), glob);
  }

  // ---- writes --------------------------------------------------------------

  async planUpload(name: string, blobs: string[], contents: string[], presign: boolean): Promise<UploadPlan> {
    await this.known(name);
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
    if (header.commitId !== undefined && header.commitId !== '' && !/^[\w-]{1,64}$/.test(header.commitId)) {
      throw new InvalidArgumentError(`invalid commit id ${quote(header.commitId)} (1 to 64 letters, digits, '_' or '-')`);
    }
    const rec0 = await this.fresh(header.volume, 'write');
    return this.withLock(rec0.id, () =>
      this.gate.pass(() =>
        this.withCommitLock(rec0.id, header.volume, async (token) => {
          const rec = this.shared ? await this.fresh(header.volume, 'write') : this.index.getVolume(rec0.id);
          if (!rec || rec.id !== rec0.id) throw this.notFoundVolume(header.volume);
          const landed = this.findCommit(rec, header.commitId);
          if (landed) return { version: landed.version, volume: this.info(rec) };
          const head = rec.latestVersion === 0 ? undefined : this.versionRecord(rec, rec.latestVersion);
          const publish = token === undefined ? undefined : (v: VersionRecord) => this.shared!.advance(rec.name, rec.id, rec.latestVersion, v, token);
          const ctx = { store: this.store, index: this.index, trees: this.trees, blobs: this.blobs, log: this.log };
          const done = await commitVersion(ctx, rec, head, header, puts, publish);
          if (this.shared) this.stored.add(versionKey(rec.id, done.version.version));
          this.gate.landed(done.referenced);
          return { version: done.version.version, volume: this.info(done.volume) };
        }),
      ),
    );
  }

  /** The version a commit with this id landed as, among the newest versions (a retry after a lost answer). */
  private findCommit(rec: VolumeRecord, commitId: string | undefined): VersionRecord | undefined {
    if (!commitId) return undefined;
    for (let v = rec.latestVersion; v > 0 && v > rec.latestVersion - COMMIT_ID_DEPTH; v--) {
      const vr = this.index.getVersion(rec.id, v);
      if (vr?.commitId === commitId) return vr;
    }
    return undefined;
  }

  /**
   * Runs `fn` holding the volume's commit lock in Redis (renewed while it
   * runs), waiting for another server's commit to the volume to finish; alone,
   * `fn` runs at once with no token.
   */
  private async withCommitLock<T>(id: string, name: string, fn: (token: string | undefined) => Promise<T>): Promise<T> {
    const shared = this.shared;
    if (!shared) return fn(undefined);
    const token = randomUUID();
    const until = Date.now() + COMMIT_LOCK_WAIT_MS;
    for (let pause = 5; !(await shared.lock(id, token, COMMIT_LOCK_MS)); pause = Math.min(pause * 2, 100)) {
      if (Date.now() > until) {
        throw new UnavailableError(`volume "${name}" has been committed to by another server for over ${COMMIT_LOCK_WAIT_MS / 1000} s; retry later`);
      }
      await new Promise((r) => setTimeout(r, pause * (0.5 + Math.random())));
    }
    let renewal: Promise<unknown> = Promise.resolve();
    const renew = setInterval(() => {
      // A renewal that fails (Redis away) lets the lock lapse: the head's compare-and-swap then refuses this commit.
      renewal = shared.lock(id, token, COMMIT_LOCK_MS).catch(() => undefined);
    }, COMMIT_LOCK_MS / 3);
    try {
      return await fn(token);
    } finally {
      clearInterval(renew);
      await renewal;
      await shared.unlock(id, token).catch(() => undefined);
    }
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

  /** Heads whose version record is known to be in the store (this server wrote or checked it). */
  private readonly stored = new Set<string>();

  /** The head's committer may have died before storing its record: the store must hold it before anyone builds on it. */
  private async ensureStored(head: VersionRecord): Promise<void> {
    const key = versionKey(head.volumeId, head.version);
    if (this.stored.has(key)) return;
    if ((await this.store.head(key)) === undefined) await this.store.put(key, Buffer.from(JSON.stringify(head)));
    if (this.stored.size > 10_000) this.stored.clear();
    this.stored.add(key);
  }

  /**
   * A volume's record, refreshed from Redis when servers share heads (see
   * the header). With Redis away, a read ('read') gets what the index holds;
   * a write fails.
   */
  private async fresh(name: string, use: 'read' | 'write' = 'read'): Promise<VolumeRecord> {
    if (!this.shared) return this.record(name);
    checkName('volume', name);
    const local = use === 'read' ? this.index.getVolumeByName(name) : undefined;
    let found: SharedVolume | undefined;
    try {
      const sync = this.shared.sync(name, this.knownVersion);
      if (local && Date.now() < this.redisDownUntil) {
        sync.catch(() => undefined);
        const late = await Promise.race([sync, new Promise<'late'>((r) => setTimeout(() => r('late'), REDIS_DOWN_WAIT_MS))]);
        if (late === 'late') return local;
        found = late;
      } else found = await sync;
    } catch (err) {
      if (!(err instanceof UnavailableError)) throw err;
      if (this.redisDownUntil === 0) this.log.warn({ err: messageOf(err) }, 'reads answer from the index while the shared heads are out of reach; writes fail until they are back');
      this.redisDownUntil = Date.now() + REDIS_DOWN_SKIP_MS;
      if (!local) throw err;
      return local;
    }
    if (this.redisDownUntil) this.log.info({ heads: this.shared.describe() }, 'the shared heads answer again');
    this.redisDownUntil = 0;
    if (!found) {
      const gone = this.index.getVolumeByName(name);
      if (gone) await this.index.removeVolume(gone.id);
      throw this.notFoundVolume(name);
    }
    return this.adopt(found, use);
  }

  /** The newest version of a volume the index holds (0: none), for the shared heads. */
  private readonly knownVersion = (id: string): number => this.index.getVolume(id)?.latestVersion ?? 0;

  /** A volume's record from the index, or from Redis when the index does not know it yet. */
  private async known(name: string): Promise<VolumeRecord> {
    return (this.shared ? this.index.getVolumeByName(name) : undefined) ?? this.fresh(name);
  }

  /** Refreshes every volume from Redis (listings), and forgets those it no longer has. */
  private async freshAll(): Promise<void> {
    if (!this.shared) return;
    let all: SharedVolume[];
    try {
      all = await this.shared.all(this.knownVersion);
    } catch (err) {
      if (!(err instanceof UnavailableError)) throw err;
      return;
    }
    const live = new Set<string>();
    for (const v of all) live.add((await this.adopt(v)).id);
    for (const v of this.index.listVolumes()) if (!live.has(v.id)) await this.index.removeVolume(v.id);
  }

  /**
   * Brings the index up to what Redis holds of one volume: its record, and
   * every version up to its head. Before a write (`use` 'write': a commit
   * builds on the head), the head's record must be in the store.
   */
  private async adopt(found: SharedVolume, use: 'read' | 'write' = 'read'): Promise<VolumeRecord> {
    const stored = JSON.parse(found.record) as { id: string };
    const parsed = parseVolumeRecord(volumeRecordKey(stored.id), Buffer.from(found.record));
    return this.withLock(`adopt:${parsed.id}`, async () => {
      const other = this.index.getVolumeByName(parsed.name);
      if (other && other.id !== parsed.id) await this.index.removeVolume(other.id);
      let rec = this.index.getVolume(parsed.id);
      if (!rec || JSON.stringify(storedVolume(rec)) !== JSON.stringify(storedVolume({ ...parsed, latestVersion: 0, fileCount: 0, totalBytes: 0 }))) {
        rec = { ...parsed, latestVersion: rec?.latestVersion ?? 0, fileCount: rec?.fileCount ?? 0, totalBytes: rec?.totalBytes ?? 0 };
        await this.index.putVolume(rec);
      }
      const head = found.head;
      if (!head || head.version <= rec.latestVersion) {
        if (use === 'write' && rec.latestVersion > 0) await this.ensureStored(this.versionRecord(rec, rec.latestVersion));
        return rec;
      }
      if (use === 'write') await this.ensureStored(head);
      for (let v = rec.latestVersion + 1; v < head.version; v++) {
        const key = versionKey(rec.id, v);
        const between = await this.store.get(key).then(
          (b) => parseVersionRecord(key, b),
          () => undefined,
        );
        if (between) await this.index.putVersion({ ...rec, latestVersion: v, fileCount: between.fileCount, totalBytes: between.totalBytes }, between);
      }
      const next = { ...rec, latestVersion: head.version, fileCount: head.fileCount, totalBytes: head.totalBytes };
      await this.index.putVersion(next, head);
      return next;
    });
  }

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

function notFoundAsUndefined(err: unknown): undefined {
  if (err instanceof NotFoundError) return undefined;
  throw err;
}

function versionInfo(v: VersionRecord): VersionInfo {
  return { version: v.version, createdAtMs: v.createdAtMs, fileCount: v.fileCount, totalBytes: v.totalBytes, root: v.root, dirCount: v.dirCount };
}
