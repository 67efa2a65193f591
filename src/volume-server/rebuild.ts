/**
 * Rebuilding the index from the store, and converting the manifest format.
 *
 * The store holds everything: volume records, one version record per version
 * (naming its root tree page), and the tree objects. A rebuild lists the
 * volume and version records and fills the index with what it lacks; it never
 * loads a tree. It is safe on a live index: it adds volumes and versions the
 * index lacks, forgets volumes the store says were deleted, and never moves a
 * head backwards past a version the index holds.
 *
 * Damage is isolated: a volume record or version record that does not parse
 * is skipped, recorded (`stowage volume damaged` lists it) and logged; every
 * other volume and version opens.
 *
 * Conversion: a volume written by stowage before store format 2 has one
 * manifest per version (manifest.ts). Each version without a version record
 * is converted in order: the difference between its file list and the one
 * before it is committed onto the previous version's tree (draft.ts), so that
 * files unchanged between versions keep their inode ids and share pages, as
 * if the versions had been committed in this format. Manifests stay in the
 * store until garbage collection removes them.
 */
import { IntegrityError, isStowageError, messageOf } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { fileMode } from '../common/validate.js';
import { PageSink, emptyDirectory } from '../tree/edit.js';
import { pageTotals, type DirRoot } from '../tree/format.js';
import { walk } from '../tree/read.js';
import { Draft } from './draft.js';
import type { DamageRecord, MetadataIndex } from './index/types.js';
import { manifestKey, parseManifest, parseManifestKey, type StoredFile } from './manifest.js';
import type { BlobStore } from './store/interface.js';
import type { TreeObjects } from './tree-objects.js';
import {
  FIRST_ENTRY_ID,
  STORE_FORMAT,
  parseVersionKey,
  parseVersionRecord,
  parseVolumeRecord,
  versionKey,
  type VersionRecord,
  type VolumeRecord,
} from './versions.js';

export interface RebuildResult {
  volumes: number;
  versions: number;
  skipped: DamageRecord[];
  converted: number;
}

type WithLock = <T>(key: string, fn: () => Promise<T>) => Promise<T>;

export class IndexRebuilder {
  private syncRetry: NodeJS.Timeout | undefined;
  private retrying: Promise<void> | undefined;
  private closed = false;

  constructor(
    private readonly store: BlobStore,
    private readonly index: MetadataIndex,
    private readonly trees: TreeObjects,
    private readonly log: Logger,
    private readonly withLock: WithLock,
  ) {}

  /** Rebuilds unless the index was filled from this store format before; retries while the store is unreachable. */
  async init(retryMs = 5000): Promise<void> {
    if (this.closed || (this.index.isSynced() && this.index.storeFormat() === STORE_FORMAT)) return;
    try {
      const result = await this.rebuild();
      if (result.volumes > 0) this.log.info({ volumes: result.volumes, versions: result.versions, converted: result.converted, skipped: result.skipped.length }, 'index rebuilt from the store');
    } catch (err) {
      if (this.closed) return;
      this.log.warn({ err: messageOf(err) }, 'cannot rebuild the index from the store yet; retrying');
      this.syncRetry = setTimeout(() => {
        this.syncRetry = undefined;
        this.retrying = this.init(retryMs).catch((e: unknown) => this.log.warn({ err: messageOf(e) }, 'index rebuild failed'));
      }, retryMs);
      this.syncRetry.unref();
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.syncRetry) clearTimeout(this.syncRetry);
    this.syncRetry = undefined;
    await this.retrying;
  }

  async rebuild(): Promise<RebuildResult> {
    const skipped: DamageRecord[] = [];
    const damaged = (d: Omit<DamageRecord, 'foundAtMs'>): void => {
      const rec = { ...d, foundAtMs: Date.now() };
      skipped.push(rec);
      this.log.warn({ key: d.key, reason: d.reason }, 'rebuild: cannot read this object of the store; skipped it (stowage volume damaged lists it)');
    };
    const records: VolumeRecord[] = [];
    for await (const key of this.store.list('volumes/')) {
      if (!key.endsWith('.json')) continue;
      try {
        records.push(parseVolumeRecord(key, await this.store.get(key)));
      } catch (err) {
        if (!isStowageError(err, 'INTEGRITY')) throw err;
        damaged({ kind: 'volume', key, reason: err.message });
      }
    }
    // Newest first, so that a name reused after a delete goes to the live volume.
    records.sort((a, b) => b.createdAtMs - a.createdAtMs);
    const claimed = new Set<string>();
    const result: RebuildResult = { volumes: 0, versions: 0, skipped, converted: 0 };
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
      await this.withLock(r.id, () => this.rebuildVolume(r, result, damaged));
      result.volumes++;
    }
    // What was found damaged before and is now read fine is no longer damaged.
    const now = new Set(skipped.map((d) => d.key));
    for (const d of this.index.listDamage()) if ((d.kind === 'volume' || d.kind === 'version') && !now.has(d.key)) await this.index.clearDamage(d.key);
    for (const d of skipped) await this.index.recordDamage(d);
    await this.index.setSynced();
    await this.index.setStoreFormat(STORE_FORMAT);
    return result;
  }

  private async rebuildVolume(r: VolumeRecord, result: RebuildResult, damaged: (d: Omit<DamageRecord, 'foundAtMs'>) => void): Promise<void> {
    const existing = this.index.getVolume(r.id);
    let rec: VolumeRecord = existing
      ? { ...existing, name: r.name, retention: r.retention }
      : { ...r, latestVersion: 0, fileCount: 0, totalBytes: 0 };
    if (!r.retention) delete rec.retention;
    const found = new Set<number>();
    for await (const key of this.store.list(`versions/${r.id}/`)) {
      const parsed = parseVersionKey(key);
      if (parsed) found.add(parsed.version);
    }
    const legacy: number[] = [];
    for await (const key of this.store.list(`manifests/${r.id}/`)) {
      const parsed = parseManifestKey(key);
      if (parsed && !found.has(parsed.version)) legacy.push(parsed.version);
    }
    result.versions += found.size + legacy.length;
    // The head the index holds stays unless a newer version is found.
    let headRecord = existing ? this.index.getVersion(r.id, existing.latestVersion) : undefined;
    const records: VersionRecord[] = [];
    for (const v of [...found].sort((a, b) => a - b)) {
      if (this.index.getVersion(r.id, v)) continue;
      const key = versionKey(r.id, v);
      try {
        records.push(parseVersionRecord(key, await this.store.get(key)));
      } catch (err) {
        if (!isStowageError(err, 'INTEGRITY')) throw err;
        damaged({ kind: 'version', key, volume: r.name, version: v, reason: err.message });
      }
    }
    for (const vr of records) if (!headRecord || vr.version > headRecord.version) headRecord = vr;
    const withHead = (h: VersionRecord | undefined): VolumeRecord =>
      h ? { ...rec, latestVersion: h.version, fileCount: h.fileCount, totalBytes: h.totalBytes } : { ...rec, latestVersion: 0, fileCount: 0, totalBytes: 0 };
    rec = withHead(headRecord);
    for (const vr of records) await this.index.putVersion(rec, vr);
    if (legacy.length > 0) {
      const converted = await this.convert(rec, legacy.sort((a, b) => a - b), damaged);
      result.converted += converted.count;
      if (converted.head && (!headRecord || converted.head.version > headRecord.version)) headRecord = converted.head;
      rec = withHead(headRecord);
    }
    await this.index.putVolume(rec);
  }

  /** Converts manifests of a volume, oldest first, each onto the version before it. */
  private async convert(
    rec: VolumeRecord,
    versions: number[],
    damaged: (d: Omit<DamageRecord, 'foundAtMs'>) => void,
  ): Promise<{ count: number; head: VersionRecord | undefined }> {
    let prevFiles = new Map<string, StoredFile>();
    let prev: VersionRecord | undefined;
    let count = 0;
    for (const v of versions) {
      // The version before this one: converted just now, or already in format 2.
      const before = prev && prev.version < v ? prev : this.latestBelow(rec.id, v);
      if (before !== prev) prevFiles = await this.filesOf(rec, before);
      const key = manifestKey(rec.id, v);
      let files: StoredFile[];
      let createdAtMs: number;
      try {
        const m = parseManifest(key, await this.store.get(key));
        files = m.files;
        createdAtMs = m.createdAtMs;
      } catch (err) {
        if (!isStowageError(err, 'INTEGRITY')) throw err;
        damaged({ kind: 'version', key, volume: rec.name, version: v, reason: err.message });
        continue;
      }
      const sink = new PageSink(this.trees);
      const base: DirRoot = before ? { hash: before.root, totals: pageTotals(await this.trees.page(before.root)) } : emptyDirectory(sink);
      const draft = new Draft(sink, base, before?.nextId ?? FIRST_ENTRY_ID, rec.name, createdAtMs, true);
      const current = new Map(files.map((f) => [f.path, f]));
      let root: DirRoot;
      try {
        for (const path of prevFiles.keys()) if (!current.has(path)) await draft.remove({ path, recursive: false });
        for (const f of files) {
          const old = prevFiles.get(f.path);
          if (old && sameStored(old, f)) continue;
          await draft.put({
            path: f.path,
            file: {
              kind: 'file',
              size: f.size,
              mode: fileMode(f.mode),
              mtimeMs: Math.floor(f.mtimeMs),
              extents: f.extents.map(([blob, offset, length, hash]) => ({ blob, offset, length, hash })),
            },
          });
        }
        root = await draft.finish();
      } catch (err) {
        // A store that cannot be reached stops the rebuild (it is retried); a manifest that cannot be made into a tree is damage.
        if (isStowageError(err, 'UNAVAILABLE') || isStowageError(err, 'RESOURCE_EXHAUSTED')) throw err;
        damaged({ kind: 'version', key, volume: rec.name, version: v, reason: `cannot be converted: ${messageOf(err)}` });
        continue;
      }
      await this.trees.write(sink, root.hash);
      const vr: VersionRecord = {
        format: STORE_FORMAT,
        volumeId: rec.id,
        version: v,
        createdAtMs,
        root: root.hash,
        fileCount: root.totals.files,
        dirCount: root.totals.dirs,
        totalBytes: root.totals.bytes,
        nextId: draft.idsUsedUpTo,
      };
      await this.store.put(versionKey(rec.id, v), Buffer.from(JSON.stringify(vr)));
      const sizes = new Map<string, number>();
      for (const f of files) for (const [blob, offset, length] of f.extents) sizes.set(blob, Math.max(sizes.get(blob) ?? 0, offset + length));
      // The volume shows each converted version as it lands, never a half one.
      const head = rec.latestVersion > v ? rec : { ...rec, latestVersion: v, fileCount: vr.fileCount, totalBytes: vr.totalBytes };
      await this.index.putVersion(head, vr, { sizes, contents: new Map() });
      prev = vr;
      prevFiles = current;
      count++;
    }
    if (count) this.log.info({ volume: rec.name, versions: count }, 'converted versions from the manifest format');
    return { count, head: prev };
  }

  /** The newest version of a volume below `v` that the index holds. */
  private latestBelow(volumeId: string, v: number): VersionRecord | undefined {
    let best: VersionRecord | undefined;
    for (const r of this.index.listVersions(volumeId)) if (r.version < v && (!best || r.version > best.version)) best = r;
    return best;
  }

  /** The file list of a format-2 version (to diff a manifest against). */
  private async filesOf(rec: VolumeRecord, v: VersionRecord | undefined): Promise<Map<string, StoredFile>> {
    const out = new Map<string, StoredFile>();
    if (!v) return out;
    for await (const w of walk(this.trees, v.root)) {
      if (w.entry.kind !== 'file') continue;
      const e = w.entry;
      out.set(w.path, { path: w.path, size: e.size, mode: e.mode, mtimeMs: e.mtimeMs, extents: e.extents.map((x) => [x.blob, x.offset, x.length, x.hash]) });
    }
    if (out.size === 0 && v.fileCount > 0) throw new IntegrityError(`version ${v.version} of volume "${rec.name}" lists no files but records ${v.fileCount}`);
    return out;
  }
}

function sameStored(a: StoredFile, b: StoredFile): boolean {
  return (
    a.size === b.size &&
    fileMode(a.mode) === fileMode(b.mode) &&
    Math.floor(a.mtimeMs) === Math.floor(b.mtimeMs) &&
    a.extents.length === b.extents.length &&
    a.extents.every((x, i) => x.every((y, j) => y === b.extents[i]![j]))
  );
}
