/**
 * MountSession: one mount of a VolumeFilesystem, from mounting to
 * unmounting, behind the Mounted contract (mount.ts, which also has the
 * kernel side: fuse-native, its callbacks, the mount point).
 *
 * Ordering. Reloads and commits run one at a time, in the order they were
 * asked for (inTurn): a commit moves the mount to the version it made like a
 * reload does, settling the staging in the same swap of trees, so neither may
 * start while the other is under way. A commit snapshots the staging, uploads
 * the snapshot as one version (commit.ts), reloads to it unless the kernel
 * has already let go, then drops the snapshot; a failure drops the snapshot
 * and leaves the changes staged.
 *
 * Unmounting happens once (later calls get the same promise), in this order:
 *   1. detach: the kernel lets go (lazily, so open files do not block it);
 *      from then on nothing can write, and a commit reloads nothing;
 *   2. commit what is left, in turn after any commit or reload under way
 *      (with dropUncommitted: drop it);
 *   3. close the filesystem, whether that commit worked or not;
 *   4. remove the staging directory, only when that commit worked: else it is
 *      kept, and unmount rejects saying where. A failure to detach is
 *      reported last, after the rest was done.
 */
import { resolve } from 'node:path';
import { FailedPreconditionError, messageOf } from '../common/errors.js';
import { createLogger, type Logger } from '../common/logger.js';
import type { ReloadSettle, VolumeFilesystem } from './filesystem.js';
import { refreshKernelCache } from './kernel-refresh.js';
import { fuseFor, isMounted, operations, prepareMountpoint, type Mounted, type MountOptions, type ReloadResult, type StowageFuse } from './mount.js';
import { commitSnapshot, type CommitResult, type CommitTrigger } from './write/commit.js';
import type { Snapshot } from './write/staging.js';
import { writableOperations } from './write/writable-ops.js';

/** Commit progress is reported at most this often. */
const PROGRESS_MS = 2000;

/** Mounts `fs` at `dir` (created when missing); resolves once the kernel serves it. The entry; MountSession.start. */
export function mountVolume(fs: VolumeFilesystem, dir: string, opts: MountOptions = {}): Promise<Mounted> {
  return MountSession.start(fs, dir, opts);
}

export class MountSession implements Mounted {
  private queue: Promise<unknown> = Promise.resolve();
  /** Set once the kernel has let go of the mount (nothing can write, nothing to reload). */
  private detached = false;
  private unmounted: Promise<void> | undefined;

  /** fuse-native over this session's callbacks: the writable ones commit through it. */
  private readonly fuse: StowageFuse;

  private constructor(
    private readonly fs: VolumeFilesystem,
    readonly mountpoint: string,
    private readonly opts: MountOptions,
    private readonly log: Logger,
  ) {
    const readOps = operations(fs, log);
    // With dropUncommitted an fsync flushes nothing further: the staged file is already on local disk.
    const commit = (trigger: CommitTrigger): Promise<unknown> => (opts.dropUncommitted && trigger === 'fsync' ? Promise.resolve() : this.commit(trigger));
    const ops = fs.staging ? writableOperations(fs, readOps, { log, commit }) : readOps;
    this.fuse = fuseFor(fs, mountpoint, ops, opts.debug);
  }

  /** Mounts `fs` at `dir` (created when missing); resolves once the kernel serves it. */
  static async start(fs: VolumeFilesystem, dir: string, opts: MountOptions): Promise<MountSession> {
    const mountpoint = resolve(dir);
    const log = opts.logger ?? createLogger('fuse-mount');
    if (fs.staging && !opts.commitTo) throw new FailedPreconditionError('a writable mount needs the volume its commits go to');
    await prepareMountpoint(mountpoint, log);
    const session = new MountSession(fs, mountpoint, opts, log);
    await new Promise<void>((done, fail) =>
      session.fuse.mount((err) =>
        err ? fail(new FailedPreconditionError(`cannot mount at ${mountpoint}: ${messageOf(err)} (is /dev/fuse there, and fusermount installed?)`)) : done(),
      ),
    );
    return session;
  }

  get version(): number {
    return this.fs.version;
  }

  get writable(): boolean {
    return this.fs.staging !== undefined;
  }

  reload(): Promise<ReloadResult> {
    return this.inTurn(() => this.reloadNow());
  }

  commit(trigger: CommitTrigger = 'request'): Promise<CommitResult> {
    return this.inTurn(() => this.commitNow(trigger, this.detached));
  }

  unmount(): Promise<void> {
    this.unmounted ??= this.unmountNow();
    return this.unmounted;
  }

  /** Runs `f` after every reload and commit queued before it. */
  private inTurn<T>(f: () => Promise<T>): Promise<T> {
    const next = this.queue.then(f);
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** Moves to the newest version and tells the kernel; `settle` is applied with the swap of trees, before the kernel is told. */
  private async reloadNow(settle?: ReloadSettle): Promise<ReloadResult> {
    const plan = await this.fs.reload(settle);
    try {
      await refreshKernelCache(this.mountpoint, plan, this.log);
    } finally {
      this.fs.endReload();
    }
    const { from, to, added, changed, removed } = plan;
    return { from, to, added, changed, removed };
  }

  /** One commit; `detached` once the kernel has let go of the mount (nothing can write, nothing to reload). */
  private async commitNow(trigger: CommitTrigger, detached: boolean): Promise<CommitResult> {
    const { fs, opts } = this;
    const staging = fs.staging;
    const from = fs.version;
    const started = performance.now();
    const nothing: CommitResult = { from, version: from, files: 0, bytes: 0, renamed: 0, removed: 0, chunksTransferred: 0, bytesTransferred: 0, seconds: 0 };
    if (!staging?.hasChanges()) return nothing;
    const report = opts.onCommit ?? (() => undefined);
    let snap: Snapshot | undefined;
    let committed;
    try {
      snap = await staging.snapshot(!detached);
      const bytes = snap.puts.reduce((n, p) => n + p.size, 0);
      report({ kind: 'start', trigger, files: snap.puts.length, bytes, renamed: snap.existing.length, removed: snap.removes.length });
      let lastProgress = performance.now();
      committed = await commitSnapshot(opts.commitTo!, snap, (progress) => {
        if (performance.now() - lastProgress < PROGRESS_MS) return;
        lastProgress = performance.now();
        report({ kind: 'progress', trigger, progress });
      });
    } catch (err) {
      if (snap) await staging.discard(snap);
      report({ kind: 'failed', trigger, error: messageOf(err), stagingDir: staging.dir });
      throw err;
    }
    const frozen = snap;
    if (!detached) {
      try {
        await this.reloadNow((before, after) => staging.settle(frozen, before, after));
      } catch (err) {
        // The version exists but the mount could not list it: the changes stay staged (showing the same bytes), and the next commit puts them again, moving no bytes.
        this.log.error({ version: committed.version, err: messageOf(err) }, `committed version ${committed.version}, but the mount still serves version ${fs.version}`);
      }
    }
    await staging.discard(snap);
    const result: CommitResult = {
      from,
      version: committed.version,
      files: committed.files,
      bytes: committed.bytes,
      renamed: snap.existing.length,
      removed: committed.removed,
      chunksTransferred: committed.chunksTransferred,
      bytesTransferred: committed.bytesTransferred,
      seconds: (performance.now() - started) / 1000,
    };
    report({ kind: 'done', trigger, result });
    return result;
  }

  /** The unmount sequence of the header: detach, commit what is left, close, remove the staging. */
  private async unmountNow(): Promise<void> {
    const { fs, fuse, mountpoint } = this;
    const staging = fs.staging;
    let notDetached: unknown;
    try {
      if (await isMounted(mountpoint)) {
        await new Promise<void>((done, fail) => fuse.unmount((err) => (err ? fail(err) : done())));
      }
      this.detached = true;
    } catch (err) {
      notDetached = err;
    }
    let failure: unknown;
    if (staging && this.opts.dropUncommitted) {
      if (staging.hasChanges()) this.log.warn({ staging: staging.dir }, `dropped the uncommitted changes of ${mountpoint}: this mount commits only when asked`);
    } else if (staging) {
      try {
        await this.inTurn(() => this.commitNow('unmount', this.detached));
      } catch (err) {
        failure = err;
      }
    }
    await fs.close();
    if (failure !== undefined) {
      throw new FailedPreconditionError(`the last commit failed, so the uncommitted changes are kept in ${staging!.dir}: ${messageOf(failure)}`);
    }
    await staging?.remove();
    if (notDetached !== undefined) throw notDetached;
  }
}
