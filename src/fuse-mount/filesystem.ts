/**
 * VolumeFilesystem: one version of a volume as a read-only file tree, the
 * layer between the FUSE callbacks (mount.ts) and the SDK's transport.
 *
 * Design.
 * - The version is pinned at load: its recursive listing (with every file's
 *   extents) becomes a VersionTree, and no later call asks the server about
 *   metadata. getattr, readdir, open and statfs are answered from memory.
 * - A read of [position, position+length) maps to the extents that overlap it
 *   (found by binary search over their start offsets); each extent's bytes come from the
 *   host's ChunkCache under the extent's hash. On a miss the cache calls our
 *   `load`, which reads the extent's byte range of its blob (a presigned URL
 *   when granted, else the server's stream) without hashing it: the cache
 *   verifies loaded bytes before it stores or returns them, and merges
 *   concurrent loads of one chunk, so eight readers of a cold chunk cost one
 *   transfer. Bytes that fail that check are reported to the server as
 *   damaged (as BlobTransport.readExtent does) and the read fails with EIO.
 * - The tree, the transport and the cache are shared by every open file. An
 *   open file handle is a number of our own (not the inode: two opens of one
 *   file are two readers), mapping to the file and its prefetch stream
 *   (prefetcher.ts), dropped at release.
 * - Prefetch: each read is also shown to the handle's stream, which fetches
 *   extents ahead of a sequential reader into the same cache with the same
 *   `extentBytes`; the read itself still gets every extent it touches, so a
 *   failed or stale prefetch costs nothing but the transfer.
 * - Packs: a miss on an extent of a blob that packs many small files goes
 *   through PackReads (pack-reads.ts), which turns a walk through a directory
 *   of small files into a few ranged GETs of the pack and fills the cache with
 *   the neighbours it fetched; a small file read at random still costs one GET
 *   of its own bytes.
 * - Errors are thrown as they come (StowageError from the SDK, FsError for
 *   ENOENT and EROFS here); mount.ts turns them into errno in one place
 *   (errno.ts).
 *
 * - Reload (reload(), on SIGHUP): the newest version is listed and its tree
 *   (built from the current one, so unchanged paths keep their inode
 *   numbers: tree.ts) replaces the current one in one assignment; every
 *   callback is synchronous over the tree, so a readdir or getattr sees one
 *   tree or the other, never a mix. An open handle keeps the FileNode (the
 *   entry and extents) it opened, so it reads the version it opened to the
 *   end; new lookups and opens see the new tree. What the kernel has cached
 *   about changed paths is dealt with by mount.ts and kernel-refresh.ts, which
 *   need from here: the paths the kernel may know (every path getattr was
 *   asked about: each kernel lookup goes through it), and the retiring
 *   protocol — a changed or removed file is unlinked through the mount, which
 *   this layer allows for those paths only while a reload runs, and libfuse
 *   renames one that is still open to a `.fuse_hidden…` name (this layer
 *   answers getattr for it with the old node until its last close unlinks it).
 *
 * - Writes (a writable mount only): the changes made through the mount are
 *   staged on local disk (staging.ts), laid over the tree: lookups, listings
 *   and opens here ask the staging first; what it covers a reload leaves
 *   alone in the kernel (its view of those paths is already right). The write
 *   callbacks themselves go to the staging (writable-ops.ts).
 */
import { BlobTransport, type TransferMode } from '../client/blob-transport.js';
import type { Connection } from '../client/connection.js';
import { checkedListing } from '../client/server-answers.js';
import { IntegrityError } from '../common/errors.js';
import { FailedPreconditionError } from '../common/errors.js';
import { checkName } from '../common/validate.js';
import type { FileEntry } from '../gen/stowage/v1/volume.js';
import { BlobUrls } from './blob-urls.js';
import { EISDIR, ENOENT, EROFS, FsError } from './errno.js';
import { extentStarts, lastAtOrBefore } from './extents.js';
import { PackReads, type PackReadOptions } from './pack-reads.js';
import { Prefetcher, type FilePrefetch, type PrefetchOptions } from './prefetcher.js';
import { FIRST_STAGED_HANDLE, Staging, isStaged, type ViewNode } from './staging.js';
import type { ChunkCache } from './types.js';
import { VersionTree, changedPaths, type DirNode, type FileNode, type Node, type NodeAttr } from './tree.js';

export type { NodeAttr } from './tree.js';

export interface VolumeFilesystemOptions {
  connection: Connection;
  volume: string;
  /** The version to serve; the latest at load time when left out. */
  version?: number;
  /** The host's chunk cache; the filesystem owns it from here on (close() closes it). */
  cache: ChunkCache;
  transfer?: TransferMode;
  /** Read-ahead of sequential readers (prefetcher.ts); `maxWindow: 0` turns it off. */
  prefetch?: PrefetchOptions;
  /** Read-ahead over the small files packed into one blob (pack-reads.ts); `maxWindow: 0` turns it off. */
  packReads?: PackReadOptions;
  /** Makes the filesystem writable, staging changes in this directory (its own; made here). */
  stagingDir?: string;
}

export interface FsStats {
  files: number;
  bytes: number;
  nodes: number;
}

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const O_ACCMODE = 0o3;
const O_TRUNC = 0o1000;
/** Permission bits of a file stored without any. */
const DEFAULT_FILE_MODE = 0o644;
const NO_WRITE = ~0o222;
/** fuse-native passes a handle as 32 bits; ours stay positive int32, below the staging's. */
const MAX_HANDLE = FIRST_STAGED_HANDLE - 1;

/** Paths remembered as possibly known to the kernel; beyond this, every path counts as known. */
const MAX_SEEN = 1 << 20;
/** libfuse renames an unlinked file that is still open to `<dir>/.fuse_hidden<16 hex>`. */
const HIDDEN_PREFIX = '.fuse_hidden';

/** What a reload did, and what the kernel must be told about it (kernel-refresh.ts). */
export interface ReloadPlan {
  from: number;
  to: number;
  added: number;
  changed: number;
  removed: number;
  /** Files the kernel may know under their old identity, to unlink through the mount (allowed until endReload()). */
  unlink: string[];
  /** Paths whose cached lookup (positive or negative) the kernel must redo. */
  revalidate: string[];
}

interface OpenFile {
  file: FileNode;
  prefetch: FilePrefetch | undefined;
}

export class VolumeFilesystem {
  private readonly handles = new Map<number, OpenFile>();
  private lastHandle = 0;
  /** Paths getattr was asked about (a kernel lookup of each went through it), unless `seenAll`. */
  private readonly seen = new Set<string>();
  private seenAll = false;
  /** Files a running reload lets the mount unlink, with their old node. */
  private readonly retiring = new Map<string, FileNode>();
  /** Old files libfuse renamed to a hidden name while still open, until their last close unlinks them. */
  private readonly hidden = new Map<string, FileNode>();
  readonly packs: PackReads;
  /** Paths a running reload makes the kernel look up again, which must not be created meanwhile (endReload() clears). */
  private revalidating = new Set<string>();
  private reloading: Promise<unknown> = Promise.resolve();

  private constructor(
    readonly volume: string,
    private current: VersionTree,
    private readonly conn: Connection,
    private readonly cache: ChunkCache,
    private readonly transport: BlobTransport,
    private readonly urls: BlobUrls,
    /** Undefined when prefetching is off. */
    readonly prefetcher: Prefetcher | undefined,
    /** The changes of a writable mount; undefined when read-only. */
    readonly staging: Staging | undefined,
    packReads: PackReadOptions | undefined,
  ) {
    this.packs = new PackReads(entriesOf(current), cache, (entry, index, offset, length) => this.readBlob(entry, index, offset, length), packReads);
  }

  /** Lists the version (NOT_FOUND when the volume or version does not exist) and builds its tree. */
  static async load(opts: VolumeFilesystemOptions): Promise<VolumeFilesystem> {
    const volume = checkName('volume', opts.volume);
    const conn = opts.connection;
    const { version, entries, createdAtMs } = await listVersion(conn, volume, opts.version ?? 0);
    const transport = new BlobTransport(conn, opts.transfer);
    const tree = new VersionTree(version, entries, createdAtMs);
    const prefetcher = opts.prefetch?.maxWindow === 0 ? undefined : new Prefetcher((hash) => opts.cache.isHot(hash), opts.prefetch);
    let fs: VolumeFilesystem | undefined;
    const staging = opts.stagingDir ? await Staging.create(opts.stagingDir, () => fs!.current, { volume }) : undefined;
    fs = new VolumeFilesystem(volume, tree, conn, opts.cache, transport, new BlobUrls(conn, transport), prefetcher, staging, opts.packReads);
    return fs;
  }

  /** The tree served now (replaced by reload()). */
  get tree(): VersionTree {
    return this.current;
  }

  get version(): number {
    return this.current.version;
  }

  /**
   * Lists the newest version and serves it from now on (nothing changes when
   * it is the one served). Reloads run one at a time. The caller tells the
   * kernel (plan.unlink, plan.revalidate), then calls endReload().
   */
  reload(): Promise<ReloadPlan> {
    const next = this.reloading.then(async () => {
      const before = this.current;
      const listed = await listVersion(this.conn, this.volume, 0);
      const plan: ReloadPlan = { from: before.version, to: listed.version, added: 0, changed: 0, removed: 0, unlink: [], revalidate: [] };
      if (listed.version === before.version) return plan;
      if (listed.version < before.version) {
        throw new FailedPreconditionError(`the newest version of ${this.volume} is ${listed.version}, older than the mounted ${before.version}`);
      }
      const after = new VersionTree(listed.version, listed.entries, listed.createdAtMs, before);
      // From here to the end of this function nothing awaits: the swap and the retiring set are one step.
      this.current = after;
      this.packs.index(entriesOf(after));
      const changes = changedPaths(before, after);
      plan.added = changes.added.length;
      plan.changed = changes.changed.length;
      plan.removed = changes.removed.length;
      // A path the staging covers shows what the staging says, before and after: the kernel's view of it stays right.
      const known = (path: string): boolean => (this.seenAll || this.seen.has(path)) && !this.staging?.covers(path);
      const parentOf = (path: string): string => path.slice(0, Math.max(1, path.lastIndexOf('/')));
      const retire = (n: Node): void => {
        if (n.kind !== 'file' || !known(n.path)) return;
        this.retiring.set(n.path, n);
        plan.unlink.push(n.path);
      };
      for (const n of changes.removed) {
        retire(n);
        // A removed directory whose parent stays: its lookup is redone (ENOENT), which drops what is below it too.
        if (n.kind === 'dir' && known(n.path) && after.find(parentOf(n.path))) plan.revalidate.push(n.path);
      }
      for (const { before: b } of changes.changed) {
        if (b.kind === 'file') retire(b);
        else if (known(b.path)) plan.revalidate.push(b.path);
      }
      // A path the kernel remembers as missing: only the topmost added ones can have been looked up.
      for (const n of changes.added) if (known(n.path) && before.find(parentOf(n.path))) plan.revalidate.push(n.path);
      // A directory in both whose attributes changed (entries below it added or removed).
      for (const n of after.nodes()) {
        const b = n.kind === 'dir' && n !== after.root ? before.find(n.path) : undefined;
        if (b?.kind === 'dir' && n.kind === 'dir' && b.ino === n.ino && (b.subdirs !== n.subdirs || b.mtimeMs !== n.mtimeMs) && known(n.path)) {
          plan.revalidate.push(n.path);
        }
      }
      plan.unlink.sort();
      plan.revalidate.sort();
      this.revalidating = new Set(plan.revalidate);
      return plan;
    });
    this.reloading = next.catch(() => undefined);
    return next;
  }

  /** The kernel was told about the last reload: the files it did not unlink are no longer unlinkable. */
  endReload(): void {
    this.retiring.clear();
    this.revalidating = new Set();
  }

  /** Whether a running reload is making the kernel look `path` up again (its O_CREAT|O_EXCL open must create nothing). */
  beingRevalidated(path: string): boolean {
    return this.revalidating.has(path);
  }

  stats(): FsStats {
    const t = this.current;
    return { files: t.files, bytes: t.bytes, nodes: t.size };
  }

  getattr(path: string): NodeAttr {
    if (!this.seenAll) {
      this.seen.add(path);
      if (this.seen.size > MAX_SEEN) {
        this.seenAll = true;
        this.seen.clear();
      }
    }
    const n = this.find(path) ?? this.hidden.get(path);
    if (!n) throw new FsError(ENOENT, `no such file in version ${this.current.version}: ${path}`);
    return this.attrOf(n);
  }

  /**
   * unlink(2) through the mount: refused (EROFS) except for a file a running
   * reload retires, and for the hidden name of a retired file still open when
   * libfuse unlinks it at its last close.
   */
  unlink(path: string): void {
    if (this.retiring.delete(path) || this.hidden.delete(path)) return;
    if (this.staging) return this.staging.unlink(path);
    throw new FsError(EROFS, `${path}: the mount is read-only`);
  }

  /** rename(2) through the mount: only libfuse hiding a retired file that is still open. */
  rename(from: string, to: string): void {
    const node = this.retiring.get(from);
    if (node && to.slice(to.lastIndexOf('/') + 1).startsWith(HIDDEN_PREFIX)) {
      this.retiring.delete(from);
      this.hidden.set(to, node);
      return;
    }
    if (this.staging) return this.staging.rename(from, to);
    throw new FsError(EROFS, `${from}: the mount is read-only`);
  }

  /** Names in a directory with their attributes, '.' and '..' first. */
  readdir(path: string): { names: string[]; attrs: NodeAttr[] } {
    if (this.staging) {
      const parent = path === '/' ? path : path.slice(0, Math.max(1, path.lastIndexOf('/')));
      const entries = this.staging.list(path);
      const self = this.lookup(path);
      return {
        names: ['.', '..', ...entries.map((e) => e.name)],
        attrs: [this.attrOf(self), this.attrOf(this.find(parent) ?? self), ...entries.map((e) => this.attrOf(e.node))],
      };
    }
    const dir = this.current.dir(path);
    const names = ['.', '..'];
    const attrs = [attrOf(dir), attrOf(dir.parent ?? dir)];
    const prefix = dir.path === '/' ? '/' : `${dir.path}/`;
    for (const name of dir.names) {
      names.push(name);
      attrs.push(attrOf(this.current.lookup(prefix + name)));
    }
    return { names, attrs };
  }

  /** Checks that `path` may be opened with `flags`; returns a new file handle (release() drops it). */
  open(path: string, flags: number): number {
    const node = this.lookup(path);
    if ((flags & O_ACCMODE) !== 0 || (flags & O_TRUNC) !== 0) {
      // A writable mount's writing opens go to its staging (writable-ops.ts).
      throw new FsError(EROFS, `${path}: the mount is read-only`);
    }
    if (node.kind === 'staged') return this.staging!.openForRead(node);
    if (node.kind === 'dir' || node.kind === 'staged-dir') throw new FsError(EISDIR, `${path} is a directory`);
    const fh = this.newHandle();
    const entry = node.entry;
    this.handles.set(fh, { file: node, prefetch: this.prefetcher?.open(entry, (i) => this.extentBytes(entry, i)) });
    return fh;
  }

  /** The handle was closed by its last user: its prefetch stream stops. */
  release(fh: number): void {
    this.handles.get(fh)?.prefetch?.release();
    this.handles.delete(fh);
  }

  /** access(2): write access is never granted; the rest is (only the mounting user reaches the mount). */
  access(path: string, mode: number): void {
    if (!this.hidden.has(path)) this.lookup(path);
    const W_OK = 2;
    if (mode & W_OK && !this.staging) throw new FsError(EROFS, `${path}: the mount is read-only`);
  }

  /**
   * Copies the file's bytes at [position, position+length) into `into` and
   * returns how many were copied: fewer at the end of the file, 0 past it.
   * `fh`, the handle read through, feeds that handle's prefetch stream.
   */
  async read(file: FileNode, position: number, length: number, into: Buffer, fh = 0): Promise<number> {
    const end = Math.min(file.size, position + Math.min(length, into.length));
    if (position >= end) return 0;
    const { extents } = file.entry;
    const starts = extentStarts(file.entry);
    // A FUSE read is at most 128 KiB: it spans one extent, or two at a boundary.
    const wanted: { index: number; from: number; to: number }[] = [];
    for (let i = lastAtOrBefore(starts, position); i < extents.length && starts[i]! < end; i++) {
      wanted.push({ index: i, from: Math.max(0, position - starts[i]!), to: Math.min(extents[i]!.length, end - starts[i]!) });
    }
    const fetching = Promise.all(wanted.map((w) => this.extentBytes(file.entry, w.index)));
    // After the read's own gets have started, so that its loads go first.
    const open = this.handles.get(fh);
    if (open?.file === file) open.prefetch?.read(position, end - position);
    const parts = await fetching;
    let copied = 0;
    wanted.forEach((w, i) => {
      copied += parts[i]!.copy(into, copied, w.from, w.to);
    });
    return copied;
  }

  /**
   * The file node for an open handle (falling back to the path a caller gave):
   * the node it opened, whatever the path is called now (a reload may have
   * replaced it, or libfuse renamed it to a hidden name).
   */
  fileFor(fh: number, path: string): FileNode {
    const byHandle = this.handles.get(fh)?.file;
    const node: ViewNode = byHandle ?? this.lookup(path);
    if (node.kind !== 'file') throw new FsError(EISDIR, `${path} is not a committed file`);
    return node;
  }

  async close(): Promise<void> {
    for (const h of this.handles.values()) h.prefetch?.release();
    this.handles.clear();
    await this.staging?.close();
    await this.prefetcher?.close();
    await this.packs.settled();
    await this.cache.close();
  }

  /** The node at a path, with the staging over the tree when there is one. */
  private find(path: string): ViewNode | undefined {
    return this.staging ? this.staging.find(path) : this.current.find(path);
  }

  private lookup(path: string): ViewNode {
    const n = this.find(path);
    if (!n) throw new FsError(ENOENT, `no such file in version ${this.current.version}: ${path}`);
    return n;
  }

  /** What stat says; in a writable mount every file and directory shows its owner's write bit, and directories one link. */
  private attrOf(n: ViewNode): NodeAttr {
    if (!this.staging) return attrOf(n as Node);
    const a = isStaged(n) ? this.staging.attr(n) : attrOf(n);
    return { ...a, mode: a.mode | 0o200, nlink: n.kind === 'dir' ? 1 : a.nlink };
  }

  /** A handle number not in use (they are reused only after 2^30 opens). */
  private newHandle(): number {
    do {
      this.lastHandle = this.lastHandle >= MAX_HANDLE ? 1 : this.lastHandle + 1;
    } while (this.handles.has(this.lastHandle));
    return this.lastHandle;
  }

  /** Bytes [offset, offset + length) of the blob of extent `index` of `entry`, unverified. */
  private async readBlob(entry: FileEntry, index: number, offset: number, length: number): Promise<Buffer> {
    const url = await this.urls.forExtent(entry, index);
    return this.transport.read(entry.extents[index]!.blob, offset, length, url);
  }

  /** The verified bytes of one extent, through the cache (a miss goes through the pack read-ahead). */
  private async extentBytes(entry: FileEntry, index: number): Promise<Buffer> {
    const e = entry.extents[index]!;
    try {
      return await this.cache.get(e.hash, e.length, () => this.packs.load(entry, index));
    } catch (err) {
      if (err instanceof IntegrityError) await this.transport.reportDamaged(e.blob);
      throw err;
    }
  }
}

/** A version's recursive listing (0: the newest) and when it was committed. */
async function listVersion(conn: Connection, volume: string, version: number): Promise<{ version: number; entries: FileEntry[]; createdAtMs: number }> {
  const call = conn.volumes.listFiles({ volume, path: '', recursive: true, version, pageSize: 0, pageToken: '', withoutExtents: false });
  const entries: FileEntry[] = [];
  let listed = 0;
  for await (const batch of conn.stream(call)) {
    listed = batch.version;
    entries.push(...batch.entries);
  }
  const created = await conn.unary(conn.volumes.listVersions.bind(conn.volumes), { name: volume });
  const createdAtMs = created.versions.find((v) => v.version === listed)?.createdAtMs ?? Date.now();
  return { version: listed, entries: checkedListing(entries, '', true, `the listing of volume "${volume}"`), createdAtMs };
}

function* entriesOf(tree: VersionTree): Iterable<FileEntry> {
  for (const n of tree.nodes()) if (n.kind === 'file') yield n.entry;
}

function attrOf(n: Node): NodeAttr {
  if (n.kind === 'dir') return dirAttr(n);
  return {
    ino: n.ino,
    mode: S_IFREG | ((n.mode & 0o777 || DEFAULT_FILE_MODE) & NO_WRITE),
    nlink: 1,
    size: n.size,
    blocks: Math.ceil(n.size / 512),
    mtimeMs: n.mtimeMs,
  };
}

function dirAttr(d: DirNode): NodeAttr {
  return { ino: d.ino, mode: S_IFDIR | 0o555, nlink: 2 + d.subdirs, size: 4096, blocks: 8, mtimeMs: d.mtimeMs };
}
