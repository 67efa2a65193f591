/**
 * The worker's mounts: one `stowage mount` child process per volume version
 * its calls need, under `<work-dir>/mounts/<volume>@<version>`, all sharing
 * the host's chunk cache (`--cache-dir`). A mount is kept while the worker
 * runs; a mount of an older version of a volume is stopped once no call uses
 * it and a newer one is mounted. Each mount process is started with an IPC
 * channel and unmounts itself when the channel closes, so mounts go with
 * their worker even when it is killed.
 *
 * A call that writes to a volume gets a writable mount of its own
 * (`<volume>@w<n>`, staging under `<work-dir>/staging`), of the newest
 * version, with --drop-uncommitted: only a commit request (the worker's, when
 * the call returns, or the function's volume().commit()) makes a version; what
 * is staged when the mount stops (the call failed, the worker was killed) is
 * dropped. Its own, not shared, so that one call's failure drops only its
 * writes and one call's commit takes only its writes; two such calls both
 * land, the later commit winning for a file both wrote.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { UnavailableError } from '../common/errors.js';
import { PRIVATE } from '../common/file-modes.js';

const CLI = fileURLToPath(new URL('../../../bin/stowage.js', import.meta.url));
const START_TIMEOUT_MS = 60_000;

interface Mount {
  volume: string;
  /** 0 for a writable mount (it mounts the newest). */
  version: number;
  dir: string;
  child?: ChildProcess;
  ready: Promise<string>;
  users: number;
}

export interface MountOptions {
  workDir: string;
  cacheDir: string;
  cacheSize: string;
  env: NodeJS.ProcessEnv;
  /** Extra `stowage mount` flags (e.g. --memory-cache-size). */
  extraArgs?: string[];
  /** How the mounts name themselves in their reports to the server ("worker <id>"). */
  clientName?: string;
}

/** A call's own writable mount. */
export interface WritableMount {
  volume: string;
  dir: string;
  /** Unmounts it: what is still staged is dropped. */
  stop(): Promise<void>;
}

export class MountManager {
  private readonly mounts = new Map<string, Mount>();
  private readonly writable = new Set<Mount>();
  private writableSeq = 0;

  constructor(private readonly opts: MountOptions) {}

  /** The directory where `volume` at `version` is mounted, mounting it first if needed; pair with release(). */
  async acquire(volume: string, version: number): Promise<string> {
    const key = `${volume}@${version}`;
    let m = this.mounts.get(key);
    if (!m) {
      const dir = join(this.opts.workDir, 'mounts', key);
      const mount: Mount = { volume, version, dir, users: 0, ready: Promise.resolve(dir) };
      mount.ready = this.start(mount, ['--version', String(version)]);
      m = mount;
      this.mounts.set(key, m);
      m.ready.catch(() => this.mounts.delete(key));
    }
    m.users++;
    try {
      return await m.ready;
    } catch (err) {
      m.users--;
      throw err;
    }
  }

  /** A writable mount of the newest version of `volume` for one call; stop() it when the call ends. */
  async startWritable(volume: string): Promise<WritableMount> {
    const dir = join(this.opts.workDir, 'mounts', `${volume}@w${++this.writableSeq}`);
    const m: Mount = { volume, version: 0, dir, users: 1, ready: Promise.resolve(dir) };
    this.writable.add(m);
    const staging = join(this.opts.workDir, 'staging');
    try {
      await this.start(m, ['--writable', '--drop-uncommitted', '--staging-dir', staging]);
    } catch (err) {
      this.writable.delete(m);
      throw err;
    }
    return {
      volume,
      dir,
      stop: async () => {
        this.writable.delete(m);
        await this.stop(m);
      },
    };
  }

  release(volume: string, version: number): void {
    const m = this.mounts.get(`${volume}@${version}`);
    if (!m) return;
    m.users--;
    this.dropOlder(volume);
  }

  pids(): number[] {
    return [...this.mounts.values(), ...this.writable].map((m) => m.child?.pid ?? 0).filter(Boolean);
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.mounts.values(), ...this.writable].map((m) => this.stop(m)));
    this.mounts.clear();
    this.writable.clear();
  }

  private dropOlder(volume: string): void {
    const mine = [...this.mounts.values()].filter((m) => m.volume === volume);
    const newest = Math.max(...mine.map((m) => m.version));
    for (const m of mine) {
      if (m.version < newest && m.users === 0) {
        this.mounts.delete(`${m.volume}@${m.version}`);
        void this.stop(m);
      }
    }
  }

  private async start(m: Mount, how: string[]): Promise<string> {
    mkdirSync(m.dir, { recursive: true, mode: PRIVATE.dir });
    const args = [CLI, 'mount', m.volume, m.dir, ...how, '--cache-dir', this.opts.cacheDir, '--cache-size', this.opts.cacheSize];
    if (this.opts.clientName) args.push('--client-name', this.opts.clientName);
    args.push(...(this.opts.extraArgs ?? []));
    const child = spawn(process.execPath, args, { env: this.opts.env, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
    m.child = child;
    const what = m.version ? `version ${m.version}` : '(writable)';
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (stderr.length > 8192) stderr = stderr.slice(-8192);
    });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new UnavailableError(`mounting ${m.volume} ${what} at ${m.dir} took over ${START_TIMEOUT_MS / 1000}s: ${stderr.trim()}`));
      }, START_TIMEOUT_MS);
      createInterface({ input: child.stdout! }).once('line', () => {
        clearTimeout(timer);
        resolve();
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new UnavailableError(`stowage mount of ${m.volume} ${what} exited with ${code}: ${stderr.trim()}`));
      });
    });
    child.once('exit', () => {
      // A mount that went away (killed, unmounted by hand) is mounted again by the next call that needs it.
      if (this.mounts.get(`${m.volume}@${m.version}`) === m) this.mounts.delete(`${m.volume}@${m.version}`);
    });
    return m.dir;
  }

  private async stop(m: Mount): Promise<void> {
    const child = m.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => {
      spawnSync('fusermount', ['-uz', m.dir], { stdio: 'ignore' });
      child.kill('SIGKILL');
    }, 10_000);
    await exited;
    clearTimeout(timer);
  }
}
