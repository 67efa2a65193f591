/** `stowage mount` and `stowage unmount`: a read-only FUSE mount of one version of a volume (SIGHUP moves it to the newest). */
import type { Command } from 'commander';
import { realpath } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { InvalidArgumentError, defaultConnection } from '../client/index.js';
import { messageOf } from '../common/errors.js';
import { createLogger } from '../common/logger.js';
import { DiskChunkCache } from '../fuse-mount/disk-cache.js';
import { VolumeFilesystem } from '../fuse-mount/filesystem.js';
import { MemoryChunkCache } from '../fuse-mount/memory-cache.js';
import { isMounted, mountVolume, unmountPath, type Mounted } from '../fuse-mount/mount.js';
import { pruneMountStates, removeMountState, writeMountState, type MountState } from '../fuse-mount/mount-state.js';

const UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1000,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1000 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1000 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1000 ** 4,
  tib: 1024 ** 4,
};

/** "512MiB", "10GiB", "1.5G" (binary), "500MB" (decimal) or bytes; 0 only with `allowZero`. */
export function parseSize(flag: string, text: string, opts: { allowZero?: boolean } = {}): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  const unit = m ? UNITS[m[2]!.toLowerCase()] : undefined;
  const n = m && unit ? Math.floor(Number(m[1]) * unit) : NaN;
  if (!Number.isSafeInteger(n) || n < (opts.allowZero ? 0 : 1)) {
    throw new InvalidArgumentError(`${flag} ${text} is not a size (examples: 512MiB, 10GiB, 1000000)`);
  }
  return n;
}

/** The host's chunk cache directory when --cache-dir is not given (shared with `stowage volume warmup`). */
export function defaultCacheDir(): string {
  return process.env.STOWAGE_CACHE_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'stowage');
}

/** --cache-size when not given. */
export const DEFAULT_CACHE_SIZE = '10GiB';

interface MountFlags {
  version?: string;
  cacheDir?: string;
  cacheSize: string;
  memoryCacheSize: string;
  prefetchWindow: string;
  debug?: boolean;
}

/** How often the mount process checks whether someone else unmounted it (stowage unmount, fusermount -u). */
const WATCH_MS = 1000;

export function register(program: Command): void {
  program
    .command('mount <volume> <dir>')
    .description('mount one version of a volume read-only at DIR, in the foreground (Ctrl-C unmounts; SIGHUP or stowage volume reload DIR moves it to the newest version)')
    .option('--version <n>', 'mount this version instead of the latest')
    .option('--cache-dir <dir>', 'chunk cache directory, shared by mounts on this host (default: STOWAGE_CACHE_DIR or ~/.cache/stowage)')
    .option('--cache-size <size>', 'bound on the chunk cache on disk', DEFAULT_CACHE_SIZE)
    .option('--memory-cache-size <size>', 'bound on hot chunks kept in memory', '256MiB')
    .option('--prefetch-window <size>', 'most bytes fetched ahead of a sequential reader, per open file (0: no prefetch)', '64MiB')
    .option('--debug', 'print libfuse debug output')
    .action(async (name: string, dir: string, flags: MountFlags) => {
      let version: number | undefined;
      if (flags.version !== undefined) {
        version = Number(flags.version);
        if (!Number.isInteger(version) || version < 1) {
          throw new InvalidArgumentError(`--version ${flags.version} is not a version number (1, 2, …)`);
        }
      }
      const diskBytes = parseSize('--cache-size', flags.cacheSize);
      const memoryBytes = parseSize('--memory-cache-size', flags.memoryCacheSize);
      const prefetchWindow = parseSize('--prefetch-window', flags.prefetchWindow, { allowZero: true });
      const log = createLogger('mount');
      const disk = await DiskChunkCache.open({ dir: flags.cacheDir ?? defaultCacheDir(), maxBytes: diskBytes, logger: log });
      const cache = new MemoryChunkCache(disk, { maxBytes: memoryBytes });
      let fs: VolumeFilesystem;
      try {
        fs = await VolumeFilesystem.load({
          connection: defaultConnection(),
          volume: name,
          version,
          cache,
          prefetch: { maxWindow: prefetchWindow },
        });
      } catch (err) {
        await cache.close();
        throw err;
      }
      let mounted;
      try {
        mounted = await mountVolume(fs, dir, { logger: log, debug: flags.debug });
      } catch (err) {
        await fs.close();
        throw err;
      }
      // Listening before the state file tells `stowage volume reload` where to send SIGHUP.
      // One reload after another, each recorded before the next starts.
      let state: MountState | undefined;
      let reloads = Promise.resolve();
      process.on('SIGHUP', () => {
        reloads = reloads.then(() => reloadOnSignal(mounted, name, () => state));
      });
      state = await recordMount(mounted, name, log);
      console.log(`mounted ${name} version ${fs.version} at ${mounted.mountpoint}`);

      const reason = await new Promise<string>((done) => {
        process.once('SIGINT', () => done('SIGINT'));
        process.once('SIGTERM', () => done('SIGTERM'));
        // Started by a `stowage worker` with an IPC channel: the mount goes when the worker does (even killed).
        process.once('disconnect', () => done('its worker exited'));
        const watch = setInterval(() => {
          isMounted(mounted.mountpoint).then(
            (still) => still || done('unmounted'),
            () => undefined,
          );
        }, WATCH_MS);
        watch.unref();
      });
      if (state) {
        const { mountpoint } = state;
        state = undefined; // a reload finishing from now on records nothing
        await removeMountState(mountpoint).catch(() => undefined);
      }
      // fuse-native keeps a libuv handle referenced once its FUSE thread has
      // started, whether or not it unmounted itself: leave explicitly.
      try {
        await mounted.unmount();
      } catch (err) {
        console.error(`error: unmounting ${mounted.mountpoint} failed: ${messageOf(err)}`);
        process.exit(1);
      }
      console.error(`unmounted ${mounted.mountpoint} (${reason})`);
      process.exit(0);
    });

  program
    .command('unmount <dir>')
    .description('unmount a stowage mount (its mount process then exits)')
    .option('-z, --lazy', 'detach now even if files are open; the mount goes once they are closed')
    .action(async (dir: string, flags: { lazy?: boolean }) => {
      await unmountPath(dir, flags.lazy);
      console.log(`unmounted ${dir}`);
    });
}

/** Writes the mount's state file (mount-state.ts), so that `stowage volume reload` finds this process; undefined when it cannot. */
async function recordMount(mounted: Mounted, volume: string, log: ReturnType<typeof createLogger>): Promise<MountState | undefined> {
  try {
    const state: MountState = { pid: process.pid, mountpoint: await realpath(mounted.mountpoint), volume, version: mounted.version, reloads: 0 };
    await pruneMountStates();
    await writeMountState(state);
    return state;
  } catch (err) {
    log.warn({ err: messageOf(err) }, 'cannot write the mount state file: stowage volume reload will not find this mount (SIGHUP still works)');
    return undefined;
  }
}

/** SIGHUP: reload to the newest version, log it on stderr and record it in the state file. */
async function reloadOnSignal(mounted: Mounted, volume: string, current: () => MountState | undefined): Promise<void> {
  let lastError: string | undefined;
  try {
    const r = await mounted.reload();
    console.error(
      r.from === r.to
        ? `reloaded ${volume} at ${mounted.mountpoint}: version ${r.to} is the newest, nothing changed`
        : `reloaded ${volume} at ${mounted.mountpoint}: version ${r.from} -> ${r.to} (${r.added} added, ${r.changed} changed, ${r.removed} removed)`,
    );
  } catch (err) {
    lastError = messageOf(err);
    console.error(`error: reloading ${volume} at ${mounted.mountpoint} failed, still serving version ${mounted.version}: ${lastError}`);
  }
  const state = current();
  if (!state) return;
  state.reloads++;
  state.version = mounted.version;
  if (lastError === undefined) delete state.lastError;
  else state.lastError = lastError;
  await writeMountState(state).catch((err: unknown) => console.error(`error: cannot update the mount state file: ${messageOf(err)}`));
}
