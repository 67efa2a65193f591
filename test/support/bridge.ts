/**
 * Compute bridge tests: `stowage worker` processes (each with its own cache
 * and work directory) and `stowage serve` on a fixed port (to restart it).
 * Every worker is stopped by PID; so are the mount and runner processes it
 * started (found by their command line naming its directories), and every
 * mount point under its work directory is detached, also when a test fails
 * or the worker was SIGKILLed (and the shared bind of its mounts directory
 * a root worker makes). Network faults cut a worker's own TCP
 * connections with `ss -K`.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface, type Interface } from 'node:readline';
import { BridgeAdmin, type Connection } from '../../src/client/index.js';
import { CallState } from '../../src/gen/stowage/v1/bridge.js';
import { CLI, ROOT, removeDir, tempDir, withoutNodeWarnings } from './processes.js';

export const FIXTURE = join(ROOT, 'test', 'fixtures', 'bridge', 'jobs.mjs');

const children = new Set<ChildProcess>();
const workDirs = new Set<string>();
process.on('exit', () => {
  for (const c of children) if (c.pid && c.exitCode === null && c.signalCode === null) process.kill(c.pid, 'SIGKILL');
});

export interface WorkerProcess {
  id: string;
  pid: number;
  cacheDir: string;
  workDir: string;
  stdout(): string;
  stderr(): string;
  /** Resolves once the process has exited. */
  exited: Promise<number | string>;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

export interface WorkerOptions {
  id: string;
  server: string;
  token: string;
  slots?: number;
  idleTimeout?: string;
  cacheDir?: string;
  cacheSize?: string;
  env?: Record<string, string>;
  args?: string[];
}

/** `stowage worker` against `server`, resolved once it has registered. */
export async function startWorker(opts: WorkerOptions): Promise<WorkerProcess> {
  const { worker, lines } = launchWorker(opts);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`worker ${opts.id} did not register in 20 s: ${worker.stderr()}`)), 20_000);
    lines.on('line', (l) => {
      if (l.includes('registered with the bridge')) {
        clearTimeout(timer);
        resolve();
      }
    });
    void worker.exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`worker ${opts.id} exited with ${code}: ${worker.stderr()}`));
    });
  });
  return worker;
}

/** `stowage worker` against `server`, as soon as it is started (whether or not it ever registers). */
export function spawnWorker(opts: WorkerOptions): WorkerProcess {
  return launchWorker(opts).worker;
}

function launchWorker(opts: WorkerOptions): { worker: WorkerProcess; lines: Interface } {
  const cacheDir = opts.cacheDir ?? tempDir(`cache-${opts.id}`);
  const workDir = tempDir(`work-${opts.id}`);
  workDirs.add(workDir);
  const args = [
    CLI, 'worker', '--bridge', opts.server, '--id', opts.id, '--slots', String(opts.slots ?? 2),
    '--cache-dir', cacheDir, '--work-dir', workDir, '--idle-timeout', opts.idleTimeout ?? '30s',
    '--cache-size', opts.cacheSize ?? '1GiB', '--memory-cache-size', '8MiB', ...(opts.args ?? []),
  ];
  const child = spawn(process.execPath, args, {
    env: { ...process.env, STOWAGE_TOKEN: opts.token, STOWAGE_LOG_LEVEL: 'warn', ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let stdout = '';
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | string>((resolve) =>
    child.once('exit', (code, signal) => {
      children.delete(child);
      resolve(code ?? signal ?? -1);
    }),
  );
  const lines = createInterface({ input: child.stdout! });
  lines.on('line', (l) => (stdout += `${l}\n`));
  const worker: WorkerProcess = {
    id: opts.id,
    pid: child.pid!,
    cacheDir,
    workDir,
    stdout: () => stdout,
    stderr: () => withoutNodeWarnings(stderr),
    exited,
    async kill(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, signal);
      await exited;
    },
  };
  return { worker, lines };
}

/** Waits until `fn` returns a truthy value (checked every 100 ms), or fails naming `what`. */
export async function waitFor<T>(what: string, fn: () => T | Promise<T>, timeoutMs = 15_000): Promise<NonNullable<Awaited<T>>> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v as NonNullable<Awaited<T>>;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

interface ProcInfo {
  pid: number;
  ppid: number;
  cmdline: string;
}

function processes(): ProcInfo[] {
  const out: ProcInfo[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const cmdline = readFileSync(`/proc/${name}/cmdline`, 'utf8').replaceAll('\0', ' ');
      out.push({ pid: Number(name), ppid, cmdline });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** PIDs of the function runner processes a worker has now. */
/** The id of the worker running call `callId`, once the bridge says it runs and that worker has a function process. */
export function workerRunning(connection: Connection, callId: string, workers: Map<string, { pid: number }>): Promise<string> {
  return waitFor(`call ${callId} to run`, async () => {
    const info = await BridgeAdmin.call(callId, connection);
    return info.state === CallState.CALL_STATE_RUNNING && runnerPids(workers.get(info.workerId)!.pid).length ? info.workerId : undefined;
  });
}

export function runnerPids(workerPid: number): number[] {
  return processes()
    .filter((p) => p.ppid === workerPid && p.cmdline.includes('worker/runner.js'))
    .map((p) => p.pid);
}

/** PIDs of processes whose command line names `dir` (a worker's mounts name its work and cache dirs). */
export function pidsMentioning(dir: string): number[] {
  return processes()
    .filter((p) => p.pid !== process.pid && p.cmdline.includes(dir))
    .map((p) => p.pid);
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Kills every worker, and every mount or runner a worker left, by PID; detaches their mount points. */
export function cleanUpWorkers(): void {
  for (const c of children) if (c.pid && c.exitCode === null && c.signalCode === null) process.kill(c.pid, 'SIGKILL');
  for (const dir of workDirs) {
    for (const pid of pidsMentioning(dir)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    const mounts = join(dir, 'mounts');
    if (existsSync(mounts)) for (const m of readdirSync(mounts)) spawnSync('fusermount', ['-uz', join(mounts, m)], { stdio: 'ignore' });
    // A worker that binds volumes at declared paths makes mounts/ a shared bind of itself (src/worker/namespaces.ts); a killed one leaves it.
    if (existsSync(mounts) && readFileSync('/proc/self/mountinfo', 'utf8').includes(` ${mounts} `)) spawnSync('umount', ['-l', mounts], { stdio: 'ignore' });
  }
}

/** After a suite of a `stowage serve` with one worker: closes the connection, kills the worker (and what it left) and the server, removes the data dir. */
export async function stopServeAndWorker(s: { connection?: Connection; worker?: WorkerProcess; serve?: ServeProcess; dataDir: string }): Promise<void> {
  s.connection?.close();
  await s.worker?.kill('SIGKILL');
  cleanUpWorkers();
  await s.serve?.kill('SIGKILL');
  removeDir(s.dataDir);
}

export interface ServeProcess {
  pid: number;
  address: string;
  token: string;
  stderr(): string;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** A `stowage serve` child that exited before it served: its exit code (or signal) and what it printed. */
export class ServeExited extends Error {
  constructor(
    readonly exitCode: number | string,
    readonly stderr: string,
  ) {
    super(`stowage serve exited with ${exitCode}: ${stderr}`);
  }
}

/**
 * `stowage serve` as a child process on a given port (so that it can be
 * restarted on the same address); rejects with ServeExited if it exits first.
 */
export async function spawnServe(dataDir: string, port: number, args: string[] = []): Promise<ServeProcess> {
  const child = spawn(process.execPath, [CLI, 'serve', '--data-dir', dataDir, '--port', String(port), ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, STOWAGE_LOG_LEVEL: 'warn' },
  });
  children.add(child);
  let err = '';
  const exited = new Promise<number | string>((r) =>
    child.once('exit', (code, signal) => {
      children.delete(child);
      r(code ?? signal ?? -1);
    }),
  );
  await new Promise<void>((resolve, reject) => {
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      if (err.includes('stowage serving on')) resolve();
    });
    void exited.then((code) => reject(new ServeExited(code, err)));
  });
  return {
    pid: child.pid!,
    address: `127.0.0.1:${port}`,
    token: readFileSync(join(dataDir, 'token'), 'utf8').trim(),
    stderr: () => withoutNodeWarnings(err),
    async kill(signal = 'SIGKILL') {
      if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, signal);
      await exited;
    },
  };
}

/**
 * Cuts (with `ss -K`: the kernel aborts them, the peer gets a reset) the TCP
 * connections process `pid` holds to 127.0.0.1:`port`, as a network fault
 * would; other processes' connections stay. Returns how many were cut: 0 also
 * when `ss -K` is not allowed here (it needs CAP_NET_ADMIN and a kernel with
 * INET_DIAG_DESTROY).
 */
export function cutConnections(pid: number, port: number): number {
  const listed = spawnSync('ss', ['-tnpH', 'state', 'established', 'dst', `127.0.0.1:${port}`], { encoding: 'utf8' });
  if (listed.status !== 0) return 0;
  let cut = 0;
  for (const line of listed.stdout.split('\n')) {
    if (!line.includes(`pid=${pid},`)) continue;
    const local = /127\.0\.0\.1:(\d+)\s+127\.0\.0\.1:\d+/.exec(line)?.[1];
    if (!local) continue;
    const r = spawnSync('ss', ['-K', '-tnH', 'src', `127.0.0.1:${local}`, 'dst', `127.0.0.1:${port}`], { encoding: 'utf8' });
    if (r.status === 0 && r.stdout.trim()) cut++;
  }
  return cut;
}
