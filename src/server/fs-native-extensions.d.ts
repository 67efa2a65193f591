/**
 * Types for the part of fs-native-extensions 1.5 (untyped, CommonJS) that the
 * data directory lock uses. On Linux its locks are open file description locks
 * (fcntl F_OFD_SETLK): held by an open file, released when the file is closed
 * or its process dies, and exclusive between two opens in one process too.
 */
declare module 'fs-native-extensions' {
  interface FsNativeExtensions {
    /** Takes the lock without waiting: false when another open file holds it. Exclusive unless `shared`. */
    tryLock(fd: number, opts?: { shared?: boolean }): boolean;
    unlock(fd: number): void;
  }
  const fsx: FsNativeExtensions;
  export default fsx;
}
