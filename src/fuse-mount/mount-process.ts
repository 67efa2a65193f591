/**
 * The `stowage mount` process: one MountSession (mount-session.ts) served in
 * the foreground until something ends it, then unmounted, and the process
 * exits. The CLI (cli/mount.ts) parses the flags and loads the filesystem;
 * everything from mounting on is here.
 *
 * - Start, in this order: mount; take SIGHUP; a writable mount listens for
 *   commit requests (mount-state.ts; when it cannot, it warns and fsync and
 *   unmount still commit); write the state file (when it cannot, it warns and
 *   SIGHUP still works); print `mounted …` on stdout, the one line tests and
 *   workers wait for. SIGHUP is taken before the state file exists because
 *   the state file is what tells `stowage volume reload` where to send it.
 * - SIGHUP reloads to the newest version, one reload after another, each
 *   reported on stderr and recorded in the state file before the next starts.
 * - Commits are reported on stderr as they start, progress, end or fail; a
 *   finished one records its version in the state file.
 * - It ends on SIGINT, SIGTERM, the loss of its IPC channel (a `stowage
 *   worker` started it: the mount goes when the worker does, even killed), or
 *   the mount point no longer mounted (stowage unmount, fusermount -u; checked
 *   every WATCH_MS). Then: stop taking commit requests, remove the state file
 *   (a reload finishing from then on records nothing), unmount (a writable
 *   mount commits what is left), print `unmounted DIR (reason)` on stderr and
 *   exit 0, or print the error and exit 1 when unmounting failed.
 * - A failure to mount closes the filesystem, removes a staging that holds
 *   nothing, and rejects: the CLI reports it and chooses the exit code.
 */
import { realpath } from 'node:fs/promises';
import type { Connection } from '../client/connection.js';
import { Volume } from '../client/volume.js';
import { bytes } from '../common/bytes.js';
import { messageOf } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { VolumeFilesystem } from './filesystem.js';
import { isMounted, type Mounted } from './mount.js';
import { startMountReports } from './mount-report.js';
import { mountVolume } from './mount-session.js';
import { pruneMountStates, removeMountState, serveCommitRequests, writeMountState, type MountState } from './mount-state.js';
import type { CommitEvent } from './write/commit.js';

/** How often the mount process checks whether someone else unmounted it (stowage unmount, fusermount -u). */
const WATCH_MS = 1000;

export interface MountProcessOptions {
  /** The volume's name, as given: messages and the state file say it. */
  volume: string;
  /** The mount point, as given. */
  dir: string;
  logger: Logger;
  /** libfuse debug output on stderr. */
  debug?: boolean;
  /** Opens the volume a writable mount commits to, and takes the mount's reports. */
  connection: Connection;
  /** How the mount names itself in its reports: "mount", or "worker <id>" for a worker's. */
  client?: string;
  /** How often the mount reports its cache counters to the server (0: never). */
  reportEveryMs?: number;
  /** A writable mount commits only on request; what is staged when it ends is dropped (mount.ts MountOptions). */
  dropUncommitted?: boolean;
}

/**
 * Mounts `fs` and serves it until the process is told to stop (see the
 * header), then unmounts and exits. Rejects only when mounting failed.
 */
export async function runMountProcess(fs: VolumeFilesystem, opts: MountProcessOptions): Promise<never> {
  const { volume: name, dir, logger: log } = opts;
  let mounted: Mounted;
  let state: MountState | undefined;
  try {
    const commitTo = fs.staging ? await Volume.fromName(name, { connection: opts.connection }) : undefined;
    mounted = await mountVolume(fs, dir, {
      logger: log,
      debug: opts.debug,
      commitTo,
      dropUncommitted: opts.dropUncommitted,
      onCommit: (e) => {
        reportCommit(e, name, dir);
        if (e.kind === 'done' && state) {
          state.version = e.result.version;
          void writeMountState(state).catch(() => undefined);
        }
      },
    });
  } catch (err) {
    await fs.close();
    if (fs.staging && !fs.staging.hasChanges()) await fs.staging.remove();
    throw err;
  }
  // Listening before the state file tells `stowage volume reload` where to send SIGHUP.
  // One reload after another, each recorded before the next starts.
  let reloads = Promise.resolve();
  process.on('SIGHUP', () => {
    reloads = reloads.then(() => reloadOnSignal(mounted, name, () => state));
  });
  let commits: Awaited<ReturnType<typeof serveCommitRequests>> | undefined;
  if (mounted.writable) {
    try {
      commits = await serveCommitRequests(await realpath(mounted.mountpoint), () => mounted.commit('request'));
    } catch (err) {
      log.warn({ err: messageOf(err) }, 'cannot take commit requests: stowage volume commit will not find this mount (fsync and unmount still commit)');
    }
  }
  state = await recordMount(mounted, name, log, fs.staging?.dir, commits?.path);
  const reports = startMountReports(fs, opts.connection, opts.client ?? 'mount', log, opts.reportEveryMs);
  console.log(`mounted ${name} version ${fs.version} at ${mounted.mountpoint}${mounted.writable ? ` (writable; staging in ${fs.staging!.dir})` : ''}`);

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
  reports.stop();
  await commits?.close().catch(() => undefined);
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
}

/** One line on stderr per commit event of the mount. */
function reportCommit(e: CommitEvent, volume: string, dir: string): void {
  const plural = (n: number, what: string): string => `${n} ${what}${n === 1 ? '' : 's'}`;
  switch (e.kind) {
    case 'start':
      console.error(
        `committing ${volume} at ${dir} (${e.trigger}): ${plural(e.files, 'file')} (${bytes(e.bytes)}), ${e.renamed} renamed, ${e.removed} removed`,
      );
      break;
    case 'progress': {
      const p = e.progress;
      console.error(`committing ${volume}: ${p.filesDone}/${p.filesTotal} files, ${bytes(p.bytesDone)} of ${p.bytesTotal === undefined ? '?' : bytes(p.bytesTotal)}`);
      break;
    }
    case 'done': {
      const r = e.result;
      console.error(
        `committed ${volume} at ${dir} (${e.trigger}): version ${r.from} -> ${r.version} (${plural(r.files, 'file')}, ${bytes(r.bytes)}; ` +
          `${r.chunksTransferred} chunks uploaded (${bytes(r.bytesTransferred)}); ${r.renamed} renamed, ${r.removed} removed) in ${r.seconds.toFixed(2)}s`,
      );
      break;
    }
    case 'failed':
      console.error(`error: committing ${volume} at ${dir} failed (${e.trigger}); the changes stay staged in ${e.stagingDir}: ${e.error}`);
      break;
  }
}

/** Writes the mount's state file (mount-state.ts), so that `stowage volume reload` and `commit` find this process; undefined when it cannot. */
async function recordMount(mounted: Mounted, volume: string, log: Logger, staging?: string, commitSocket?: string): Promise<MountState | undefined> {
  try {
    const state: MountState = { pid: process.pid, mountpoint: await realpath(mounted.mountpoint), volume, version: mounted.version, reloads: 0, staging, commitSocket };
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
