/**
 * Mounting a VolumeFilesystem with fuse-native (libfuse 2, high-level API):
 * the kernel side. The life of one mount (reloads, commits and the unmount
 * sequence, one at a time) is MountSession, in mount-session.ts; the
 * `stowage mount` process around it is mount-process.ts.
 *
 * - Every callback runs the filesystem call and answers 0 or -errno; errors
 *   become errno only here, through errno.ts. A failed read, and a lookup or
 *   listing that fails with EIO (a tree object damaged or out of reach), is
 *   logged with its path and reason, since the caller only sees the number.
 * - Content only changes at a reload (Mounted.reload, on SIGHUP), which
 *   tells the kernel itself what changed (kernel-refresh.ts), so the kernel
 *   may keep what it learns: long entry/attr timeouts, negative lookups
 *   cached too, and `kernel_cache` so that the page cache of a file survives
 *   close and reopen (auto_cache would re-check mtime on every open for
 *   nothing, and could not keep an old reader's pages apart from a new one's).
 * - The mount is not `ro` at the VFS level: a reload unlinks changed files
 *   through it. Every write still fails with EROFS, answered by the
 *   filesystem; `mount` and statvfs(3) report it read-write.
 * - A writable mount (the filesystem has a staging) takes the write
 *   callbacks of writable-ops.ts, with `atomic_o_trunc` so that an open with
 *   O_TRUNC reaches it as one (a whole-file rewrite of a committed file is
 *   allowed, an open for writing without O_TRUNC is not). Mounted.commit()
 *   commits the staged changes as one version (commit.ts) and moves the
 *   mount to it like a reload (mount-session.ts tells the order).
 * - Options fuse-native does not pass on (use_ino, negative_timeout) are
 *   appended to its `-o` string by overriding `_fuseOptions`.
 * - A mount point left behind by a mount process that died ("Transport
 *   endpoint is not connected") is detached with `fusermount -uz` first; a
 *   live mount there is refused.
 */
import { execFile } from 'node:child_process';
import { mkdir, readFile, stat, statfs } from 'node:fs/promises';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import Fuse, { type FuseOps, type FuseStat } from 'fuse-native';
import { FailedPreconditionError, messageOf } from '../common/errors.js';
import type { Volume } from '../client/volume.js';
import type { Logger } from '../common/logger.js';
import type { CommitEvent, CommitResult, CommitTrigger } from './write/commit.js';
import { EIO, EROFS, errnoOf } from './errno.js';
import type { NodeAttr, VolumeFilesystem } from './filesystem.js';

const run = promisify(execFile);

/** Seconds the kernel may trust a lookup or an attribute: a reload invalidates what changed itself. */
const METADATA_TIMEOUT_S = 3600;
/** fuse-native answers ETIMEDOUT for an op not done in time; a cold chunk may take a while. */
const OP_TIMEOUT_MS = { default: 30_000, read: 120_000, write: 120_000, fsync: 3_600_000 };
const BLOCK = 4096;
const IO_SIZE = 128 * 1024;

export interface MountOptions {
  logger?: Logger;
  /** libfuse debug output on stderr. */
  debug?: boolean;
  /** The volume commits go to: required when the filesystem is writable. */
  commitTo?: Volume;
  /** Told about every commit as it starts, progresses, ends or fails. */
  onCommit?: (e: CommitEvent) => void;
  /**
   * A writable mount commits only when asked (commit requests): fsync does
   * not commit, and what is staged when the mount ends is dropped. For a
   * worker's per-call mounts, whose writes land only if the call returns.
   */
  dropUncommitted?: boolean;
}

/** What one reload did. */
export interface ReloadResult {
  from: number;
  to: number;
  added: number;
  changed: number;
  removed: number;
}

export interface Mounted {
  readonly mountpoint: string;
  /** The version served now. */
  readonly version: number;
  /**
   * Moves the mount to the newest version of its volume, without unmounting:
   * files open now keep reading the version they opened; lookups, listings
   * and opens from now on see the new one. One at a time; the kernel's caches
   * are refreshed before it resolves.
   */
  reload(): Promise<ReloadResult>;
  /** Whether writes are staged and committed (else the mount is read-only). */
  readonly writable: boolean;
  /**
   * Commits everything staged when it starts (every write that returned
   * before) as one new version, and serves that version from then on. The
   * staging keeps its changes when it fails. Resolves with `version` equal to
   * `from` when there was nothing to commit.
   */
  commit(trigger?: CommitTrigger): Promise<CommitResult>;
  /**
   * Unmounts (lazily, so open files do not block it) and closes the
   * filesystem. A writable mount then commits what is still staged and
   * deletes its staging directory; if that commit fails it rejects, saying
   * where the changes are kept.
   */
  unmount(): Promise<void>;
}

/** fuse-native with the options it cannot express. */
export class StowageFuse extends Fuse {
  writable = false;

  protected override _fuseOptions(): string {
    const extra = `use_ino,negative_timeout=${METADATA_TIMEOUT_S}${this.writable ? ',atomic_o_trunc' : ''}`;
    const base = super._fuseOptions();
    return base ? `${base},${extra}` : `-o${extra}`;
  }

  /**
   * fuse-native's readdir makes a Uint32Array of each stat object; ours hands
   * it the stats already laid out (DirListing.fuseStats), views of one array.
   */
  protected override _op_readdir(signal: (err: number, names?: string[], stats?: FuseStat[] | Uint32Array[]) => void, path: string): void {
    this.ops.readdir!(path, (err, names, stats) => (err ? signal(err) : signal(0, names, stats ?? [])));
  }
}

/** fuse-native over `ops` at `mountpoint`, with the mount's options; not mounted yet. */
export function fuseFor(fs: VolumeFilesystem, mountpoint: string, ops: FuseOps, debug?: boolean): StowageFuse {
  const fuse = new StowageFuse(mountpoint, ops, {
    fsname: `stowage:${fs.volume}`,
    subtype: 'stowage',
    kernelCache: true,
    entryTimeout: METADATA_TIMEOUT_S,
    attrTimeout: METADATA_TIMEOUT_S,
    timeout: OP_TIMEOUT_MS,
    debug,
  });
  fuse.writable = fs.staging !== undefined;
  return fuse;
}

/** `fusermount -u` (lazy with `lazy`): detaches a mount point whoever mounted it. */
export async function unmountPath(dir: string, lazy = false): Promise<void> {
  const mountpoint = resolve(dir);
  if (!(await isMounted(mountpoint))) throw new FailedPreconditionError(`${mountpoint} is not mounted`);
  try {
    await run('fusermount', lazy ? ['-uz', mountpoint] : ['-u', mountpoint]);
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr?.trim();
    throw new FailedPreconditionError(
      `cannot unmount ${mountpoint}: ${stderr || messageOf(err)}${lazy ? '' : ' (files still open? stowage unmount --lazy detaches it now and frees it when they close)'}`,
    );
  }
}

/** Whether the kernel lists `mountpoint` (absolute) as a mount point. */
export async function isMounted(mountpoint: string): Promise<boolean> {
  const mounts = await readFile('/proc/self/mounts', 'utf8');
  return mounts.split('\n').some((line) => unescapeMountPath(line.split(' ')[1] ?? '') === mountpoint);
}

/** /proc/self/mounts writes space, tab, newline and backslash as octal escapes. */
function unescapeMountPath(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/**
 * Creates the mount point, clears a dead mount left there, refuses a live one.
 * A dead FUSE mount still answers stat from the kernel's attribute cache (our
 * timeouts are long), so staleness is probed with statfs, which always asks
 * the filesystem process and fails with ENOTCONN once it is gone.
 */
export async function prepareMountpoint(mountpoint: string, log: Logger): Promise<void> {
  try {
    const st = await stat(mountpoint);
    if (!st.isDirectory()) throw new FailedPreconditionError(`${mountpoint} is not a directory`);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      await mkdir(mountpoint, { recursive: true });
      return;
    }
    if (code === 'ENOTCONN') return detachStale(mountpoint, log);
    throw err;
  }
  if (!(await isMounted(mountpoint))) return;
  try {
    await statfs(mountpoint);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOTCONN') return detachStale(mountpoint, log);
    throw err;
  }
  throw new FailedPreconditionError(`${mountpoint} is already a mount point (unmount it first: stowage unmount ${mountpoint})`);
}

async function detachStale(mountpoint: string, log: Logger): Promise<void> {
  log.warn({ mountpoint }, 'mount point was left by a mount process that is gone; detaching it');
  try {
    await run('fusermount', ['-uz', mountpoint]);
  } catch (err) {
    throw new FailedPreconditionError(`cannot clear the stale mount at ${mountpoint}: ${messageOf(err)}`);
  }
}

/** The fuse-native callbacks over `fs`. */
export function operations(fs: VolumeFilesystem, log: Logger): FuseOps {
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  const toStat = (a: NodeAttr): FuseStat => ({
    ino: a.ino,
    mode: a.mode,
    nlink: a.nlink,
    size: a.size,
    blocks: a.blocks,
    blksize: IO_SIZE,
    uid,
    gid,
    atime: a.mtimeMs,
    mtime: a.mtimeMs,
    ctime: a.mtimeMs,
  });
  /** Runs a call (it may await pages of the tree); a thrown error answers -errno, logged when it is EIO. */
  const answer = <T>(op: string, path: string, f: () => T | Promise<T>, cb: (err: number, value?: T) => void): void => {
    const fail = (err: unknown): void => {
      const errno = errnoOf(err);
      if (errno === EIO) log.error({ volume: fs.volume, version: fs.version, op, path, errno, err: messageOf(err) }, `${op} failed`);
      cb(-errno);
    };
    let value: T | Promise<T>;
    try {
      value = f();
    } catch (err) {
      fail(err);
      return;
    }
    if (value instanceof Promise) value.then((v) => cb(0, v), fail);
    else cb(0, value);
  };
  const readOnly = (...args: unknown[]): void => (args[args.length - 1] as (err: number) => void)(-EROFS);

  return {
    getattr: (path, cb) => answer('getattr', path, async () => toStat(await fs.getattr(path)), cb),
    readdir: (path, cb) =>
      answer(
        'readdir',
        path,
        () => fs.readdir(path),
        (err, r) => (r ? cb(0, r.names, r.fuseStats({ uid, gid, blksize: IO_SIZE })) : cb(err)),
      ),
    open: (path, flags, cb) => answer('open', path, () => fs.open(path, flags), cb),
    release: (_path, fd, cb) => {
      fs.release(fd);
      cb(0);
    },
    access: (path, mode, cb) => answer('access', path, () => fs.access(path, mode), (err) => cb(err)),
    statfs: (_path, cb) => {
      const s = fs.stats();
      const blocks = Math.min(0xffff_ffff, Math.ceil(s.bytes / BLOCK));
      cb(0, {
        bsize: BLOCK,
        frsize: BLOCK,
        blocks,
        bfree: 0,
        bavail: 0,
        files: Math.min(0xffff_ffff, s.nodes),
        ffree: 0,
        favail: 0,
        fsid: 0,
        flag: 1, // ST_RDONLY
        namemax: 255,
      });
    },
    read: (path, fd, buffer, length, position, cb) => {
      fs.fileFor(fd, path)
        .then((file) => fs.read(file, position, length, buffer, fd))
        .then(cb, (err: unknown) => {
        const errno = errnoOf(err);
          log.error({ volume: fs.volume, version: fs.version, path, position, length, errno, err: messageOf(err) }, 'read failed');
          cb(-errno);
        });
    },
    unlink: (path, cb) => answer('unlink', path, () => fs.unlink(path), (err) => cb(err)),
    rename: (from, to, cb) => answer('rename', from, () => fs.rename(from, to), (err) => cb(err)),
    write: readOnly,
    create: readOnly,
    truncate: readOnly,
    ftruncate: readOnly,
    utimens: readOnly,
    chmod: readOnly,
    chown: readOnly,
    mknod: readOnly,
    link: readOnly,
    symlink: readOnly,
    mkdir: readOnly,
    rmdir: readOnly,
    setxattr: readOnly,
    removexattr: readOnly,
  };
}
