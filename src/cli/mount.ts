/**
 * `stowage mount` and `stowage unmount`: a FUSE mount of one version of a
 * volume, read-only (SIGHUP moves it to the newest), or writable (changes are
 * staged and committed as new versions). Here: the flags, the chunk cache
 * and the filesystem; the mount process itself (signals, state file, commit
 * requests, unmount and exit) is fuse-mount/mount-process.ts.
 */
import type { Command } from 'commander';
import { randomBytes } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { InvalidArgumentError, defaultConnection, defaultFetchThreads } from '../client/index.js';
import { CACHE_MODES, type CacheModeName, type FileModes } from '../common/file-modes.js';
import { createLogger, type Logger } from '../common/logger.js';
import { DiskChunkCache } from '../fuse-mount/cache/disk-cache.js';
import { VolumeFilesystem } from '../fuse-mount/filesystem.js';
import { unmountPath } from '../fuse-mount/mount.js';
import { runMountProcess } from '../fuse-mount/mount-process.js';
import { alive } from '../common/processes.js';
import { commitMount, liveMountState } from '../fuse-mount/mount-state.js';
import { parseDuration } from '../common/duration.js';
import { quote } from '../common/quote.js';
import { parseSize } from '../common/size.js';

export { parseSize };

/** The host's chunk cache directory when --cache-dir is not given (shared with `stowage volume warmup`). */
export function defaultCacheDir(): string {
  return process.env.STOWAGE_CACHE_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'stowage');
}

/** --cache-mode: who may read the chunk cache (the same for mount, warmup and worker). */
export const CACHE_MODE_FLAGS = '--cache-mode <mode>';
export const CACHE_MODE_HELP =
  'private: only this user reads the chunk cache (0700 directories, 0600 files; the default); shared: its group may read it too (0750, 0640)';

/** The modes --cache-mode names. */
export function cacheModes(mode: string): Readonly<FileModes> {
  if (!Object.hasOwn(CACHE_MODES, mode)) {
    throw new InvalidArgumentError(`--cache-mode ${quote(mode)}: choose ${Object.keys(CACHE_MODES).join(' or ')}`);
  }
  return CACHE_MODES[mode as CacheModeName];
}

/** --fetch-threads: the chunk cache's fetch threads (the same for mount and warmup). */
export const FETCH_THREADS_FLAGS = '--fetch-threads <n>';
export const FETCH_THREADS_HELP =
  'threads that fetch, verify and write chunks into the cache, 0 to 64 (0: on the calling thread; default: one per core up to 4, a mount leaving one core to its FUSE thread)';

/** The value of --fetch-threads, or its default (`mount`: leaving a core to the FUSE thread). */
export function parseFetchThreads(text: string | undefined, mount: boolean): number {
  if (text === undefined) return defaultFetchThreads(mount);
  const n = /^\d{1,2}$/.test(text) ? Number(text) : NaN;
  if (!(n <= 64)) throw new InvalidArgumentError(`--fetch-threads ${quote(text)} is not a number of threads from 0 to 64`);
  return n;
}

/** --cache-size when not given. */
export const DEFAULT_CACHE_SIZE = '10GiB';
/**
 * --memory-cache-size when not given. Chunks live in cache files (the page
 * cache is their memory tier); memory holds only those whose files could not
 * be written (a full or vanished cache disk), so that the mount still serves
 * them.
 */
const DEFAULT_MEMORY_CACHE_SIZE = '64MiB';

/** --tree-cache-size when not given: the pages of several hundred thousand entries (fuse-mount/tree-source.ts). */
const DEFAULT_TREE_CACHE_SIZE = '32MiB';

interface MountFlags {
  version?: string;
  cacheDir?: string;
  cacheSize: string;
  cacheMode: string;
  memoryCacheSize: string;
  treeCacheSize: string;
  prefetchWindow: string;
  fetchThreads?: string;
  writable?: boolean;
  stagingDir?: string;
  dropUncommitted?: boolean;
  debug?: boolean;
  clientName: string;
  reportInterval: string;
}

export function register(program: Command): void {
  program
    .command('mount <volume> <dir>')
    .description(
      'mount one version of a volume at DIR, in the foreground (Ctrl-C unmounts; SIGHUP or stowage volume reload DIR moves it to the newest version); ' +
        'read-only unless --writable',
    )
    .option('--version <n>', 'mount this version instead of the latest')
    .option('--writable', 'stage new files and whole-file rewrites locally; commit them as one version on stowage volume commit DIR, fsync, and unmount')
    .option('--staging-dir <dir>', 'where a writable mount stages changes, in a fresh subdirectory (default: <cache dir>/staging)')
    .option(
      '--drop-uncommitted',
      'with --writable: commit only on stowage volume commit DIR; fsync commits nothing, and changes still staged when the mount ends (unmount, signal, its worker gone) are dropped',
    )
    .option('--cache-dir <dir>', 'chunk cache directory, shared by mounts on this host (default: STOWAGE_CACHE_DIR or ~/.cache/stowage)')
    .option('--cache-size <size>', 'bound on the chunk cache on disk', DEFAULT_CACHE_SIZE)
    .option(CACHE_MODE_FLAGS, CACHE_MODE_HELP, 'private')
    .option('--memory-cache-size <size>', 'bound on chunks kept in memory when the cache disk cannot take them (full, or gone)', DEFAULT_MEMORY_CACHE_SIZE)
    .option('--tree-cache-size <size>', 'bound on the directory pages (tree objects) kept in memory', DEFAULT_TREE_CACHE_SIZE)
    .option('--prefetch-window <size>', 'most bytes fetched ahead of a sequential reader, per open file (0: no prefetch)', '32MiB')
    .option(FETCH_THREADS_FLAGS, FETCH_THREADS_HELP)
    .option('--client-name <name>', 'how this mount names itself in its reports to the server (the dashboard shows it)', 'mount')
    .option('--report-interval <duration>', 'how often the mount reports its cache hits, misses and bytes to the server (0: never)', '5s')
    .option('--debug', 'print libfuse debug output')
    .action(async (name: string, dir: string, flags: MountFlags) => {
      let version: number | undefined;
      if (flags.version !== undefined) {
        version = Number(flags.version);
        if (!Number.isInteger(version) || version < 1) {
          throw new InvalidArgumentError(`--version ${quote(flags.version)} is not a version number (1, 2, …)`);
        }
      }
      if (flags.writable && version !== undefined) {
        throw new InvalidArgumentError('--writable mounts the latest version (its commits make the next ones); leave out --version');
      }
      if (flags.stagingDir !== undefined && !flags.writable) throw new InvalidArgumentError('--staging-dir needs --writable');
      if (flags.dropUncommitted && !flags.writable) throw new InvalidArgumentError('--drop-uncommitted needs --writable');
      const diskBytes = parseSize('--cache-size', flags.cacheSize);
      const modes = cacheModes(flags.cacheMode);
      const memoryBytes = parseSize('--memory-cache-size', flags.memoryCacheSize);
      const treeCacheBytes = parseSize('--tree-cache-size', flags.treeCacheSize);
      const prefetchWindow = parseSize('--prefetch-window', flags.prefetchWindow, { allowZero: true });
      const fetchThreads = parseFetchThreads(flags.fetchThreads, true);
      const reportEveryMs = parseDuration('--report-interval', flags.reportInterval);
      if (!flags.clientName || flags.clientName.length > 256) throw new InvalidArgumentError('--client-name must be 1 to 256 characters');
      const log = createLogger('mount');
      const cacheDir = flags.cacheDir ?? defaultCacheDir();
      let stagingDir: string | undefined;
      if (flags.writable) {
        const parent = flags.stagingDir ?? join(cacheDir, 'staging');
        await warnLeftStaging(parent, log);
        stagingDir = join(parent, `${name}-${randomBytes(6).toString('hex')}`);
      }
      const cache = await DiskChunkCache.open({ dir: cacheDir, maxBytes: diskBytes, memoryBytes, fetchThreads, modes, logger: log });
      let fs: VolumeFilesystem;
      try {
        fs = await VolumeFilesystem.load({
          connection: defaultConnection(),
          volume: name,
          version,
          cache,
          prefetch: { maxWindow: prefetchWindow },
          treeCacheBytes,
          stagingDir,
        });
      } catch (err) {
        await cache.close();
        throw err;
      }
      await runMountProcess(fs, {
        volume: name,
        dir,
        logger: log,
        debug: flags.debug,
        connection: defaultConnection(),
        client: flags.clientName,
        reportEveryMs,
        dropUncommitted: flags.dropUncommitted,
      });
    });

  program
    .command('unmount <dir>')
    .description('unmount a stowage mount (its mount process then exits); a writable one commits first, and stays mounted if that fails')
    .option('-z, --lazy', 'detach now even if files are open; the mount goes once they are closed')
    .action(async (dir: string, flags: { lazy?: boolean }) => {
      if ((await liveMountState(dir))?.commitSocket) {
        const r = await commitMount(dir);
        if (r.version !== r.from) console.log(`committed ${dir}: version ${r.from} -> ${r.version}`);
      }
      await unmountPath(dir, flags.lazy);
      console.log(`unmounted ${dir}`);
    });
}

/** Tells about staging directories of writable mounts that ended without committing (a killed process leaves its own). */
async function warnLeftStaging(parent: string, log: Logger): Promise<void> {
  let names: string[];
  try {
    names = await readdir(parent);
  } catch {
    return;
  }
  for (const name of names) {
    try {
      const about = JSON.parse(await readFile(join(parent, name, 'staging.json'), 'utf8')) as { pid: number; volume: string };
      if (alive(about.pid)) continue;
      log.warn(
        { staging: join(parent, name), volume: about.volume },
        'a writable mount ended without committing its changes; nothing recovers them (their bytes are in files/ under numbered names): delete the directory when you no longer need it',
      );
    } catch {
      // Not a staging directory, or being made.
    }
  }
}
