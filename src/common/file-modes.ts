/**
 * Modes of what stowage keeps on local disk: the server's data directory, a
 * host's chunk cache, a worker's work directory. They hold tokens, dict and
 * queue values and volume bytes, so they are private to their user (0700
 * directories, 0600 files) unless the user asked to share a chunk cache with
 * a group (0750, 0640). Modes are set with chmod, never left to the umask,
 * and existing trees with other modes are brought in line at start.
 */
import { chmodSync, mkdirSync, statSync, type Stats } from 'node:fs';
import { chmod, lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { FailedPreconditionError } from './errors.js';

export interface FileModes {
  dir: number;
  file: number;
}

/** Only the owner reads or writes. */
export const PRIVATE: Readonly<FileModes> = { dir: 0o700, file: 0o600 };
/** The owner's group may read too (a chunk cache shared by the users of a group). */
export const GROUP_READABLE: Readonly<FileModes> = { dir: 0o750, file: 0o640 };

/** The names `--cache-mode` takes. */
export const CACHE_MODES = { private: PRIVATE, shared: GROUP_READABLE } as const;
export type CacheModeName = keyof typeof CACHE_MODES;

/**
 * Makes `dir` (and missing parents, which get the same mode) and sets `dir`
 * itself to exactly `modes.dir`. Returns whether an existing directory's mode
 * had to change. Refuses (FailedPreconditionError) a directory that is not
 * this user's to change: one with the sticky bit (/tmp and the like, shared
 * by everyone) or owned by another user.
 */
export function ensureDir(dir: string, modes: Readonly<FileModes>): boolean {
  const made = mkdirSync(dir, { recursive: true, mode: modes.dir });
  const st = statSync(dir);
  if (made === undefined) checkOwnDir(dir, st);
  if ((st.mode & 0o7777) === modes.dir) return false;
  chmodSync(dir, modes.dir);
  return made === undefined;
}

function checkOwnDir(dir: string, st: Stats): void {
  if (st.mode & 0o1000) {
    throw new FailedPreconditionError(`${dir} is a directory every user shares (it has the sticky bit, as /tmp does); give stowage a directory of its own, e.g. ${join(dir, 'stowage')}`);
  }
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) {
    throw new FailedPreconditionError(`${dir} belongs to user ${st.uid}, not to this one (${uid}); run stowage as its owner, or give it a directory of its own`);
  }
}

/**
 * Sets every directory at or below `root` to `modes.dir` and every regular
 * file to `modes.file`, where they differ; symbolic links and other kinds are
 * left alone, and so is a subtree for which `skip` says true. Entries that
 * vanish during the walk are passed over. Returns the paths it changed.
 */
export async function setTreeModes(
  root: string,
  modes: Readonly<FileModes>,
  skip: (path: string) => boolean = () => false,
): Promise<string[]> {
  const changed: string[] = [];
  const visit = async (path: string): Promise<void> => {
    if (skip(path)) return;
    const st = await lstat(path).catch(() => undefined);
    if (!st) return;
    const want = st.isDirectory() ? modes.dir : st.isFile() ? modes.file : undefined;
    if (want === undefined) return;
    if ((st.mode & 0o7777) !== want) {
      await chmod(path, want);
      changed.push(path);
    }
    if (st.isDirectory()) {
      const names = await readdir(path).catch(() => [] as string[]);
      for (const name of names) await visit(join(path, name));
    }
  };
  await visit(root);
  return changed;
}
