/**
 * Staging: the changes made through a writable mount, held on local disk
 * until a commit turns them into one new version of the volume (mount-session.ts
 * commits them; this module keeps them and takes snapshots of them).
 *
 * Design.
 * - The mount shows the version it serves (a VersionTree, the "base") with
 *   the staging laid over it, path by path: a staged file (its bytes in a
 *   local file of the staging directory) or a committed file under a new
 *   path or mode shadows whatever the base has there; a removed path (a
 *   whiteout) hides a committed file; directories made by mkdir exist until
 *   the version has them; committed directories removed by rmdir are hidden.
 *   find() answers a path in that merged view, and every lookup of the mount
 *   goes through it. The base is loaded lazily (tree.ts), so reading it
 *   awaits: find() reads the base first and then decides by what the staging
 *   holds when the base has answered. Changes that read the base (create,
 *   open for writing, truncate, unlink, rename, mkdir, rmdir, chmod) run one
 *   at a time (exclusive()), each as one step over the state it read, and a
 *   reload swaps the base between them, never in the middle of one.
 * - A volume is write-once: a committed file is never changed in place. It
 *   can be replaced whole (open with O_TRUNC, truncate to 0: a new staged
 *   file), renamed or chmod-ed (the same stored bytes under a new path or
 *   mode: no bytes move at commit), or removed. Writing into it otherwise is
 *   EPERM, with the reason in the error. A staged file is an ordinary local
 *   file: writes at any offset, truncation, reads.
 * - Every change of a staged file's bytes runs after the one before it (a
 *   promise chain per file), and so does the copy a commit takes of them: a
 *   commit includes every write that returned before it started, and writes
 *   that arrive while its copy is made wait for the copy. A file's open
 *   handles share one descriptor.
 * - A commit (snapshot → upload → settle, or discard on failure) copies each
 *   changed file into a directory of its own (a reflink where the filesystem
 *   has them), so writes may go on while it uploads; the final commit at
 *   unmount, when nothing can write any more, uploads the staged files as they
 *   are. After a commit the mount serves the new version and settle() drops
 *   what it now holds: files not changed since, and not open for writing
 *   (those stay staged, clean, until their last writer closes them).
 * - libfuse renames a file that is unlinked while open to `.fuse_hidden…`:
 *   such a file leaves the tree (a whiteout if it was committed), stays
 *   readable and writable through its handles, and is never committed.
 * - Directories: a volume stores files only, so an empty directory cannot be
 *   committed. A directory made here exists in this mount until the version
 *   has it (a file below it was committed) or the mount ends; a committed
 *   directory emptied by this mount's removals stays, empty, in the mount.
 *   Renaming a directory is EXDEV (mv then copies it and removes the source).
 * - Numbers: staged inodes count down from the top of the 32-bit range to
 *   STAGED_INO_FLOOR (the tree's ids count up from 1 and stay below it:
 *   tree.ts); handles are in [2^30, 2^31), above the read-only handles of
 *   filesystem.ts.
 */
import { constants } from 'node:fs';
import { copyFile, mkdir, open, rm, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import pLimit from 'p-limit';
import { normalizeFilePath } from '../../common/validate.js';
import { EBADF, EEXIST, EISDIR, ENOENT, ENOSPC, ENOTDIR, ENOTEMPTY, EPERM, EXDEV, FsError } from '../errno.js';
import { STAGED_INO_FLOOR, childPath, parentOf, type DirNode, type FileNode, type Node, type NodeAttr, type VersionTree } from '../tree.js';

export interface StagedFile {
  kind: 'staged';
  ino: number;
  /** Where it is in the tree now ('/'-prefixed); a `.fuse_hidden…` name once hidden. */
  path: string;
  /** Its bytes, in the staging directory. */
  local: string;
  size: number;
  /** Permission bits. */
  mode: number;
  mtimeMs: number;
  /** Bumped by every change of its bytes or mode. */
  gen: number;
  /** The path and generation a commit stored; unchanged since while both still match. */
  committed?: { path: string; gen: number };
  opens: number;
  writers: number;
  /** One descriptor for its open handles, while any is open. */
  fd?: Promise<FileHandle>;
  /** The last change of its bytes queued. */
  lock: Promise<unknown>;
  /** Out of the tree (removed, replaced, or committed and dropped): its local file is gone or going. */
  gone: boolean;
}

export interface StagedDir {
  kind: 'staged-dir';
  ino: number;
  path: string;
  mtimeMs: number;
}

/** A node of the merged view: the base's, or the staging's own. */
export type ViewNode = Node | StagedFile | StagedDir;

/** The changes one commit takes, frozen when it starts. */
export interface Snapshot {
  /** Where its copies are; undefined when it uploads the staged files themselves. */
  dir: string | undefined;
  puts: { file: StagedFile; path: string; source: string; gen: number; mode: number; mtimeMs: number; size: number }[];
  /** Committed files under a new path or mode. */
  existing: { node: FileNode; path: string }[];
  /** Committed files to remove. */
  removes: string[];
}

const O_ACCMODE = 0o3;
const O_TRUNC = 0o1000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const DEFAULT_FILE_MODE = 0o644;
/** Handles of staged files; filesystem.ts numbers its own below. */
export const FIRST_STAGED_HANDLE = 0x4000_0000;
const MAX_HANDLE = 0x7fff_ffff;
const TOP_INO = 0xffff_fffe;
/** libfuse renames an unlinked file that is still open to `<dir>/.fuse_hidden<16 hex>`. */
const HIDDEN_PREFIX = '.fuse_hidden';

export const isStaged = (n: ViewNode): n is StagedFile | StagedDir => n.kind === 'staged' || n.kind === 'staged-dir';
const isDir = (n: ViewNode): n is DirNode | StagedDir => n.kind === 'dir' || n.kind === 'staged-dir';
const nameOf = (path: string): string => path.slice(path.lastIndexOf('/') + 1);

export class Staging {
  /** Staged files, and committed files under a new path or mode, by path. */
  private readonly files = new Map<string, StagedFile | FileNode>();
  private readonly dirs = new Map<string, StagedDir>();
  /** Committed files removed (whiteouts). */
  private readonly removed = new Set<string>();
  /** Committed directories removed by rmdir (everything below them was removed first). */
  private readonly removedDirs = new Set<string>();
  /** Files libfuse hid because they were unlinked while open. */
  private readonly hidden = new Map<string, StagedFile | FileNode>();
  /** Names of staged files and directories, by parent. */
  private readonly kids = new Map<string, Set<string>>();
  private readonly handles = new Map<number, { file: StagedFile; write: boolean }>();
  /** Paths the running commit puts: removing one of them needs a whiteout even if the base lacks it. */
  private committing = new Set<string>();
  private lastHandle = FIRST_STAGED_HANDLE - 1;
  private nextIno = TOP_INO;
  private lastLocal = 0;
  private lastSnapshot = 0;
  /** Changes that read the base, and reloads' swaps of it: one at a time. */
  private readonly serial = pLimit(1);

  private constructor(
    /** This mount's staging directory. */
    readonly dir: string,
    private readonly base: () => VersionTree,
  ) {}

  /** Makes `dir` (this mount's own) and notes in it whose changes it holds. */
  static async create(dir: string, base: () => VersionTree, about: { volume: string }): Promise<Staging> {
    await mkdir(join(dir, 'files'), { recursive: true, mode: 0o700 });
    const note = { ...about, pid: process.pid, startedAt: new Date().toISOString() };
    await writeFile(join(dir, 'staging.json'), `${JSON.stringify(note)}\n`, { mode: 0o600 });
    return new Staging(dir, base);
  }

  // ---- the merged view ------------------------------------------------------

  /**
   * Runs `f` when no other change that reads the base runs, and none starts
   * until it ends (a reload swaps the base inside one).
   */
  exclusive<T>(f: () => Promise<T>): Promise<T> {
    return this.serial(f);
  }

  /** The node at a FUSE path in the merged view, or undefined. */
  async find(path: string): Promise<ViewNode | undefined> {
    const own = this.own(path);
    if (own) return own;
    if (this.removed.has(path) || this.removedDirs.has(path)) return undefined;
    const b = await this.base().find(path);
    // The staging may have changed while the base was read: what it holds now wins.
    return this.own(path) ?? (this.removed.has(path) || this.removedDirs.has(path) ? undefined : b);
  }

  /** What the staging itself has at `path`. */
  private own(path: string): ViewNode | undefined {
    return this.hidden.get(path) ?? this.files.get(path) ?? this.dirs.get(path);
  }

  /** Whether the staging decides what `path` is (a reload must leave the kernel's view of it alone). */
  covers(path: string): boolean {
    return this.files.has(path) || this.dirs.has(path) || this.removed.has(path) || this.removedDirs.has(path) || this.hidden.has(path);
  }

  attr(n: StagedFile | StagedDir): NodeAttr {
    if (n.kind === 'staged-dir') return { ino: n.ino, mode: S_IFDIR | 0o755, nlink: 1, size: 4096, blocks: 8, mtimeMs: n.mtimeMs };
    return { ino: n.ino, mode: S_IFREG | n.mode, nlink: 1, size: n.size, blocks: Math.ceil(n.size / 512), mtimeMs: n.mtimeMs };
  }

  /** The entries of a directory of the merged view, by name, sorted. */
  async list(path: string): Promise<{ name: string; node: ViewNode }[]> {
    const base = this.base();
    const b = await base.find(path);
    const inBase = new Map<string, Node>();
    if (b?.kind === 'dir') for (const n of await base.children(b)) inBase.set(nameOf(n.path), n);
    // From here on nothing awaits: the listing is the staging as it is now over that base.
    const dir = this.own(path) ?? (this.removed.has(path) || this.removedDirs.has(path) ? undefined : b);
    if (!dir) throw new FsError(ENOENT, `no such directory: ${path}`);
    if (!isDir(dir)) throw new FsError(ENOTDIR, `not a directory: ${path}`);
    const names = new Set<string>(this.kids.get(path));
    for (const n of inBase.keys()) names.add(n);
    const out: { name: string; node: ViewNode }[] = [];
    for (const name of [...names].sort()) {
      const p = childPath(path, name);
      if (this.hidden.has(p)) continue;
      const node = this.own(p) ?? (this.removed.has(p) || this.removedDirs.has(p) ? undefined : inBase.get(name));
      if (node) out.push({ name, node });
    }
    return out;
  }

  /** Whether anything would go into a commit now. */
  hasChanges(): boolean {
    if (this.removed.size > 0) return true;
    for (const f of this.files.values()) if (f.kind === 'file' || dirty(f)) return true;
    return false;
  }

  // ---- opening, reading, writing ---------------------------------------------

  owns(fh: number): boolean {
    return fh >= FIRST_STAGED_HANDLE;
  }

  /** A new staged file at `path` (create(2)); returns a handle open for writing. */
  create(path: string, mode: number): Promise<number> {
    return this.opened(async () => {
      await this.checkNew(path);
      const existing = await this.find(path);
      if (existing && isDir(existing)) throw new FsError(EISDIR, `${path} is a directory`);
      const file = this.stage(path, mode & 0o777, existing?.ino);
      return { fh: this.openHandle(file, true), then: this.change(file, (fd) => fd.truncate(0)) };
    });
  }

  /** open(2) with write access or O_TRUNC. A committed file may only be replaced whole (O_TRUNC). */
  openForWrite(path: string, flags: number): Promise<number> {
    return this.opened(async () => {
      const node = await this.find(path);
      if (!node) throw new FsError(ENOENT, `no such file: ${path}`);
      if (isDir(node)) throw new FsError(EISDIR, `${path} is a directory`);
      const trunc = (flags & O_TRUNC) !== 0;
      let file: StagedFile;
      if (node.kind === 'staged') file = node;
      else if (trunc && !this.hidden.has(path)) file = this.stage(path, node.mode & 0o777 || DEFAULT_FILE_MODE, node.ino);
      else throw inPlace(path, 'opened for writing without O_TRUNC');
      return { fh: this.openHandle(file, (flags & O_ACCMODE) !== 0), then: trunc ? this.resize(file, 0) : undefined };
    });
  }

  /**
   * Runs `open` (a lookup and a change of the staging) exclusively; the work
   * on the file's bytes it queued (`then`) is awaited after, so that a slow
   * one (behind a commit's copy of that file) holds up no other change. The
   * handle is released when that work fails.
   */
  private async opened(open: () => Promise<{ fh: number; then: Promise<unknown> | undefined }>): Promise<number> {
    const { fh, then } = await this.exclusive(async () => {
      const r = await open();
      if (r.then) awaitedLater(r.then);
      return r;
    });
    try {
      await then;
    } catch (err) {
      this.release(fh);
      throw err;
    }
    return fh;
  }

  /** A read-only handle of a staged file. */
  openForRead(file: StagedFile): number {
    return this.openHandle(file, false);
  }

  async read(fh: number, into: Buffer, length: number, position: number): Promise<number> {
    const file = this.handle(fh).file;
    const fd = await this.descriptor(file);
    const { bytesRead } = await fd.read(into, 0, Math.min(length, into.length), position);
    return bytesRead;
  }

  async write(fh: number, data: Buffer, length: number, position: number): Promise<number> {
    const h = this.handle(fh);
    if (!h.write) throw new FsError(EBADF, `${h.file.path} was opened read-only`);
    const file = h.file;
    return this.change(file, async (fd) => {
      const { bytesWritten } = await fd.write(data, 0, length, position);
      file.size = Math.max(file.size, position + bytesWritten);
      file.gen++;
      file.mtimeMs = Date.now();
      return bytesWritten;
    });
  }

  /** truncate(2) by path: a staged file to any size; a committed file only to 0 (replacing it whole). */
  async truncate(path: string, size: number): Promise<void> {
    // The resize is queued in the exclusive step and awaited after it (as in opened()).
    const resized = await this.exclusive(async () => {
      const node = await this.find(path);
      if (!node) throw new FsError(ENOENT, `no such file: ${path}`);
      if (isDir(node)) throw new FsError(EISDIR, `${path} is a directory`);
      if (node.kind === 'staged') return { done: awaitedLater(this.resize(node, size)) };
      if (size !== 0 || this.hidden.has(path)) throw inPlace(path, `truncated to ${size} bytes`);
      const file = this.stage(path, node.mode & 0o777 || DEFAULT_FILE_MODE, node.ino);
      return { done: awaitedLater(this.resize(file, 0)) };
    });
    await resized.done;
  }

  /** ftruncate(2) through a handle of a staged file. */
  async ftruncate(fh: number, size: number): Promise<void> {
    await this.resize(this.handle(fh).file, size);
  }

  /** The last close of a handle. */
  release(fh: number): void {
    const h = this.handles.get(fh);
    if (!h) return;
    this.handles.delete(fh);
    const file = h.file;
    file.opens--;
    if (h.write) file.writers--;
    if (file.opens === 0 && file.fd) {
      const fd = file.fd;
      file.fd = undefined;
      file.lock = file.lock.then(async () => (await fd).close()).catch(() => undefined);
    }
    // Committed while it was open for writing, and not changed since: the version has it now.
    if (file.writers === 0 && !dirty(file) && this.files.get(file.path) === file) this.drop(file);
  }

  // ---- changing the tree -------------------------------------------------------

  unlink(path: string): Promise<void> {
    return this.exclusive(async () => {
      const node = await this.find(path);
      if (!node) throw new FsError(ENOENT, `no such file: ${path}`);
      if (isDir(node)) throw new FsError(EISDIR, `${path} is a directory`);
      if (this.hidden.get(path) === node) {
        this.hidden.delete(path);
        if (node.kind === 'staged') this.forget(node);
        return;
      }
      await this.takeOut(path, node);
    });
  }

  rename(from: string, to: string): Promise<void> {
    return this.exclusive(() => this.renameNow(from, to));
  }

  private async renameNow(from: string, to: string): Promise<void> {
    const node = await this.find(from);
    if (!node) throw new FsError(ENOENT, `no such file: ${from}`);
    if (isDir(node)) {
      throw new FsError(EXDEV, `${from} is a directory: a volume cannot rename directories in place (mv copies them instead)`);
    }
    if (nameOf(to).startsWith(HIDDEN_PREFIX)) {
      // libfuse hides a file that is unlinked (or replaced) while open.
      await this.takeOut(from, node, false);
      this.hidden.set(to, node);
      if (node.kind === 'staged') node.path = to;
      return;
    }
    await this.checkNew(to);
    if (from === to) return;
    const target = await this.find(to);
    if (target && isDir(target)) throw new FsError(EISDIR, `${to} is a directory`);
    await this.takeOut(from, node, false);
    if (node.kind === 'staged') {
      this.setFile(to, node);
      node.path = to;
    } else {
      // The stored bytes under a new name: put as they are at commit.
      this.setFile(to, { ...node, path: to });
    }
  }

  mkdir(path: string): Promise<void> {
    return this.exclusive(async () => {
      await this.checkNew(path);
      if (await this.find(path)) throw new FsError(EEXIST, `${path} exists`);
      this.dirs.set(path, { kind: 'staged-dir', ino: this.newIno(), path, mtimeMs: Date.now() });
      this.addKid(path);
    });
  }

  rmdir(path: string): Promise<void> {
    return this.exclusive(async () => {
      const node = await this.find(path);
      if (!node) throw new FsError(ENOENT, `no such directory: ${path}`);
      if (!isDir(node)) throw new FsError(ENOTDIR, `not a directory: ${path}`);
      if ((await this.list(path)).length > 0) throw new FsError(ENOTEMPTY, `${path} is not empty`);
      const inBase = (await this.base().find(path))?.kind === 'dir';
      if (this.dirs.delete(path)) this.dropKid(path);
      if (inBase) this.removedDirs.add(path);
    });
  }

  /**
   * chmod(2) of a file: a staged file's mode, or a committed file's (committed
   * again without moving bytes). A volume stores no directories: chmod of one
   * changes nothing (as utimens), so that cp -p and mv across filesystems work.
   */
  chmod(path: string, mode: number): Promise<void> {
    return this.exclusive(async () => {
      const node = await this.find(path);
      if (!node) throw new FsError(ENOENT, `no such file: ${path}`);
      if (isDir(node)) return;
      const bits = mode & 0o777;
      if (node.kind === 'staged') {
        node.mode = bits;
        node.gen++;
      } else if (node.kind === 'file' && (node.mode & 0o777) !== bits) {
        const moved: FileNode = { ...node, mode: bits };
        if (this.hidden.get(path) === node) this.hidden.set(path, moved);
        else this.setFile(path, moved);
      }
    });
  }

  // ---- commits -------------------------------------------------------------------

  /**
   * Freezes what a commit takes now: the changed staged files (copied into a
   * directory of the snapshot's own when `copy`, each after the changes queued
   * before it), committed files under a new path or mode, and removals.
   */
  async snapshot(copy: boolean): Promise<Snapshot> {
    const staged: StagedFile[] = [];
    const existing: Snapshot['existing'] = [];
    for (const [path, f] of this.files) {
      if (f.kind === 'file') existing.push({ node: f, path });
      else if (dirty(f)) staged.push(f);
    }
    const snap: Snapshot = { dir: undefined, puts: [], existing, removes: [...this.removed].sort() };
    this.committing = new Set([...staged.map((f) => f.path), ...existing.map((e) => e.path)]);
    if (staged.length === 0) return snap;
    if (copy) {
      snap.dir = join(this.dir, `commit-${++this.lastSnapshot}`);
      await mkdir(snap.dir, { recursive: true, mode: 0o700 });
    }
    let n = 0;
    try {
      for (const file of staged) {
        const path = file.path;
        const put = await this.change(file, async () => {
          // Renamed or removed since the snapshot began: the next commit has it where it is now.
          if (file.gone || file.path !== path) return undefined;
          const source = snap.dir ? join(snap.dir, String(++n)) : file.local;
          if (snap.dir) await copyFile(file.local, source, constants.COPYFILE_FICLONE);
          return { file, path, source, gen: file.gen, mode: file.mode, mtimeMs: file.mtimeMs, size: file.size };
        }).catch((err: unknown) => {
          if (file.gone) return undefined;
          throw err;
        });
        if (put) snap.puts.push(put);
      }
    } catch (err) {
      await this.discard(snap);
      throw err;
    }
    return snap;
  }

  /** Removes a snapshot's copies (after its commit, or its failure: the staged changes stay). */
  async discard(snap: Snapshot): Promise<void> {
    this.committing = new Set();
    if (snap.dir) await rm(snap.dir, { recursive: true, force: true });
  }

  /**
   * `snap` is committed and the mount is about to serve `after` (which has
   * it, or a later version) in place of `before`. Reads what it needs of both
   * trees and returns the step, run with the swap (inside exclusive()), that
   * drops what `after` holds and keeps what changed since the snapshot, so the
   * merged view stays as it was.
   */
  async settle(snap: Snapshot, before: VersionTree, after: VersionTree): Promise<() => void> {
    const emptied = new Set<string>();
    for (const r of snap.removes) for (let p = parentOf(r); p !== '/'; p = parentOf(p)) emptied.add(p);
    const wasDir = new Map<string, DirNode>();
    const inAfter = new Map<string, Node | undefined>();
    for (const path of emptied) {
      const b = await before.find(path);
      if (b?.kind === 'dir') wasDir.set(path, b);
    }
    for (const path of new Set([...emptied, ...this.dirs.keys(), ...this.removedDirs])) inAfter.set(path, await after.find(path));
    return () => this.settleNow(snap, wasDir, inAfter);
  }

  private settleNow(snap: Snapshot, wasDir: Map<string, DirNode>, inAfter: Map<string, Node | undefined>): void {
    // Committed directories emptied by our removals are gone from the version; they stay in the mount.
    for (const [path, b] of wasDir) {
      if (!inAfter.get(path) && !this.removedDirs.has(path) && !this.dirs.has(path) && !this.files.has(path)) {
        this.dirs.set(path, { kind: 'staged-dir', ino: b.ino, path, mtimeMs: b.mtimeMs });
        this.addKid(path);
      }
    }
    for (const put of snap.puts) {
      const file = put.file;
      if (file.path === put.path) file.committed = { path: put.path, gen: put.gen };
      if (this.files.get(put.path) === file && !dirty(file) && file.writers === 0) this.drop(file);
    }
    for (const e of snap.existing) {
      if (this.files.get(e.path) === e.node) {
        this.files.delete(e.path);
        this.dropKid(e.path);
      }
    }
    for (const r of snap.removes) this.removed.delete(r);
    for (const [path] of this.dirs) {
      if (inAfter.get(path)?.kind === 'dir') {
        this.dirs.delete(path);
        this.dropKid(path);
      }
    }
    for (const path of this.removedDirs) if (inAfter.has(path) && !inAfter.get(path)) this.removedDirs.delete(path);
    this.committing = new Set();
  }

  /** Closes every descriptor (the mount has ended); the staging directory stays. */
  async close(): Promise<void> {
    const all = new Set([...this.files.values(), ...this.hidden.values()].filter((f): f is StagedFile => f.kind === 'staged'));
    for (const h of this.handles.values()) all.add(h.file);
    this.handles.clear();
    await Promise.all(
      [...all].map(async (f) => {
        const fd = f.fd;
        f.fd = undefined;
        await f.lock;
        await (await fd?.catch(() => undefined))?.close();
      }),
    );
  }

  /** Deletes the staging directory: everything in it is committed. */
  async remove(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }

  // ---- internals -------------------------------------------------------------------

  /** A new staged file at `path`, empty, replacing whatever file the view has there. */
  private stage(path: string, mode: number, ino: number | undefined): StagedFile {
    const file: StagedFile = {
      kind: 'staged',
      ino: ino ?? this.newIno(),
      path,
      local: join(this.dir, 'files', String(++this.lastLocal)),
      size: 0,
      mode,
      mtimeMs: Date.now(),
      gen: 1,
      opens: 0,
      writers: 0,
      lock: Promise.resolve(),
      gone: false,
    };
    this.setFile(path, file);
    return file;
  }

  /** `node` leaves `path` (unlinked, renamed away or hidden); a committed one leaves a whiteout. */
  private async takeOut(path: string, node: StagedFile | FileNode, discard = true): Promise<void> {
    const inBase = (await this.base().find(path))?.kind === 'file';
    if (this.hidden.get(path) === node) this.hidden.delete(path);
    if (this.files.get(path) === node) {
      this.files.delete(path);
      this.dropKid(path);
      if (discard && node.kind === 'staged') this.forget(node);
    }
    if (inBase || this.committing.has(path)) this.removed.add(path);
  }

  /** A file leaves the view because the version holds it now. */
  private drop(file: StagedFile): void {
    this.files.delete(file.path);
    this.dropKid(file.path);
    this.forget(file);
  }

  /** A staged file out of the tree for good: its local file goes (open handles keep their descriptor). */
  private forget(file: StagedFile): void {
    file.gone = true;
    const local = file.local;
    file.lock = file.lock.then(() => rm(local, { force: true })).catch(() => undefined);
  }

  private setFile(path: string, f: StagedFile | FileNode): void {
    const old = this.files.get(path);
    if (old?.kind === 'staged' && old !== f) this.forget(old);
    this.files.set(path, f);
    this.removed.delete(path);
    this.addKid(path);
  }

  private addKid(path: string): void {
    const parent = parentOf(path);
    let set = this.kids.get(parent);
    if (!set) this.kids.set(parent, (set = new Set()));
    set.add(nameOf(path));
  }

  private dropKid(path: string): void {
    if (this.files.has(path) || this.dirs.has(path)) return;
    const parent = parentOf(path);
    const set = this.kids.get(parent);
    set?.delete(nameOf(path));
    if (set?.size === 0) this.kids.delete(parent);
  }

  /** A path a new file or directory may take: a valid volume path whose parent is a directory. */
  private async checkNew(path: string): Promise<void> {
    // The SDK's rules for a volume path (FUSE never passes '..' or NUL; a path over 4096 bytes it may).
    normalizeFilePath(path);
    const parent = await this.find(parentOf(path));
    if (!parent) throw new FsError(ENOENT, `no such directory: ${parentOf(path)}`);
    if (!isDir(parent)) throw new FsError(ENOTDIR, `not a directory: ${parentOf(path)}`);
  }

  private openHandle(file: StagedFile, write: boolean): number {
    do {
      this.lastHandle = this.lastHandle >= MAX_HANDLE ? FIRST_STAGED_HANDLE : this.lastHandle + 1;
    } while (this.handles.has(this.lastHandle));
    this.handles.set(this.lastHandle, { file, write });
    file.opens++;
    if (write) file.writers++;
    if (!file.fd) {
      file.fd = open(file.local, constants.O_RDWR | constants.O_CREAT, 0o600);
      // Its failure reaches whoever reads or writes through it; until then it is not unhandled.
      file.fd.catch(() => undefined);
    }
    return this.lastHandle;
  }

  private handle(fh: number): { file: StagedFile; write: boolean } {
    const h = this.handles.get(fh);
    if (!h) throw new FsError(EBADF, `no open staged file with handle ${fh}`);
    return h;
  }

  private descriptor(file: StagedFile): Promise<FileHandle> {
    if (!file.fd) throw new FsError(EBADF, `${file.path} is not open`);
    return file.fd;
  }

  /** Runs `f` on the file's bytes after every change queued before it (with its shared descriptor, or one of its own). */
  private change<T>(file: StagedFile, f: (fd: FileHandle) => Promise<T>): Promise<T> {
    const run = file.lock.then(async () => {
      const shared = file.fd;
      if (!shared && file.gone) throw new FsError(ENOENT, `${file.path} was removed`);
      const fd = shared ? await shared : await open(file.local, constants.O_RDWR | constants.O_CREAT, 0o600);
      try {
        return await f(fd);
      } finally {
        if (!shared) await fd.close();
      }
    });
    file.lock = run.catch(() => undefined);
    return run;
  }

  private resize(file: StagedFile, size: number): Promise<void> {
    return this.change(file, async (fd) => {
      await fd.truncate(size);
      file.size = size;
      file.gen++;
      file.mtimeMs = Date.now();
    });
  }

  private newIno(): number {
    if (this.nextIno < STAGED_INO_FLOOR) {
      throw new FsError(ENOSPC, `this mount has staged more files than it can number; commit (stowage volume commit) and mount again`);
    }
    return this.nextIno--;
  }
}

/** `p`, marked as handled: its caller awaits it once a step in between is done (a failure is not unhandled meanwhile). */
function awaitedLater<T>(p: Promise<T>): Promise<T> {
  p.catch(() => undefined);
  return p;
}

/** Changed since its last commit (or never committed). */
function dirty(f: StagedFile): boolean {
  return !f.committed || f.committed.path !== f.path || f.committed.gen !== f.gen;
}

function inPlace(path: string, what: string): FsError {
  return new FsError(
    EPERM,
    `${path} is a committed file of a write-once volume and cannot be ${what}: replace it whole (open with O_TRUNC, as > does) or write a new file and rename it over`,
  );
}
