/**
 * A runner's binds (see namespaces.ts): in its own mount namespace, the
 * runner binds each volume of a call at the path the call declared before
 * the handler runs, and unbinds them all when it has returned; a reload
 * re-binds one path to another mount. Read-only volumes are bound read-only,
 * so a write gets EROFS from the kernel whatever the FUSE mount would say.
 * Unbinding is lazy (`umount -l`): a file the function left open keeps its
 * mount alive, but no path leads to it any more, and the next call's binds
 * start from nothing.
 */
import { execFile } from 'node:child_process';
import { mkdir, stat } from 'node:fs/promises';
import { promisify } from 'node:util';
import { FailedPreconditionError, messageOf } from '../common/errors.js';

const run = promisify(execFile);

/** One volume of a call: where the function declared it, which volume, and where the worker mounted it. */
export interface CallMount {
  /** The declared mount path, e.g. "/data". */
  path: string;
  volume: string;
  /** The worker's mount of it, under its work dir. */
  source: string;
  writable: boolean;
}

export class RunnerBinds {
  private bound: string[] = [];

  /**
   * `target`: where a mount is bound (default: its declared path; a runner container's binds are made on the
   * host, docker-runtime.ts). `stage`: for a target in a shared mount, where a read-only volume is first bound
   * read-only, out of any shared mount: `mount --bind -o ro` binds, then remounts read-only, and only the bind
   * would propagate; a bind of a read-only mount is read-only from the start, and so are its propagated copies.
   */
  constructor(
    private readonly target: (m: CallMount) => string = (m) => m.path,
    private readonly stage?: (m: CallMount) => string,
  ) {}

  /** Binds each mount at its declared path; `keep` are paths that must stay reachable (the bundle, this installation). */
  async bind(mounts: readonly CallMount[], keep: readonly string[]): Promise<void> {
    await this.unbindAll();
    for (const m of mounts) {
      const hidden = keep.find((k) => k === m.path || k.startsWith(`${m.path}/`));
      if (hidden) throw new FailedPreconditionError(`volume ${m.volume} cannot be bound at ${m.path}: that would hide ${hidden} from the function; declare another path`);
    }
    for (const m of mounts) await this.bindOne(m, m.source);
  }

  /** Binds `m.path` to `source` instead of what it showed (a reload of a read-only volume: another version's mount). */
  async rebind(m: CallMount, source: string): Promise<void> {
    const at = [this.target(m), ...(this.stage && !m.writable ? [this.stage(m)] : [])];
    for (const p of at) await unmount(p);
    this.bound = this.bound.filter((p) => !at.includes(p));
    await this.bindOne(m, source);
  }

  async unbindAll(): Promise<void> {
    for (const p of this.bound.reverse()) await unmount(p);
    this.bound = [];
  }

  private async bindOne(m: CallMount, source: string): Promise<void> {
    // The mount point must exist: mkdir makes it (and its parents) on the host's file system, which
    // this namespace shares: an empty directory, visible outside and left there for later calls.
    // What the host already has at that path is hidden only inside this runner's namespace.
    const at = this.target(m);
    const stage = this.stage && !m.writable ? this.stage(m) : undefined;
    try {
      await mkdir(at, { recursive: true });
      if (!(await stat(at)).isDirectory()) throw new Error(`${at} exists and is not a directory`);
      if (stage) {
        await mkdir(stage, { recursive: true });
        await run('mount', ['--bind', '-o', 'ro', source, stage]);
        // Unbound after the target (unbindAll goes backwards).
        this.bound.push(stage);
        await run('mount', ['--bind', stage, at]);
      } else {
        await run('mount', ['--bind', ...(m.writable ? [] : ['-o', 'ro']), source, at]);
      }
    } catch (err) {
      throw new FailedPreconditionError(`cannot bind volume ${m.volume} at ${m.path} for the function: ${messageOf(err)}`);
    }
    this.bound.push(at);
  }
}

async function unmount(path: string): Promise<void> {
  await run('umount', ['-l', path]).catch(() => undefined);
}
