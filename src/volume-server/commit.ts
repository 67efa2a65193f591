/**
 * What one commit writes, in order (the catalogue holds the volume's lock and
 * the commit gate around it): the removals, copies and puts applied to drafts
 * of the directories they touch (draft.ts); the blobs they use checked
 * (blobs.ts); the new tree pages stored (those of a huge commit as it goes,
 * see below); the version record stored; and only
 * then the volume's new head in the index, in one transaction. See the
 * catalogue's header for what a crash at each step leaves.
 *
 * A commit of millions of files arrives in batches and is built as it
 * arrives: directories it is done with become pages, stored as they fill
 * SPILL_BYTES, so the server holds about a directory's entries at a time.
 */
import { InvalidArgumentError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { fileMode, normalizeFilePath } from '../common/validate.js';
import type { CopyOp, Extent, FileEntry, RemoveOp } from '../gen/stowage/v1/volume.js';
import { PageSink, emptyDirectory } from '../tree/edit.js';
import { MAX_PAGE_BYTES, pageTotals, type DirRoot } from '../tree/format.js';
import type { BlobKeeper } from './blobs.js';
import { Draft, type PutChange } from './draft.js';
import type { MetadataIndex } from './index/types.js';
import type { BlobStore } from './store/interface.js';
import type { TreeObjects } from './tree-objects.js';
import { FIRST_ENTRY_ID, STORE_FORMAT, versionKey, type VersionRecord, type VolumeRecord } from './versions.js';

/**
 * Small files get a content-index entry, so that their bytes are never sent
 * twice; below CONTENT_INDEX_MIN the entry would cost more than sending the
 * bytes again (a million 12-byte files would index 100 MB to save 12).
 */
const CONTENT_INDEX_MAX = 4 * 1024 * 1024;
const CONTENT_INDEX_MIN = 128;
/** The bytes a file's extents may take in its tree page: MAX_PAGE_BYTES less room for the entries beside it (a leaf is split at 256 KiB). */
const MAX_ENTRY_BYTES = MAX_PAGE_BYTES - 512 * 1024;
/** Pages a commit keeps in memory before it stores them (they are stored before its version record either way). */
const SPILL_BYTES = 4 * 1024 * 1024;

/** The header of a commit: everything but its puts, which may stream in batches. */
export interface CommitHeader {
  volume: string;
  removes: RemoveOp[];
  copies: CopyOp[];
  force: boolean;
  /** The client's id for this commit (empty: none); a retry with the same id lands once. */
  commitId?: string;
}

/** What a commit needs of the catalogue. */
export interface CommitContext {
  readonly store: BlobStore;
  readonly index: MetadataIndex;
  readonly trees: TreeObjects;
  readonly blobs: BlobKeeper;
  readonly log: Logger;
}

export interface Committed {
  version: VersionRecord;
  volume: VolumeRecord;
  /** Blobs and tree objects the new version references that garbage collection must not miss. */
  referenced: Iterable<string>;
}

/** Commits `header` and `puts` onto `head` (undefined: the volume has no version yet) as the next version. */
export async function commitVersion(
  ctx: CommitContext,
  rec: VolumeRecord,
  head: VersionRecord | undefined,
  header: CommitHeader,
  puts: AsyncIterable<FileEntry[]>,
  /** Called with the new version once its pages are stored, before its record is: where several servers share heads, this moves the head (shared.ts advance). */
  publish?: (version: VersionRecord) => Promise<void>,
): Promise<Committed> {
  const sink = new PageSink(ctx.trees);
  const now = Date.now();
  const base: DirRoot = head ? { hash: head.root, totals: pageTotals(await ctx.trees.page(head.root)) } : emptyDirectory(sink);
  const draft = new Draft(sink, base, head?.nextId ?? FIRST_ENTRY_ID, rec.name, now, header.force);
  for (const op of header.removes) await draft.remove(op);
  for (const op of header.copies) await draft.copy(op);
  const need = new Map<string, number>();
  const contents = new Map<string, Extent>();
  const interned = new Map<string, string>();
  let spilled = { objects: 0, bytes: 0 };
  for await (const batch of puts) {
    for (const e of batch) {
      const put = checkPut(e, now, interned);
      for (const x of put.file.extents) need.set(x.blob, Math.max(need.get(x.blob) ?? 0, x.offset + x.length));
      const one = put.file.extents.length === 1 ? put.file.extents[0]! : undefined;
      if (one && put.file.size <= CONTENT_INDEX_MAX && put.file.size >= CONTENT_INDEX_MIN) contents.set(one.hash, one);
      await draft.put(put);
    }
    await draft.spill();
    if (sink.bytes > SPILL_BYTES) {
      const w = await ctx.trees.writePages(sink.take());
      spilled = { objects: spilled.objects + w.objects, bytes: spilled.bytes + w.bytes };
    }
  }
  const sizes = await ctx.blobs.checkForCommit(need);
  for (const [blob, end] of need) sizes.set(blob, Math.max(sizes.get(blob) ?? 0, end));
  const root = await draft.finish();
  // The store first: once the index moves, the version must be durable.
  const last = await ctx.trees.write(sink, root.hash);
  const version: VersionRecord = {
    format: STORE_FORMAT,
    volumeId: rec.id,
    version: rec.latestVersion + 1,
    createdAtMs: now,
    root: root.hash,
    fileCount: root.totals.files,
    dirCount: root.totals.dirs,
    totalBytes: root.totals.bytes,
    nextId: draft.idsUsedUpTo,
  };
  if (header.commitId) version.commitId = header.commitId;
  await publish?.(version);
  await ctx.store.put(versionKey(rec.id, version.version), Buffer.from(JSON.stringify(version)));
  const volume: VolumeRecord = { ...rec, latestVersion: version.version, fileCount: version.fileCount, totalBytes: version.totalBytes };
  await ctx.index.putVersion(volume, version, { sizes, contents });
  ctx.log.debug(
    { volume: rec.name, version: version.version, files: version.fileCount, pages: spilled.objects + last.objects, pageBytes: spilled.bytes + last.bytes },
    'committed',
  );
  return { version, volume, referenced: [...need.keys(), ...sink.made] };
}

/** A put as the server accepts it: a valid path, valid hashes, extents that cover the size, a plain mode. */
export function checkPut(e: FileEntry, now: number, interned?: Map<string, string>): PutChange {
  const path = normalizeFilePath(e.path);
  // Its entry must fit in one tree page (tree/format.ts): a chunk stored as a blob of its own takes 40 bytes there, a part of a pack 79.
  let entryBytes = 0;
  for (const x of e.extents) entryBytes += x.blob === x.hash && x.offset === 0 ? 40 : 79;
  if (entryBytes > MAX_ENTRY_BYTES) {
    throw new InvalidArgumentError(
      `file "${path}" has ${e.extents.length} chunks, more than one file may have (about 400,000 chunks of its own: 3 TiB at the SDK's default chunk size of 8 MiB); put it with a larger chunkSize`,
    );
  }
  let total = 0;
  const intern = (h: string): string => {
    if (!interned) return h;
    const hit = interned.get(h);
    if (hit) return hit;
    interned.set(h, h);
    return h;
  };
  const extents = e.extents.map((x) => {
    if (!/^[0-9a-f]{64}$/.test(x.blob) || !/^[0-9a-f]{64}$/.test(x.hash)) {
      throw new InvalidArgumentError(`file "${path}": invalid extent hash (64 lowercase hex digits expected)`);
    }
    if (!Number.isSafeInteger(x.offset) || !Number.isSafeInteger(x.length) || x.offset < 0 || x.length < 0) {
      throw new InvalidArgumentError(`file "${path}": invalid extent offset or length`);
    }
    total += x.length;
    return { blob: intern(x.blob), offset: x.offset, length: x.length, hash: x.hash };
  });
  if (total !== e.size) {
    throw new InvalidArgumentError(`file "${path}": extents cover ${total} bytes but the size is ${e.size}`);
  }
  const mtimeMs = e.mtimeMs ? Math.floor(e.mtimeMs) : now;
  if (!Number.isSafeInteger(mtimeMs)) throw new InvalidArgumentError(`file "${path}": invalid mtime`);
  return { path, file: { kind: 'file', size: e.size, mode: fileMode(e.mode), mtimeMs, extents } };
}
