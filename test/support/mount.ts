/**
 * `stowage mount` as a child process for the FUSE tests (so that a hung mount
 * can be killed by PID), and the clean-up every mount test needs: each mount
 * point is detached (fusermount -uz) and each child killed by PID in afterAll
 * (cleanUpMounts), and children are killed on worker exit as a backstop.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { CLI, withoutNodeWarnings } from './processes.js';

export interface MountProcess {
  child: ChildProcess;
  dir: string;
  /** The line it printed once mounted. */
  line: string;
  stderr(): string;
  /** Resolves with the exit code (or the signal's name) once the process has gone. */
  exited: Promise<number | string>;
}

/** Child processes of a mount test (mounts, and readers a test adds); killed by cleanUpMounts. */
export const children = new Set<ChildProcess>();
/** Every directory a test mounted (or tried to); detached by cleanUpMounts. */
export const mountDirs = new Set<string>();
process.on('exit', () => {
  for (const c of children) if (c.pid && c.exitCode === null && c.signalCode === null) process.kill(c.pid, 'SIGKILL');
});

export function mountedPaths(): string[] {
  return readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[1] ?? '');
}

export function detach(dir: string): void {
  spawnSync('fusermount', ['-uz', dir], { stdio: 'ignore' });
}

/** Detaches every mount point and kills every child still running, by PID. */
export function cleanUpMounts(): void {
  for (const dir of mountDirs) detach(dir);
  for (const c of children) if (c.pid && c.exitCode === null && c.signalCode === null) process.kill(c.pid, 'SIGKILL');
}

/** The error code a promise rejects with, or undefined when it resolves. */
export const errnoCode = async (p: Promise<unknown>): Promise<string | undefined> => {
  try {
    await p;
    return undefined;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code;
  }
};

/** `stowage mount VOLUME DIR --cache-dir CACHE ARGS…`, resolved once it printed its first line. */
export async function startMountProcess(opts: {
  volume: string;
  dir: string;
  cacheDir: string;
  args?: string[];
  env: Record<string, string>;
}): Promise<MountProcess> {
  const { dir } = opts;
  mountDirs.add(dir);
  const child = spawn(process.execPath, [CLI, 'mount', opts.volume, dir, '--cache-dir', opts.cacheDir, ...(opts.args ?? [])], {
    env: { ...process.env, STOWAGE_LOG_LEVEL: 'warn', ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | string>((resolve) =>
    child.once('exit', (code, signal) => {
      children.delete(child);
      resolve(code ?? signal ?? -1);
    }),
  );
  const line = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      process.kill(child.pid!, 'SIGKILL');
      reject(new Error(`stowage mount printed nothing in 30 s: ${stderr}`));
    }, 30_000);
    createInterface({ input: child.stdout! }).once('line', (l) => {
      clearTimeout(timer);
      resolve(l);
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`stowage mount exited with ${code}: ${stderr}`));
    });
  });
  return { child, dir, line, stderr: () => withoutNodeWarnings(stderr), exited };
}

/** Sends `signal` to the mount process (by PID) unless it is gone; resolves once it has exited. */
export async function stopMount(m: MountProcess, signal: NodeJS.Signals): Promise<number | string> {
  if (m.child.exitCode === null && m.child.signalCode === null) process.kill(m.child.pid!, signal);
  return m.exited;
}
