/**
 * Telling the kernel that a reload changed paths it has cached, without
 * notifications: fuse-native (libfuse 2, high-level API) exposes no
 * invalidation call, so the mount process makes the kernel ask again by
 * doing file operations on its own mount point.
 *
 * Why this is needed. The mount lets the kernel cache lookups, attributes and
 * pages for an hour (mount.ts). And in libfuse's high-level API the kernel's
 * inode for a path is libfuse's node for (parent, name), whatever st_ino we
 * report: a new inode number alone would not give a changed file a fresh page
 * cache, and a reader of the old version and one of the new would share (and
 * mix) pages.
 *
 * - A changed or removed file is unlink(2)ed through the mount (the
 *   filesystem allows it for exactly these paths while the reload runs). The
 *   kernel drops its dentry; libfuse forgets the name, so the next lookup makes
 *   a new node, hence a new kernel inode with an empty page cache. A file still
 *   open is renamed by libfuse to a hidden name instead of being forgotten:
 *   its open handles keep the old inode, its cached pages and, through the
 *   handle, the old version's extents.
 * - Any other cached lookup that may be stale (a removed directory, an added
 *   path the kernel may remember as missing, a directory whose attributes
 *   changed) is redone by open(path, O_CREAT|O_EXCL): the exclusive-create
 *   intent makes FUSE revalidate the dentry with a fresh LOOKUP even within
 *   its timeout. Nothing is created (the filesystem refuses with EROFS, or the
 *   path exists: EEXIST).
 *
 * These calls go through libuv's thread pool and block there until the mount
 * answers them on the event loop, which stays free: at most CONCURRENCY at a
 * time, so reads keep some of the pool.
 */
import { constants } from 'node:fs';
import { lstat, open, stat, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import pLimit from 'p-limit';
import { messageOf } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { ReloadPlan } from './kernel-view.js';

const CONCURRENCY = 2;
/** Outcomes that mean the kernel now agrees with the new tree. */
const EXPECTED = new Set(['ENOENT', 'EEXIST', 'EROFS', 'EISDIR', 'ENOTDIR']);

/**
 * The device of the mount at `mountpoint`, or undefined if nothing is mounted
 * there any more (its device is its parent's).
 */
async function mountedDevice(mountpoint: string): Promise<number | undefined> {
  try {
    const [here, parent] = await Promise.all([stat(mountpoint), stat(dirname(mountpoint))]);
    return here.dev !== parent.dev ? here.dev : undefined;
  } catch {
    return undefined;
  }
}

/** Applies `plan` to the kernel's caches of the mount at `mountpoint` (absolute); never throws. */
export async function refreshKernelCache(mountpoint: string, plan: ReloadPlan, log: Logger): Promise<void> {
  const limit = pLimit(CONCURRENCY);
  const at = (path: string): string => (mountpoint === '/' ? path : mountpoint + path);
  // Every unlink and create below must reach this mount and nothing else: if
  // it has been unmounted, the same paths name the user's own files in the
  // directory underneath. So each call first checks it is still on the mount.
  const dev = await mountedDevice(mountpoint);
  if (dev === undefined) {
    log.warn({ mountpoint }, 'reload: nothing is mounted there any more; the kernel caches were left alone');
    return;
  }
  const quietly = async (what: string, path: string, op: () => Promise<unknown>): Promise<void> => {
    try {
      if ((await mountedDevice(mountpoint)) !== dev) return;
      const parent = await lstat(dirname(at(path)));
      if (parent.dev !== dev) return;
      await op();
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? '';
      if (!EXPECTED.has(code)) log.warn({ path, err: messageOf(err) }, `reload: ${what} failed; the kernel may serve the old entry until its cache times out`);
    }
  };
  // Files first: a removed directory must still resolve in the kernel while files below it are unlinked.
  await Promise.all(plan.unlink.map((p) => limit(() => quietly('unlink', p, () => unlink(at(p))))));
  await Promise.all(
    plan.revalidate.map((p) =>
      limit(() =>
        quietly('revalidate', p, async () => {
          const fh = await open(at(p), constants.O_CREAT | constants.O_EXCL | constants.O_RDONLY, 0o444);
          await fh.close();
        }),
      ),
    ),
  );
}
