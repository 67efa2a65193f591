/**
 * VolumeFilesystem: one version of a volume as a read-only file tree, the
 * layer between the FUSE callbacks (mount.ts) and the SDK's transport.
 *
 * Design.
 * - The version is pinned at load (GetVersion: its root page and totals) and
 *   loaded lazily: a lookup walks from the root a name at a time, a listing
 *   reads the pages of one directory (tree.ts), through the mount's
 *   MountTreeSource, which fetches pages as they are reached, checks each
 *   against its hash and keeps them within --tree-cache-size (tree-source.ts).
 *   Mounting a volume of a million files reads one page; a stat of a deep
 *   file reads the pages on its path; `find` over all of it holds at most the
 *   bounded caches. A damaged or missing page fails the lookups that need it
 *   with EIO, logged with the path (mount.ts); the rest of the tree still works.
 * - Every callback captures the tree it starts with (`this.current`) and
 *   uses it throughout, so that it sees one version or the other across a
 *   reload, never a mix, though it may await page fetches.
 * - A read of [position, position+length) maps to the extents that overlap it
 *   (found by binary search over their start offsets); each extent's part is
 *   copied by the ExtentReader (read/extent-reader.ts) from the host's chunk
 *   cache straight into the buffer FUSE handed the read. On a miss the cache's
 *   fetch threads fetch the extent (or a run of its pack), verify it and
 *   write its file, and concurrent misses of one chunk are merged, so eight
 *   readers of a cold chunk cost one transfer. Bytes that fail their hash are
 *   reported to the server as damaged and the read fails with EIO.
 * - The tree source, the transport and the cache are shared by every open
 *   file. An open file handle is a number of our own (not the inode: two
 *   opens of one file are two readers), mapping to the file and its prefetch
 *   stream (prefetcher.ts), dropped at release.
 * - Prefetch: each read is also shown to the handle's stream, which fills
 *   the cache with the extents ahead of a sequential reader through the same
 *   ExtentReader; the read itself still reads every extent it touches, so a
 *   failed or stale prefetch costs nothing but the transfer.
 * - Packs: a miss on an extent of a blob that packs many small files goes
 *   through PackReads (pack-reads.ts), which turns a walk through a directory
 *   of small files into a few ranged GETs of the pack and fills the cache with
 *   the neighbours it fetched; a small file read at random still costs one GET
 *   of its own bytes. It learns the neighbours from the leaf pages this layer
 *   loads: every page a listing reads, and the page of each file opened.
 * - Errors are thrown as they come (StowageError from the SDK or the tree,
 *   FsError for ENOENT and EROFS here); mount.ts turns them into errno in one
 *   place (errno.ts).
 *
 * - Reload (reload(), on SIGHUP): GetVersion names the newest root; the two
 *   versions are compared by hash (version-diff.ts), entering only the
 *   directories whose root page differs, so a reload after a one-file commit
 *   loads the pages on that file's path. The new tree replaces the current
 *   one in one assignment. An open handle keeps the FileNode (the entry and
 *   extents) it opened, so it reads the version it opened to the end; new
 *   lookups and opens see the new tree. What the kernel has cached about
 *   changed paths is dealt with by mount.ts and kernel-refresh.ts, from the
 *   plan KernelView (kernel-view.ts) makes: which paths the kernel may know
 *   (every path getattr was asked about, within a bound), and the retiring
 *   protocol (a changed or removed file is unlinked through the mount, which
 *   this layer allows for those paths only while a reload runs; libfuse
 *   renames one still open to a `.fuse_hidden…` name, answered with the old
 *   node until its last close). The plan is made in the same synchronous
 *   step as the swap, so that a lookup answered from the old tree while the
 *   versions were compared is not missed.
 *
 * - Writes (a writable mount only): the changes made through the mount are
 *   staged on local disk (staging.ts), laid over the tree: lookups, listings
 *   and opens here ask the staging first; what it covers a reload leaves
 *   alone in the kernel (its view of those paths is already right). The write
 *   callbacks themselves go to the staging (writable-ops.ts). The swap of a
 *   reload waits for the staging's running changes (Staging.exclusive), and a
 *   commit's settling of the staging happens in the same step.
 */
import type { TransferMode } from '../client/blob-transport.js';
import type { Connection } from '../client/connection.js';
import { FailedPreconditionError, IntegrityError } from '../common/errors.js';
import { checkName } from '../common/validate.js';
import type { DirItem, Entry, FileItem, LeafPage } from '../tree/format.js';
import { atPath } from '../tree/read.js';
import { DirListing } from './dir-listing.js';
import { EISDIR, ENOENT, EROFS, FsError } from './errno.js';
import { ExtentReader } from './read/extent-reader.js';
import { extentStarts, lastAtOrBefore } from './read/extents.js';
import { PackReads, type PackReadOptions } from './read/pack-reads.js';
import { Prefetcher, type FilePrefetch, type PrefetchOptions } from './read/prefetcher.js';
import { KernelView, type ReloadPlan } from './kernel-view.js';
import { FIRST_STAGED_HANDLE, Staging, isStaged, type ViewNode } from './write/staging.js';
import { MountTreeSource } from './tree-source.js';
import { VersionTree, checkIno, childPath, parentOf, type FileNode, type Node, type NodeAttr, type VersionHead } from './tree.js';
import type { ChunkCache } from './cache/types.js';
import { diffVersions, filesBelowRemoved } from './version-diff.js';
import { WALK_AHEAD, WalkAhead } from './walk-ahead.js';

export type { NodeAttr } from './tree.js';
export type { ReloadPlan } from './kernel-view.js';

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
  /** Bytes of decoded tree pages kept in memory (tree-source.ts; default 32 MiB). */
  treeCacheBytes?: number;
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


/**
 * Run by a reload before it swaps trees, while the staging makes no change
 * (a commit settles the staging with it): its lookups are done here, and the
 * function it returns applies the result in the same step as the swap.
 */
export type ReloadSettle = (before: VersionTree, after: VersionTree) => Promise<() => void>;

interface OpenFile {
  file: FileNode;
  prefetch: FilePrefetch | undefined;
}

export class VolumeFilesystem {
  private readonly handles = new Map<number, OpenFile>();
  private lastHandle = 0;
  /** What the kernel may know, and the retiring of changed files during a reload. */
  private readonly kernel = new KernelView();
  readonly packs: PackReads;
  /** Directory read-ahead for walks (find, os.walk). */
  readonly walkAhead: WalkAhead;
  private reloading: Promise<unknown> = Promise.resolve();
  /** Bytes the mount's readers read (mount reports). */
  bytesRead = 0;

  private constructor(
    readonly volume: string,
    private current: VersionTree,
    /** Where the pages of every version this mount serves come from. */
    readonly trees: MountTreeSource,
    private readonly conn: Connection,
    /** The host's chunk cache, and how extents get into it. */
    readonly extents: ExtentReader,
    /** Undefined when prefetching is off. */
    readonly prefetcher: Prefetcher | undefined,
    /** The changes of a writable mount; undefined when read-only. */
    readonly staging: Staging | undefined,
    packReads: PackReadOptions | undefined,
  ) {
    this.packs = new PackReads(extents, packReads);
    this.walkAhead = new WalkAhead(trees, trees.maxBytes);
  }

  /** Finds the version (NOT_FOUND when the volume or version does not exist) and loads its root page. */
  static async load(opts: VolumeFilesystemOptions): Promise<VolumeFilesystem> {
    const volume = checkName('volume', opts.volume);
    const conn = opts.connection;
    const head = await versionHead(conn, volume, opts.version ?? 0);
    const trees = new MountTreeSource(conn, volume, opts.treeCacheBytes);
    const tree = await VersionTree.open(trees, volume, head);
    const extents = new ExtentReader(conn, opts.cache, opts.transfer);
    const prefetcher = opts.prefetch?.maxWindow === 0 ? undefined : new Prefetcher((hash) => opts.cache.has(hash), opts.prefetch);
    let fs: VolumeFilesystem | undefined;
    const staging = opts.stagingDir ? await Staging.create(opts.stagingDir, () => fs!.current, { volume }) : undefined;
    fs = new VolumeFilesystem(volume, tree, trees, conn, extents, prefetcher, staging, opts.packReads);
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
   * Serves the newest version from now on (nothing changes when it is the
   * one served). Reloads run one at a time. `settle` (a commit's) runs before
   * the swap and applies its result with it. The caller tells the kernel
   * (plan.unlink, plan.revalidate), then calls endReload().
   */
  reload(settle?: ReloadSettle): Promise<ReloadPlan> {
    const next = this.reloading.then(async () => {
      const before = this.current;
      const head = await versionHead(this.conn, this.volume, 0);
      const plan: ReloadPlan = { from: before.version, to: head.version, added: 0, changed: 0, removed: 0, unlink: [], revalidate: [] };
      if (head.version === before.version) return plan;
      if (head.version < before.version) {
        throw new FailedPreconditionError(`the newest version of ${this.volume} is ${head.version}, older than the mounted ${before.version}`);
      }
      const after = await VersionTree.open(this.trees, this.volume, head);
      this.kernel.hold();
      try {
        return await this.compareAndSwap(before, after, plan, settle);
      } finally {
        this.kernel.release();
      }
    });
    this.reloading = next.catch(() => undefined);
    return next;
  }

  /** The rest of reload(): what changed, and the swap to `after` with the kernel's plan made in the same step. */
  private async compareAndSwap(before: VersionTree, after: VersionTree, plan: ReloadPlan, settle: ReloadSettle | undefined): Promise<ReloadPlan> {
    const changes = await atPath(`comparing versions ${before.version} and ${after.version} of volume "${this.volume}"`, async () => {
      const c = await diffVersions(before, after);
      // Once every path counts as known (held so until the swap), the files below a removed directory are retired too: they must be listed.
      if (this.kernel.knowsAll) await filesBelowRemoved(before, c);
      return c;
    });
    plan.added = changes.added;
    plan.changed = changes.changed;
    plan.removed = changes.removed;
    // One step: which paths the kernel may know is decided as the trees are swapped.
    const swap = (): void => {
      this.current = after;
      // A path the staging covers shows what the staging says, before and after.
      this.kernel.plan(changes, (path) => this.staging?.covers(path) ?? false, plan);
    };
    if (this.staging) {
      await this.staging.exclusive(async () => {
        const apply = await settle?.(before, after);
        swap();
        apply?.();
      });
    } else swap();
    return plan;
  }

  /** The kernel was told about the last reload: the files it did not unlink are no longer unlinkable. */
  endReload(): void {
    this.kernel.endReload();
  }

  /** Whether a running reload is making the kernel look `path` up again (its O_CREAT|O_EXCL open must create nothing). */
  beingRevalidated(path: string): boolean {
    return this.kernel.isRevalidating(path);
  }

  stats(): FsStats {
    const t = this.current;
    return { files: t.files, bytes: t.bytes, nodes: t.size };
  }

  async getattr(path: string): Promise<NodeAttr> {
    this.kernel.remember(path, false);
    const n = (await this.find(path)) ?? this.kernel.hiddenNode(path);
    if (!n) throw new FsError(ENOENT, `no such file in version ${this.current.version}: ${path}`);
    if (n.kind === 'file') this.kernel.remember(path, true);
    return this.attrOf(n);
  }

  /**
   * unlink(2) through the mount: refused (EROFS) except for a file a running
   * reload retires, and for the hidden name of a retired file still open when
   * libfuse unlinks it at its last close.
   */
  async unlink(path: string): Promise<void> {
    if (this.kernel.unlink(path)) return;
    if (this.staging) return this.staging.unlink(path);
    throw new FsError(EROFS, `${path}: the mount is read-only`);
  }

  /** rename(2) through the mount: only libfuse hiding a retired file that is still open. */
  async rename(from: string, to: string): Promise<void> {
    // libfuse hides only a file that is open: its handles have the node when the reload did not.
    if (this.kernel.hide(from, to, (path) => [...this.handles.values()].find((h) => h.file.path === path)?.file)) return;
    if (this.staging) return this.staging.rename(from, to);
    throw new FsError(EROFS, `${from}: the mount is read-only`);
  }

  /** Names in a directory with their attributes, '.' and '..' first. */
  async readdir(path: string): Promise<DirListing> {
    const tree = this.current;
    const parent = parentOf(path);
    const out = new DirListing();
    if (this.staging) {
      const entries = await this.staging.list(path);
      const self = await this.lookup(path, tree);
      const up = path === '/' ? self : ((await this.find(parent, tree)) ?? self);
      out.add('.', this.attrOf(self));
      out.add('..', this.attrOf(up));
      for (const e of entries) out.add(e.name, this.attrOf(e.node));
      return out;
    }
    const dir = await tree.dir(path);
    const up = path === '/' ? dir : ((await tree.find(parent)) ?? dir);
    out.add('.', attrOf(dir));
    out.add('..', attrOf(up));
    const subdirs: DirItem[] = [];
    await tree.eachLeaf(dir, (hash, page) => {
      this.packs.add(hash, filesOf(page));
      for (const e of page.entries) {
        out.add(e.name, entryAttr(childPath(path, e.name), e));
        if (e.kind === 'dir' && subdirs.length < WALK_AHEAD) subdirs.push(e);
      }
    });
    this.walkAhead.listed(dir, subdirs, path !== '/' && up.kind === 'dir' ? up : undefined);
    return out;
  }

  /** Checks that `path` may be opened with `flags`; returns a new file handle (release() drops it). */
  async open(path: string, flags: number): Promise<number> {
    const node = await this.lookup(path);
    if ((flags & O_ACCMODE) !== 0 || (flags & O_TRUNC) !== 0) {
      // A writable mount's writing opens go to its staging (writable-ops.ts).
      throw new FsError(EROFS, `${path}: the mount is read-only`);
    }
    if (node.kind === 'staged') return this.staging!.openForRead(node);
    if (node.kind === 'dir' || node.kind === 'staged-dir') throw new FsError(EISDIR, `${path} is a directory`);
    await this.indexNeighbours(node);
    const fh = this.newHandle();
    const entry = node.entry;
    this.handles.set(fh, { file: node, prefetch: this.prefetcher?.open(entry, (i) => this.extents.fill(entry, i, this.packs.loader(entry, i))) });
    return fh;
  }

  /** The handle was closed by its last user: its prefetch stream stops. */
  release(fh: number): void {
    this.handles.get(fh)?.prefetch?.release();
    this.handles.delete(fh);
  }

  /** access(2): write access is never granted; the rest is (only the mounting user reaches the mount). */
  async access(path: string, mode: number): Promise<void> {
    if (!this.kernel.isHidden(path)) await this.lookup(path);
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
    // Each extent's part goes straight into its place in FUSE's buffer.
    let into0 = 0;
    const reads = wanted.map((w) => {
      const part = into.subarray(into0, into0 + (w.to - w.from));
      into0 += w.to - w.from;
      return this.extents.read(file.entry, w.index, w.from, part, this.packs.loader(file.entry, w.index));
    });
    // After the read's own loads have started, so that they go first.
    const open = this.handles.get(fh);
    if (open?.file === file) open.prefetch?.read(position, end - position);
    const counts = await Promise.all(reads);
    const copied = counts.reduce((n, c) => n + c, 0);
    if (copied !== end - position) throw new IntegrityError(`read ${copied} bytes of ${file.path} at ${position} instead of ${end - position}: its extents are shorter than its size`);
    this.bytesRead += copied;
    return copied;
  }

  /**
   * The file node for an open handle (falling back to the path a caller gave):
   * the node it opened, whatever the path is called now (a reload may have
   * replaced it, or libfuse renamed it to a hidden name).
   */
  async fileFor(fh: number, path: string): Promise<FileNode> {
    const byHandle = this.handles.get(fh)?.file;
    const node: ViewNode = byHandle ?? (await this.lookup(path));
    if (node.kind !== 'file') throw new FsError(EISDIR, `${path} is not a committed file`);
    return node;
  }

  async close(): Promise<void> {
    for (const h of this.handles.values()) h.prefetch?.release();
    this.handles.clear();
    await this.staging?.close();
    await this.prefetcher?.close();
    await this.packs.settled();
    await this.extents.cache.close();
  }

  /** The node at a path, with the staging over the tree when there is one. */
  private find(path: string, tree = this.current): Promise<ViewNode | undefined> {
    return this.staging ? this.staging.find(path) : tree.find(path);
  }

  private async lookup(path: string, tree = this.current): Promise<ViewNode> {
    const n = await this.find(path, tree);
    if (!n) throw new FsError(ENOENT, `no such file in version ${tree.version}: ${path}`);
    return n;
  }

  /** Indexes the leaf page a packed file was found in, so that a walk through its directory reads its pack ahead. */
  private async indexNeighbours(node: FileNode): Promise<void> {
    if (!node.leaf || this.packs.maxWindow === 0 || node.entry.extents.every((e) => e.blob === e.hash)) return;
    try {
      const page = await this.trees.page(node.leaf);
      if (page.kind === 'leaf') this.packs.add(node.leaf, filesOf(page));
    } catch {
      // Read-ahead only: the file's own read does not need its neighbours.
    }
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
}

/** A version of the volume as GetVersion tells it (0: the newest). */
async function versionHead(conn: Connection, volume: string, version: number): Promise<VersionHead> {
  const v = await conn.unary(conn.volumes.getVersion.bind(conn.volumes), { volume, version });
  // What the server says is checked like any answer (server-answers.ts); pages are checked against their hashes as they load.
  if (v.root !== '' && !/^[0-9a-f]{64}$/.test(v.root)) {
    throw new IntegrityError(`refused the server's answer to GetVersion of volume "${volume}": its root is not a tree object hash`);
  }
  if (version !== 0 && v.version !== version) {
    throw new IntegrityError(`refused the server's answer to GetVersion of volume "${volume}": it describes version ${v.version} instead of ${version}`);
  }
  return { version: v.version, root: v.root, createdAtMs: v.createdAtMs, files: v.fileCount, bytes: v.totalBytes, dirs: v.dirCount };
}

function filesOf(page: LeafPage): FileItem[] {
  return page.entries.filter((e): e is FileItem => e.kind === 'file');
}

function attrOf(n: Node): NodeAttr {
  if (n.kind === 'dir') return dirAttr(n.ino, n.subdirs, n.mtimeMs);
  return fileAttr(n.ino, n.mode, n.size, n.mtimeMs);
}

/** The attributes of an entry listed at `path`, without making a node of it. */
function entryAttr(path: string, e: Entry): NodeAttr {
  checkIno(path, e.id);
  if (e.kind === 'dir') return dirAttr(e.id, e.totals.subdirs, e.mtimeMs);
  return fileAttr(e.id, e.mode, e.size, e.mtimeMs);
}

function fileAttr(ino: number, mode: number, size: number, mtimeMs: number): NodeAttr {
  return { ino, mode: S_IFREG | ((mode & 0o777 || DEFAULT_FILE_MODE) & NO_WRITE), nlink: 1, size, blocks: Math.ceil(size / 512), mtimeMs };
}

function dirAttr(ino: number, subdirs: number, mtimeMs: number): NodeAttr {
  return { ino, mode: S_IFDIR | 0o555, nlink: 2 + subdirs, size: 4096, blocks: 8, mtimeMs };
}
