/**
 * The server's data directory: one server at a time, private to its user.
 *
 * Lock. `<data-dir>/server.lock` is held with an exclusive OS lock (an open
 * file description lock, fs-native-extensions) for as long as the server runs;
 * the kernel drops it when the process ends however it ends (SIGKILL too), so
 * no stale lock is ever left to clean up. The holder writes its PID into the
 * file after taking the lock, so that a second server can name it. The lock
 * is taken before anything in the directory is opened or changed: two
 * servers on one directory would each keep their own view of volumes, calls
 * and waiting gets over the same files.
 *
 * Modes. The directory is 0700 and everything in it 0600 (files) or 0700
 * (directories), whatever the umask: the token, chunks, the LMDB stores. A
 * directory found with other modes is set right at start and the change
 * logged. Only what stowage keeps there is walked (a directory given by
 * hand may hold other things), and a directory shared by all users (sticky,
 * as /tmp) or owned by another user is refused. The walk skips `store/`
 * (which may hold millions of chunks) unless the directory itself or `store/`
 * had other modes, which is the case of a directory made before modes were
 * set (once: after that they are 0700).
 */
import { closeSync, ftruncateSync, openSync, readFileSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import fsx from 'fs-native-extensions';
import { TOKEN_FILE } from '../common/config.js';
import { FailedPreconditionError, messageOf } from '../common/errors.js';
import { PRIVATE, ensureDir, setTreeModes } from '../common/file-modes.js';
import type { Logger } from '../common/logger.js';

export const LOCK_FILE = 'server.lock';
/** What a server keeps in its data directory. */
const OURS = [TOKEN_FILE, LOCK_FILE, 'store', 'index', 'dict', 'queue', 'bridge'];
/** How long to wait for the holder to write its PID after it took the lock. */
const HOLDER_PID_WAIT_MS = 1000;

export interface DataDirLock {
  /** Releases the lock (the file stays: a lock, not the file, says the directory is in use). */
  release(): void;
}

/**
 * Makes `dir` (0700) and locks it for this process, then sets the modes of
 * what is in it. Throws FailedPreconditionError naming the holder's PID when
 * another process holds the lock.
 */
export async function openDataDir(dir: string, log: Logger): Promise<DataDirLock> {
  let rootMode: number | undefined;
  try {
    rootMode = statSync(dir).mode & 0o7777;
  } catch {
    // absent: made below
  }
  ensureDir(dir, PRIVATE);
  const lock = await lockDataDir(dir);
  try {
    const storeMode = modeOf(join(dir, 'store'));
    const walkStore = (rootMode !== undefined && rootMode !== PRIVATE.dir) || (storeMode !== undefined && storeMode !== PRIVATE.dir);
    const changed: string[] = rootMode !== undefined && rootMode !== PRIVATE.dir ? [dir] : [];
    // Only what stowage keeps here: a data directory given by hand may hold other things.
    for (const name of OURS) {
      if (name === 'store' && !walkStore) continue;
      changed.push(...(await setTreeModes(join(dir, name), PRIVATE)));
    }
    if (changed.length) {
      log.info(
        { dataDir: dir, changed: changed.length, examples: changed.slice(0, 5) },
        `set the modes of ${changed.length} files and directories in the data directory ${dir} to 0700 (directories) and 0600 (files): other local users could read them`,
      );
    }
  } catch (err) {
    lock.release();
    throw err;
  }
  return lock;
}

function modeOf(path: string): number | undefined {
  try {
    return statSync(path).mode & 0o7777;
  } catch {
    return undefined;
  }
}

async function lockDataDir(dir: string): Promise<DataDirLock> {
  const path = join(dir, LOCK_FILE);
  let fd: number;
  try {
    fd = openSync(path, 'a+', PRIVATE.file);
  } catch (err) {
    throw new FailedPreconditionError(`cannot open the lock file of the data directory ${dir} (${path}): ${messageOf(err)}`);
  }
  let locked: boolean;
  try {
    locked = fsx.tryLock(fd);
  } catch (err) {
    closeSync(fd);
    throw new FailedPreconditionError(`cannot lock the data directory ${dir} (${path}): ${messageOf(err)}`);
  }
  if (!locked) {
    closeSync(fd);
    const pid = await holderPid(path);
    throw new FailedPreconditionError(
      `the data directory ${dir} is in use by another stowage server (${pid === undefined ? 'PID unknown' : `PID ${pid}`}, holding ${path}); ` +
        'stop that server first, or start this one with another --data-dir',
    );
  }
  // 'a+' appends whatever the position: empty the file, then the PID is its only content.
  ftruncateSync(fd, 0);
  writeSync(fd, `${process.pid}\n`);
  let held = true;
  return {
    release() {
      if (!held) return;
      held = false;
      fsx.unlock(fd);
      closeSync(fd);
    },
  };
}

/** The PID the holder wrote, waiting a little for a holder that has only just taken the lock. */
async function holderPid(path: string): Promise<number | undefined> {
  const until = Date.now() + HOLDER_PID_WAIT_MS;
  for (;;) {
    let text = '';
    try {
      text = readFileSync(path, 'utf8').trim();
    } catch {
      // unreadable: unknown
    }
    if (/^\d+$/.test(text)) return Number(text);
    if (Date.now() >= until) return undefined;
    await new Promise((r) => setTimeout(r, 50));
  }
}
