/**
 * The one place where errors become errno values (Mountpoint's fs/error.rs).
 * Everything below the FUSE layer throws StowageError (or a Node system error);
 * the FUSE callbacks answer with `-errno(err)`. Linux numbers: fuse-native
 * prebuilds exist for Linux and macOS only, and the mount is Linux-only for now.
 */
import { StowageError, type ErrorCode } from '../common/errors.js';

export const EPERM = 1;
export const ENOENT = 2;
export const EIO = 5;
export const EBADF = 9;
export const EACCES = 13;
export const EEXIST = 17;
export const EXDEV = 18;
export const ENOTDIR = 20;
export const EISDIR = 21;
export const EINVAL = 22;
export const ENOSPC = 28;
export const EROFS = 30;
export const ENOSYS = 38;
export const ENOTEMPTY = 39;
export const ENOTSUP = 95;
export const ETIMEDOUT = 110;
export const EDQUOT = 122;

const byCode: Record<ErrorCode, number> = {
  NOT_FOUND: ENOENT,
  INVALID_ARGUMENT: EINVAL,
  ALREADY_EXISTS: EIO,
  FAILED_PRECONDITION: EIO,
  // The server or the object store could not be reached: the read may work later.
  UNAVAILABLE: EIO,
  UNAUTHENTICATED: EACCES,
  PERMISSION_DENIED: EACCES,
  // A chunk that fails its hash is never returned as data.
  INTEGRITY: EIO,
  // Function-call errors (compute bridge) do not reach the mount; mapped for completeness.
  DEADLINE_EXCEEDED: ETIMEDOUT,
  FUNCTION_ERROR: EIO,
  CANCELLED: EIO,
  // The server's disk is full (the write may work once space is freed there), or a message was over its size limit.
  RESOURCE_EXHAUSTED: ENOSPC,
  INTERNAL: EIO,
};

/** Node system errors passed on as they are (from the staging directory of a writable mount, mostly). */
const SYSTEM: Record<string, number> = { ENOENT, EACCES, EISDIR, ENOTDIR, EROFS, ETIMEDOUT, ENOSPC, EDQUOT };

/** An error raised by the filesystem layer with an errno chosen there (ENOENT, EROFS, …). */
export class FsError extends Error {
  constructor(
    readonly errno: number,
    message: string,
  ) {
    super(message);
    this.name = 'FsError';
  }
}

/** The positive errno for any error thrown below the FUSE callbacks; EIO when nothing better fits. */
export function errnoOf(err: unknown): number {
  if (err instanceof FsError) return err.errno;
  if (err instanceof StowageError) return byCode[err.code];
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return (code !== undefined && SYSTEM[code]) || EIO;
}
