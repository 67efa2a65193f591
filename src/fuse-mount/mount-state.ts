/**
 * The state file of a running mount, and reloading a mount from another
 * process (`stowage volume reload DIR`).
 *
 * - One small JSON file per mount, named after a hash of the mount point's
 *   real path, in the user's runtime directory (STOWAGE_RUNTIME_DIR, else
 *   $XDG_RUNTIME_DIR/stowage, else <tmpdir>/stowage-<uid>). The mount process
 *   writes it once mounted and after every reload, and removes it when it
 *   unmounts (a mount process that was killed leaves its file behind; the
 *   next mount removes the files of processes that are gone). Writes are atomic (temporary file, then rename), so a reader
 *   sees one state or the next.
 * - `reloads` counts the reloads the mount has finished (or failed: then
 *   `lastError` says why); a reloader reads it, sends SIGHUP to `pid`, and
 *   waits for the count to move.
 * - A file is trusted only for a live stowage mount: the mount point must be
 *   listed as a `fuse.stowage` mount and the process must exist.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, readdir, realpath, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { FailedPreconditionError, UnavailableError, messageOf } from '../common/errors.js';

export interface MountState {
  pid: number;
  mountpoint: string;
  volume: string;
  /** The version served now. */
  version: number;
  /** Reloads finished (successfully or not) since the mount started. */
  reloads: number;
  /** Why the last reload failed, when it did. */
  lastError?: string;
}

/** How long `reloadMount` waits for the mount to report, by default. */
const RELOAD_WAIT_MS = 10 * 60_000;
const POLL_MS = 50;

export function mountStateDir(): string {
  if (process.env.STOWAGE_RUNTIME_DIR) return process.env.STOWAGE_RUNTIME_DIR;
  if (process.env.XDG_RUNTIME_DIR) return join(process.env.XDG_RUNTIME_DIR, 'stowage');
  return join(tmpdir(), `stowage-${process.getuid?.() ?? 0}`);
}

function stateFile(realMountpoint: string): string {
  const key = createHash('sha256').update(realMountpoint).digest('hex').slice(0, 32);
  return join(mountStateDir(), `mount-${key}.json`);
}

/** Records `state` for its mount point (absolute, as mounted). */
export async function writeMountState(state: MountState): Promise<void> {
  const dir = mountStateDir();
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const file = stateFile(state.mountpoint);
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, `${JSON.stringify(state)}\n`, { mode: 0o600 });
  await rename(tmp, file);
}

/** Removes the state files of mount processes that no longer exist (killed ones leave theirs). */
export async function pruneMountStates(): Promise<void> {
  const dir = mountStateDir();
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return;
  }
  for (const name of names.filter((n) => n.startsWith('mount-') && n.endsWith('.json'))) {
    try {
      const state = JSON.parse(await readFile(join(dir, name), 'utf8')) as MountState;
      if (!alive(state.pid)) await rm(join(dir, name), { force: true });
    } catch {
      // Being written or removed by its owner right now: leave it.
    }
  }
}

export async function removeMountState(mountpoint: string): Promise<void> {
  await rm(stateFile(mountpoint), { force: true });
}

async function readMountState(mountpoint: string): Promise<MountState | undefined> {
  try {
    return JSON.parse(await readFile(stateFile(mountpoint), 'utf8')) as MountState;
  } catch {
    return undefined;
  }
}

/** Whether /proc/self/mounts lists `mountpoint` as a stowage FUSE mount. */
async function isStowageMount(mountpoint: string): Promise<boolean> {
  const mounts = await readFile('/proc/self/mounts', 'utf8');
  const unescape = (f: string): string => f.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
  return mounts.split('\n').some((line) => {
    const [, dir, type] = line.split(' ');
    return type === 'fuse.stowage' && unescape(dir ?? '') === mountpoint;
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Asks the mount process serving `dir` to move to the newest version (SIGHUP)
 * and waits until it has. FailedPreconditionError when `dir` is not a running
 * stowage mount of this user, or when the reload failed.
 */
export async function reloadMount(dir: string, opts: { waitMs?: number } = {}): Promise<{ from: number; to: number; state: MountState }> {
  let mountpoint: string;
  try {
    mountpoint = await realpath(resolve(dir));
  } catch (err) {
    throw new FailedPreconditionError(`${dir} is not a stowage mount (${messageOf(err)})`);
  }
  if (!(await isStowageMount(mountpoint))) throw new FailedPreconditionError(`${dir} is not a stowage mount`);
  const before = await readMountState(mountpoint);
  if (!before || !alive(before.pid)) {
    throw new FailedPreconditionError(`no running stowage mount process found for ${dir} (it was mounted by another user, or its process is gone)`);
  }
  process.kill(before.pid, 'SIGHUP');
  const deadline = Date.now() + (opts.waitMs ?? RELOAD_WAIT_MS);
  for (;;) {
    await new Promise((r) => setTimeout(r, POLL_MS));
    const now = await readMountState(mountpoint);
    if (!now || now.pid !== before.pid || !alive(before.pid)) throw new FailedPreconditionError(`the mount process of ${dir} went away during the reload`);
    if (now.reloads > before.reloads) {
      if (now.lastError !== undefined) throw new FailedPreconditionError(`reloading ${dir} failed: ${now.lastError}`);
      return { from: before.version, to: now.version, state: now };
    }
    if (Date.now() > deadline) throw new UnavailableError(`the mount process of ${dir} (pid ${before.pid}) did not report a reload in time`);
  }
}
