/**
 * Garbage collection: versions that retention no longer keeps are removed,
 * then blobs and tree objects that no kept version of any volume references
 * are deleted from the store.
 *
 * 1. Retention: per volume, the latest version, the newest `keepLast` and
 *    every version younger than `keepWithinMs` are kept; the version records
 *    of the others are deleted from the store, then from the index.
 * 2. Mark: every page of every kept version is walked (a page reached before
 *    is not walked again, so versions sharing subtrees cost what they do not
 *    share), collecting tree objects and the blobs their files use. Blobs an
 *    upload planned are leased for the grace period and count as live. A
 *    tree object that cannot be read stops the collection before the sweep
 *    (retention has removed its versions by then): what it references cannot
 *    be known. Volumes the store has and the index does not hold (a damaged
 *    volume record) are marked from their records and kept whole.
 * 3. Sweep: the store is listed; an object not marked is deleted when it is
 *    older than the grace period (uploads in flight, pages of a commit not yet
 *    landed). Blobs a client left under incoming/, version records nothing
 *    keeps and manifests already converted go the same way.
 *
 * Safety while commits run on this server: deletions happen in batches, each
 * while no commit is between its start and its index update (CommitGate), and
 * skip what a commit that landed since the mark references; the index forgets
 * each object of a batch before the store deletes it, so a later commit
 * checks the store again instead of trusting the index, also when a delete
 * fails or the server dies between the two. A collection killed half way
 * leaves only unreferenced objects deleted (or forgotten and still stored,
 * for the next collection) and can simply be run again.
 */
import { FailedPreconditionError, isStowageError } from '../common/errors.js';
import { parseTreeObjectKey, type Page } from '../tree/format.js';
import type { VolumeCatalog } from './catalog.js';
import { parseManifest, parseManifestKey } from './manifest.js';
import { blobKey } from './store/interface.js';
import { parseVersionKey, parseVersionRecord, parseVolumeRecord, parseVolumeRecordKey, versionKey, type Retention, type VersionRecord } from './versions.js';

export interface GcOptions {
  /** Only this volume's versions go through retention (the sweep covers the whole store). */
  volume?: string;
  /** Undefined: the catalogue's grace period. 0: delete everything unreferenced now, leases too. */
  graceMs?: number;
  dryRun?: boolean;
}

export interface GcReport {
  versionsRemoved: number;
  blobsRemoved: number;
  blobBytesRemoved: number;
  treesRemoved: number;
  treeBytesRemoved: number;
  otherRemoved: number;
  objectsKeptByGrace: number;
  blobsLive: number;
  treesLive: number;
  seconds: number;
  dryRun: boolean;
  graceMs: number;
}

const BATCH = 256;

/** The versions retention keeps, of versions sorted oldest first. */
export function retained(versions: VersionRecord[], r: Retention, now: number): Set<number> {
  const keep = new Set<number>();
  const latest = versions.at(-1);
  if (latest) keep.add(latest.version);
  if (r.keepLast === 0 && r.keepWithinMs === 0) for (const v of versions) keep.add(v.version);
  for (const v of versions.slice(Math.max(0, versions.length - r.keepLast))) keep.add(v.version);
  if (r.keepWithinMs > 0) for (const v of versions) if (now - v.createdAtMs < r.keepWithinMs) keep.add(v.version);
  return keep;
}

/** Runs a collection; collections of one catalogue run one at a time. */
export function collectGarbage(catalog: VolumeCatalog, opts: GcOptions = {}): Promise<GcReport> {
  return catalog.withLock('gc', () => collect(catalog, opts));
}

async function collect(catalog: VolumeCatalog, opts: GcOptions): Promise<GcReport> {
  const started = performance.now();
  const index = catalog.index;
  const store = catalog.store;
  if (catalog.shared) {
    // Other servers' planned uploads, in-flight commits and cached blob sizes are not yet visible to a collection here.
    throw new FailedPreconditionError(
      `garbage collection is not yet supported while several servers share the heads in ${catalog.shared.describe()}: nothing is deleted; to collect, stop the other servers and run one server with --heads local`,
    );
  }
  if (!index.isSynced()) {
    throw new FailedPreconditionError(`garbage collection needs the index rebuilt from ${store.description} first (stowage volume rebuild-index)`);
  }
  const graceMs = opts.graceMs ?? catalog.graceMs;
  const dryRun = opts.dryRun ?? false;
  const now = Date.now();
  const report: GcReport = {
    versionsRemoved: 0,
    blobsRemoved: 0,
    blobBytesRemoved: 0,
    treesRemoved: 0,
    treeBytesRemoved: 0,
    otherRemoved: 0,
    objectsKeptByGrace: 0,
    blobsLive: 0,
    treesLive: 0,
    seconds: 0,
    dryRun,
    graceMs,
  };

  // 1. Retention.
  const dropped = new Map<string, Set<number>>();
  const volumes = opts.volume ? [await catalog.getVolume(opts.volume)] : await catalog.listVolumes(true);
  for (const info of volumes) {
    await catalog.withLock(info.id, async () => {
      const rec = index.getVolume(info.id);
      if (!rec) return;
      const versions = index.listVersions(rec.id);
      const keep = retained(versions, catalog.retentionOf(rec), now);
      const drop = versions.filter((v) => !keep.has(v.version)).map((v) => v.version);
      report.versionsRemoved += drop.length;
      dropped.set(rec.id, new Set(drop));
      if (dryRun || drop.length === 0) return;
      for (const v of drop) await store.delete(versionKey(rec.id, v));
      await index.removeVersions(rec.id, drop);
    });
  }

  // 2. Mark, from every version the index keeps (in a dry run, less those retention would remove).
  const watch = catalog.watchCommits();
  try {
    const trees = new Set<string>();
    const blobs = new Set<string>();
    const live = new Map<string, Set<number>>();
    for (const v of index.listVolumes()) {
      const versions = index.listVersions(v.id).filter((x) => !dropped.get(v.id)?.has(x.version));
      live.set(v.id, new Set(versions.map((x) => x.version)));
      for (const vr of versions) await mark(catalog, vr.root, trees, blobs);
    }
    const unheld = await markUnheld(catalog, trees, blobs);
    const leased = new Set<string>();
    if (graceMs > 0) for (const [hash, p] of index.listPlanned()) if (p.expiresAtMs > now) leased.add(hash);
    report.blobsLive = blobs.size;
    report.treesLive = trees.size;

    // 3. Sweep.
    const young = (modifiedMs: number): boolean => now - modifiedMs < graceMs;
    const pending: { key: string; kind: 'blob' | 'tree' | 'other'; hash?: string; size: number }[] = [];
    const flush = async (): Promise<void> => {
      const batch = pending.splice(0);
      if (batch.length === 0 || dryRun) {
        for (const o of batch) count(report, o.kind, o.size);
        return;
      }
      await catalog.exclusively(async () => {
        // Landed since the mark, or planned since the sweep began: kept.
        const leasedNow = (h: string): boolean => graceMs > 0 && (index.getPlanned(h)?.expiresAtMs ?? 0) > Date.now();
        const gone = batch.filter((o) => !o.hash || (!watch.has(o.hash) && !(o.kind === 'blob' && leasedNow(o.hash))));
        // The index forgets first: an object it lists must be in the store (a commit trusts it), while
        // one it has forgotten and a failed or killed delete left behind is only asked for again.
        await index.forgetBlobs(gone.filter((o) => o.kind === 'blob').map((o) => o.hash!));
        const deadTrees = gone.filter((o) => o.kind === 'tree').map((o) => o.hash!);
        await index.forgetTrees(deadTrees);
        catalog.trees.forget(deadTrees);
        await Promise.all(gone.map((o) => store.delete(o.key)));
        for (const o of gone) count(report, o.kind, o.size);
      });
    };
    const consider = async (o: { key: string; kind: 'blob' | 'tree' | 'other'; hash?: string; size: number; modifiedMs: number }): Promise<void> => {
      if (young(o.modifiedMs)) {
        report.objectsKeptByGrace++;
        return;
      }
      pending.push(o);
      if (pending.length >= BATCH) await flush();
    };
    for await (const o of store.scan('chunks/')) {
      const hash = o.key.slice(o.key.lastIndexOf('/') + 1);
      if (blobKey(hash) !== o.key || blobs.has(hash)) continue;
      if (leased.has(hash)) {
        report.objectsKeptByGrace++;
        continue;
      }
      await consider({ ...o, kind: 'blob', hash });
    }
    for await (const o of store.scan('trees/')) {
      const hash = parseTreeObjectKey(o.key);
      if (!hash || trees.has(hash)) continue;
      await consider({ ...o, kind: 'tree', hash });
    }
    for await (const o of store.scan('incoming/')) await consider({ ...o, kind: 'other' });
    // Records the rebuild could not read stay, as evidence, until someone looks at them.
    const damaged = new Set(index.listDamage().map((d) => d.key));
    for await (const o of store.scan('versions/')) {
      const k = parseVersionKey(o.key);
      if (!k || live.get(k.volumeId)?.has(k.version) || unheld.has(k.volumeId) || damaged.has(o.key)) continue;
      // A record of a live volume that the index lacks may be a commit landing now: the grace period covers it.
      await consider({ ...o, kind: 'other' });
    }
    // Every manifest of a volume the index holds was converted when the index was filled from this store format.
    for await (const o of store.scan('manifests/')) {
      const k = parseManifestKey(o.key);
      if (!k || unheld.has(k.volumeId) || damaged.has(o.key)) continue;
      await consider({ ...o, kind: 'other' });
    }
    await flush();
    if (!dryRun) {
      await index.clearPlanned([...index.listPlanned()].filter(([, p]) => p.expiresAtMs <= now).map(([h]) => h));
      await index.dropStaleContents();
    }
  } finally {
    watch.stop();
  }
  report.seconds = (performance.now() - started) / 1000;
  return report;
}

function count(r: GcReport, kind: 'blob' | 'tree' | 'other', size: number): void {
  if (kind === 'blob') {
    r.blobsRemoved++;
    r.blobBytesRemoved += size;
  } else if (kind === 'tree') {
    r.treesRemoved++;
    r.treeBytesRemoved += size;
  } else r.otherRemoved++;
}

/**
 * Volumes the store has and the index does not hold, though they are not
 * deleted: a volume record the rebuild could not read, or a name another
 * volume holds. Nothing of theirs is collected: every version record and
 * manifest of theirs that can be read is marked, and all of them are kept,
 * until someone sees to them (stowage volume damaged). Returns their ids.
 */
async function markUnheld(catalog: VolumeCatalog, trees: Set<string>, blobs: Set<string>): Promise<Set<string>> {
  const { index, store } = catalog;
  const unheld = new Set<string>();
  for await (const key of store.list('volumes/')) {
    const id = parseVolumeRecordKey(key);
    if (!id || index.getVolume(id)) continue;
    const rec = await readable(() => store.get(key).then((b) => parseVolumeRecord(key, b)));
    if (rec?.deletedAtMs === undefined) unheld.add(id);
  }
  for (const id of unheld) {
    for await (const key of store.list(`versions/${id}/`)) {
      if (!parseVersionKey(key)) continue;
      const root = await readable(() => store.get(key).then((b) => parseVersionRecord(key, b).root));
      if (root) await mark(catalog, root, trees, blobs);
    }
    for await (const key of store.list(`manifests/${id}/`)) {
      if (!parseManifestKey(key)) continue;
      const m = await readable(() => store.get(key).then((b) => parseManifest(key, b)));
      for (const f of m?.files ?? []) for (const [blob] of f.extents) blobs.add(blob);
    }
  }
  return unheld;
}

/** What `read` gives; undefined when what it reads is damaged (or gone since it was listed). */
async function readable<T>(read: () => Promise<T>): Promise<T | undefined> {
  try {
    return await read();
  } catch (err) {
    if (isStowageError(err, 'INTEGRITY') || isStowageError(err, 'NOT_FOUND')) return undefined;
    throw err;
  }
}

/** Marks every page below `root` and the blobs its files use; pages marked before are not walked again. */
async function mark(catalog: VolumeCatalog, root: string, trees: Set<string>, blobs: Set<string>): Promise<void> {
  const stack = [root];
  while (stack.length) {
    const hash = stack.pop()!;
    if (trees.has(hash)) continue;
    let page: Page;
    try {
      page = await catalog.trees.page(hash);
    } catch (err) {
      throw new FailedPreconditionError(
        `garbage collection stopped before deleting any blob or tree object: tree object ${hash} cannot be read (${(err as Error).message}); see stowage volume damaged`,
      );
    }
    trees.add(hash);
    if (page.kind === 'inner') for (const r of page.refs) stack.push(r.hash);
    else {
      for (const e of page.entries) {
        if (e.kind === 'dir') stack.push(e.tree);
        else for (const x of e.extents) blobs.add(x.blob);
      }
    }
  }
}
