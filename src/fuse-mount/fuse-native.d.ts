/**
 * Types for the parts of fuse-native 2.2 (untyped, CommonJS) that the mount
 * uses. Callbacks take a negative errno, or 0; `read` answers with the byte
 * count in place of the errno (see fuse-native's index.js, `_op_read`).
 */
declare module 'fuse-native' {
  /** A stat as fuse-native packs it: uint32 fields, times in ms (Date or number). */
  export interface FuseStat {
    mode: number;
    uid: number;
    gid: number;
    size: number;
    dev?: number;
    nlink?: number;
    /** Used by the kernel only when the mount has the `use_ino` option. 32 bits. */
    ino?: number;
    rdev?: number;
    blksize?: number;
    blocks?: number;
    atime: Date | number;
    mtime: Date | number;
    ctime: Date | number;
  }

  export interface FuseStatfs {
    bsize: number;
    frsize: number;
    blocks: number;
    bfree: number;
    bavail: number;
    files: number;
    ffree: number;
    favail: number;
    fsid: number;
    flag: number;
    namemax: number;
  }

  type Done = (err: number) => void;

  export interface FuseOps {
    init?(cb: Done): void;
    access?(path: string, mode: number, cb: Done): void;
    statfs?(path: string, cb: (err: number, st?: FuseStatfs) => void): void;
    getattr?(path: string, cb: (err: number, st?: FuseStat) => void): void;
    /**
     * fuse-native's own _op_readdir takes FuseStat objects; StowageFuse's
     * takes them already in fuse-native's layout (18 uint32 each, see
     * dir-listing.ts) and passes them on as they are.
     */
    readdir?(path: string, cb: (err: number, names?: string[], stats?: FuseStat[] | Uint32Array[]) => void): void;
    open?(path: string, flags: number, cb: (err: number, fd?: number) => void): void;
    release?(path: string, fd: number, cb: Done): void;
    /** Copy up to `length` bytes into `buffer`, then cb(bytesCopied) (0 at EOF) or cb(-errno). */
    read?(path: string, fd: number, buffer: Buffer, length: number, position: number, cb: (result: number) => void): void;
    write?(path: string, fd: number, buffer: Buffer, length: number, position: number, cb: (result: number) => void): void;
    create?(path: string, mode: number, cb: (err: number, fd?: number) => void): void;
    truncate?(path: string, size: number, cb: Done): void;
    ftruncate?(path: string, fd: number, size: number, cb: Done): void;
    utimens?(path: string, atime: number, mtime: number, cb: Done): void;
    chmod?(path: string, mode: number, cb: Done): void;
    chown?(path: string, uid: number, gid: number, cb: Done): void;
    mknod?(path: string, mode: number, dev: number, cb: Done): void;
    unlink?(path: string, cb: Done): void;
    rename?(src: string, dest: string, cb: Done): void;
    link?(src: string, dest: string, cb: Done): void;
    symlink?(src: string, dest: string, cb: Done): void;
    mkdir?(path: string, mode: number, cb: Done): void;
    rmdir?(path: string, cb: Done): void;
    /** fsync(2)/fdatasync(2) of an open file (`datasync` non-zero for the latter). */
    fsync?(path: string, datasync: number, fd: number, cb: Done): void;
    setxattr?(path: string, name: string, value: Buffer, position: number, flags: number, cb: Done): void;
    removexattr?(path: string, name: string, cb: Done): void;
  }

  export interface FuseOptions {
    debug?: boolean;
    force?: boolean;
    mkdir?: boolean;
    /** Per-op deadline in ms (default 15 s), or false; an op past it answers ETIMEDOUT. */
    timeout?: number | false | { default?: number; [op: string]: number | undefined };
    fsname?: string;
    subtype?: string;
    kernelCache?: boolean;
    autoCache?: boolean;
    /** Seconds. */
    entryTimeout?: number;
    /** Seconds. */
    attrTimeout?: number;
    allowOther?: boolean;
    defaultPermissions?: boolean;
    maxRead?: number;
  }

  export default class Fuse {
    constructor(mnt: string, ops: FuseOps, opts?: FuseOptions);
    readonly mnt: string;
    mount(cb: (err: Error | null) => void): void;
    unmount(cb: (err: Error | null) => void): void;
    /** The `-o…` argument handed to libfuse; overridable to add options fuse-native does not know. */
    protected _fuseOptions(): string;
    protected readonly ops: FuseOps;
    /** Called by the native side for each readdir; `signal` answers it. */
    protected _op_readdir(signal: (err: number, names?: string[], stats?: FuseStat[] | Uint32Array[]) => void, path: string): void;
    static unmount(mnt: string, cb: (err: Error | null) => void): void;
  }
}
