/**
 * The FUSE callbacks of a writable mount, over the read-only ones of
 * mount.ts: writing opens, create, write, truncation, unlink, rename,
 * mkdir, rmdir and chmod go to the filesystem's staging (staging.ts); fsync
 * commits; reads and releases of staged files go to the staging, the rest
 * to the read-only callbacks.
 *
 * - Errors become errno here through errno.ts, as in mount.ts. A refusal the
 *   caller could not guess (EPERM for an in-place write into a committed
 *   file, EINVAL for a name a volume cannot hold, EXDEV for a directory
 *   rename, …) is logged with its reason, since the caller only sees the
 *   number.
 * - What a volume cannot store is refused: links and special files (EPERM),
 *   extended attributes (ENOTSUP), owners other than the mounting user (chown:
 *   EPERM). Metadata that cannot be stored but that tools set as a matter of
 *   course is accepted and left as it is, so that `touch`, `cp -p` and `mv`
 *   across filesystems work: timestamps (utimens; a file's mtime is when it
 *   was last written), a directory's mode, chown to the mounting user.
 * - fsync of a staged file commits every staged change of the mount before
 *   it returns (EIO, logged, when the commit fails; the changes stay
 *   staged). fsync of a file opened read-only has nothing to commit.
 * - While a reload runs, a path it makes the kernel look up again is not
 *   created (EROFS): the reload's own O_CREAT|O_EXCL open (kernel-refresh.ts)
 *   must create nothing.
 */
import { statfs } from 'node:fs/promises';
import type { FuseOps } from 'fuse-native';
import { messageOf } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import { EBADF, EDQUOT, EINVAL, EIO, ENOSPC, ENOTSUP, EPERM, EROFS, EXDEV, FsError, errnoOf } from '../errno.js';
import type { VolumeFilesystem } from '../filesystem.js';
import type { CommitTrigger } from './commit.js';

const O_ACCMODE = 0o3;
const O_TRUNC = 0o1000;
const BLOCK = 4096;
/** chown's "leave it as it is" (-1 as a uint32). */
const NO_ID = 0xffff_ffff;
/** Refusals worth a log line: the errno alone does not say why (ENOTSUP for extended attributes goes unlogged: tools try them as a matter of course). */
const EXPLAINED = new Set([EPERM, EINVAL, EXDEV, EIO, ENOSPC, EDQUOT, EBADF, EROFS]);

export function writableOperations(
  fs: VolumeFilesystem,
  base: FuseOps,
  opts: { log: Logger; commit: (trigger: CommitTrigger) => Promise<unknown> },
): FuseOps {
  const staging = fs.staging!;
  const { log } = opts;
  const errno = (op: string, path: string, err: unknown): number => {
    const n = errnoOf(err);
    if (EXPLAINED.has(n)) log.warn({ op, path, errno: n }, `${op} refused: ${messageOf(err)}`);
    return -n;
  };
  /** Answers cb once `run` (sync or async) is done: 0, or -errno. */
  const answer = (op: string, path: string, cb: (err: number) => void, run: () => void | Promise<unknown>): void => {
    let p: void | Promise<unknown>;
    try {
      p = run();
    } catch (err) {
      cb(errno(op, path, err));
      return;
    }
    if (!p) cb(0);
    else p.then(() => cb(0), (err: unknown) => cb(errno(op, path, err)));
  };
  const withHandle = (op: string, path: string, cb: (err: number, fh?: number) => void, open: () => Promise<number>): void => {
    open().then(
      (fh) => cb(0, fh),
      (err: unknown) => cb(errno(op, path, err)),
    );
  };
  const notRevalidating = (path: string): void => {
    if (fs.beingRevalidated(path)) throw new FsError(EROFS, `${path} is being looked up again by a reload; try again`);
  };
  const refuse = (op: string, why: string) => (path: string, ...rest: unknown[]): void => {
    const cb = rest[rest.length - 1] as (err: number) => void;
    cb(errno(op, path, new FsError(op.endsWith('xattr') ? ENOTSUP : EPERM, why)));
  };

  return {
    ...base,
    open: (path, flags, cb) => {
      if ((flags & O_ACCMODE) === 0 && (flags & O_TRUNC) === 0) return base.open!(path, flags, cb);
      withHandle('open', path, cb, () => staging.openForWrite(path, flags));
    },
    create: (path, mode, cb) =>
      withHandle('create', path, cb, async () => {
        notRevalidating(path);
        return staging.create(path, mode);
      }),
    read: (path, fd, buffer, length, position, cb) => {
      if (!staging.owns(fd)) return base.read!(path, fd, buffer, length, position, cb);
      staging.read(fd, buffer, length, position).then(cb, (err: unknown) => {
        log.error({ path, position, length, err: messageOf(err) }, 'read of a staged file failed');
        cb(-errnoOf(err));
      });
    },
    write: (path, fd, buffer, length, position, cb) => {
      staging.write(fd, buffer, length, position).then(cb, (err: unknown) => cb(errno('write', path, err)));
    },
    release: (path, fd, cb) => {
      if (!staging.owns(fd)) return base.release!(path, fd, cb);
      staging.release(fd);
      cb(0);
    },
    truncate: (path, size, cb) => answer('truncate', path, cb, () => staging.truncate(path, size)),
    ftruncate: (path, fd, size, cb) =>
      answer('truncate', path, cb, () => (staging.owns(fd) ? staging.ftruncate(fd, size) : staging.truncate(path, size))),
    unlink: (path, cb) => answer('unlink', path, cb, () => fs.unlink(path)),
    rename: (from, to, cb) => answer('rename', from, cb, () => fs.rename(from, to)),
    mkdir: (path, _mode, cb) =>
      answer('mkdir', path, cb, () => {
        notRevalidating(path);
        return staging.mkdir(path);
      }),
    rmdir: (path, cb) => answer('rmdir', path, cb, () => staging.rmdir(path)),
    chmod: (path, mode, cb) => answer('chmod', path, cb, () => staging.chmod(path, mode)),
    utimens: (path, _atime, _mtime, cb) =>
      answer('utimens', path, cb, async () => {
        await fs.getattr(path);
      }),
    chown: (path, uid, gid, cb) =>
      answer('chown', path, cb, async () => {
        await fs.getattr(path);
        const unchanged = (id: number, mine: number): boolean => id === mine || id === NO_ID;
        if (!unchanged(uid, process.getuid?.() ?? 0) || !unchanged(gid, process.getgid?.() ?? 0)) {
          throw new FsError(EPERM, `a volume stores no owners: every file belongs to the user who mounted it`);
        }
      }),
    mknod: refuse('mknod', 'a volume stores regular files only'),
    link: refuse('link', 'a volume stores regular files only (no hard links)'),
    symlink: refuse('symlink', 'a volume stores regular files only (no symbolic links)'),
    setxattr: refuse('setxattr', 'a volume stores no extended attributes'),
    removexattr: refuse('removexattr', 'a volume stores no extended attributes'),
    fsync: (path, _datasync, fd, cb) => {
      if (!staging.owns(fd)) return cb(0);
      opts.commit('fsync').then(
        () => cb(0),
        (err: unknown) => {
          log.error({ path, err: messageOf(err), staging: staging.dir }, 'fsync: the commit failed; the changes stay staged');
          cb(-EIO);
        },
      );
    },
    statfs: (path, cb) => {
      // Free space is the staging directory's: that is where new bytes go first.
      base.statfs!(path, (err, st) => {
        if (err || !st) return cb(err);
        statfs(staging.dir).then(
          (local) => {
            const free = Math.min(0xffff_ffff, Math.floor((local.bavail * local.bsize) / BLOCK));
            cb(0, { ...st, blocks: Math.min(0xffff_ffff, st.blocks + free), bfree: free, bavail: free, flag: 0 });
          },
          () => cb(0, { ...st, flag: 0 }),
        );
      });
    },
  };
}
