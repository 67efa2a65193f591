/**
 * What the benchmark runs against: one s3rver child process (stopped by PID,
 * also when the run fails) and one stowage server in this process, both on
 * 127.0.0.1 ports chosen at run time, with their data in one temp directory.
 */
import { S3Client } from '@aws-sdk/client-s3';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent } from 'node:http';
import { cpus, loadavg, release, tmpdir, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { pino } from 'pino';
import { Connection } from '../../src/client/index.js';
import { startServer, type RunningServer } from '../../src/server/server.js';
import type { S3StoreOptions } from '../../src/volume-server/store/s3.js';

/** The repository root, from dist/bench/volume-transfer/ or bench/volume-transfer/. */
export const ROOT = findRoot(dirname(fileURLToPath(import.meta.url)));
export const S3_KEY = 'S3RVER';
export const S3_SECRET = 'S3RVER';
export const BUCKET = 'bench';

function findRoot(from: string): string {
  let dir = from;
  for (;;) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string };
      if (pkg.name === 'stowage') return dir;
    } catch {
      // not here; keep climbing
    }
    const up = dirname(dir);
    if (up === dir) throw new Error(`no stowage package.json above ${from}`);
    dir = up;
  }
}

export function makeTempRoot(): string {
  const base = join(tmpdir(), 'stowage-bench');
  mkdirSync(base, { recursive: true });
  return mkdtempSync(join(base, 'volume-transfer-'));
}

export interface S3rver {
  endpoint: string;
  pid: number;
  /** Request counts by "METHOD kind" since the last reset. */
  stats(): Promise<Record<string, number>>;
  resetStats(): Promise<void>;
  stop(): Promise<void>;
}

/** Backstop: a child still running when this process exits is killed by its PID. */
const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of children) if (c.pid && c.exitCode === null && c.signalCode === null) process.kill(c.pid, 'SIGKILL');
});

/** Registers a child for the exit backstop; it is forgotten once it exits. */
export function track<C extends ChildProcess>(child: C): C {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

export async function startS3rver(dir: string): Promise<S3rver> {
  mkdirSync(dir, { recursive: true });
  const child = spawn(
    process.execPath,
    ['--openssl-legacy-provider', join(ROOT, 'test/support/s3rver-main.cjs'), '--dir', dir, '--bucket', BUCKET, '--port', '0'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  track(child);
  const port = await new Promise<number>((resolve, reject) => {
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    createInterface({ input: child.stdout! }).once('line', (line) => {
      try {
        resolve((JSON.parse(line) as { port: number }).port);
      } catch {
        reject(new Error(`s3rver printed ${line}`));
      }
    });
    child.once('exit', (code) => reject(new Error(`s3rver exited with ${code}: ${stderr}`)));
  });
  const endpoint = `http://127.0.0.1:${port}`;
  return {
    endpoint,
    pid: child.pid!,
    async stats() {
      return (await (await fetch(`${endpoint}/__stats`)).json()) as Record<string, number>;
    },
    async resetStats() {
      await (await fetch(`${endpoint}/__stats`, { method: 'POST' })).arrayBuffer();
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      process.kill(child.pid!, 'SIGKILL');
      await exited;
    },
  };
}

/** The S3 store options of a stowage server on the benchmark's s3rver (bucket BUCKET, prefix `stowage`). */
export function s3rverStore(s3: S3rver): S3StoreOptions {
  return { bucket: BUCKET, prefix: 'stowage', endpoint: s3.endpoint, region: 'us-east-1', credentials: { accessKeyId: S3_KEY, secretAccessKey: S3_SECRET } };
}

/**
 * On SIGINT or SIGTERM: says what is being stopped (`stopping`, after the
 * signal's name), runs `cleanUp` and exits 130. `interrupted()` tells the run,
 * whose calls the clean-up cuts short, that their failure is not news.
 */
export function cleanUpOnSignal(cleanUp: () => Promise<void>, say: (msg: string) => void, stopping: string): { interrupted: () => boolean } {
  let interrupted = false;
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      interrupted = true;
      say(`\n${sig}: ${stopping}`);
      void cleanUp().finally(() => process.exit(130));
    });
  }
  return { interrupted: () => interrupted };
}

/**
 * A run's scratch: a temp directory under $TMPDIR/stowage-bench/ (`<name>-*`),
 * the clean-ups its parts register as they start things, and `cleanUp`, which
 * runs them all once and removes the directory; also on SIGINT or SIGTERM
 * (cleanUpOnSignal, saying `stopping(tmp)`). `cleaning()`: whether it began.
 */
export function runScratch(
  name: string,
  say: (msg: string) => void,
  stopping: (tmp: string) => string,
): { tmp: string; cleanups: Set<() => Promise<void>>; cleanUp: () => Promise<void>; cleaning: () => boolean; interrupted: () => boolean } {
  const base = join(tmpdir(), 'stowage-bench');
  mkdirSync(base, { recursive: true });
  const tmp = mkdtempSync(join(base, `${name}-`));
  const cleanups = new Set<() => Promise<void>>();
  let cleaning: Promise<void> | undefined;
  const cleanUp = (): Promise<void> =>
    (cleaning ??= (async () => {
      await Promise.all([...cleanups].map((c) => c().catch(() => undefined)));
      rmSync(tmp, { recursive: true, force: true });
    })());
  const { interrupted } = cleanUpOnSignal(cleanUp, say, stopping(tmp));
  return { tmp, cleanups, cleanUp, cleaning: () => cleaning !== undefined, interrupted };
}

/** The command line's flags as `options` declares them; a flag it does not declare or cannot parse prints why and `usage`, and exits 2. */
export function parseFlags<const O extends NonNullable<ParseArgsConfig['options']>>(options: O, usage: string): ReturnType<typeof parseArgs<{ options: O }>>['values'] {
  try {
    return parseArgs({ options }).values;
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${usage}\n`);
    process.exit(2);
  }
}

/** A command-line number that must be a whole number ≥ `min`; otherwise prints why and `usage`, and exits 2. */
export function wholeFlag(name: string, v: string | undefined, min: number, usage: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) {
    process.stderr.write(`--${name} must be a whole number ≥ ${min}, not ${v}\n${usage}\n`);
    process.exit(2);
  }
  return n;
}

export interface StowageServer {
  server: RunningServer;
  connection: Connection;
  stop(): Promise<void>;
}

export async function startStowage(dataDir: string, s3: S3rver): Promise<StowageServer> {
  const server = await startServer({
    dataDir,
    host: '127.0.0.1',
    port: 0,
    s3: s3rverStore(s3),
    log: pino({ name: 'stowage', level: 'warn' }),
  });
  const connection = new Connection({ server: server.address, token: server.token });
  return {
    server,
    connection,
    async stop() {
      connection.close();
      await server.stop();
    },
  };
}

/**
 * CPU seconds used so far (user + system, all threads) by this process with
 * the children it has reaped (rclone), and by s3rver. Linux /proc only; NaN
 * elsewhere.
 */
export function cpuSeconds(s3rverPid: number): { client: number; s3rver: number } {
  return { client: procCpu('self', true), s3rver: procCpu(String(s3rverPid), false) };
}

const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout) || 100;

/** CPU seconds (user + system, all threads) used so far by one process; NaN once it is gone or off Linux. */
export function processCpuSeconds(pid: number | 'self'): number {
  return procCpu(String(pid), false);
}

/** A process's resident set now (VmRSS) and its peak so far (VmHWM), in bytes; NaN once it is gone or off Linux. */
export interface ProcessMemory {
  rss: number;
  peak: number;
}

export function processMemory(pid: number | 'self'): ProcessMemory {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (field: string) => {
      const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(status);
      return m ? Number(m[1]) * 1024 : Number.NaN;
    };
    return { rss: kb('VmRSS'), peak: kb('VmHWM') };
  } catch {
    return { rss: Number.NaN, peak: Number.NaN };
  }
}

function procCpu(pid: string, withChildren: boolean): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after "pid (comm) ": state is [0], so utime..cstime are [11]..[14].
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
    const ticks = f[11]! + f[12]! + (withChildren ? f[13]! + f[14]! : 0);
    return ticks / CLOCK_TICKS;
  } catch {
    return Number.NaN;
  }
}

/** The 1-minute load average: other work on the machine shows up here. */
export function load1(): number {
  return Math.round(loadavg()[0]! * 100) / 100;
}

/** Flushes dirty pages, so that one phase's writeback does not slow the next. */
export function settleDisk(): void {
  spawnSync('sync', { stdio: 'ignore' });
}

/** Writes back dirty pages, then drops the page cache, dentries and inodes (machine-wide); false when not permitted (not root). */
export function dropCaches(): boolean {
  settleDisk();
  try {
    writeFileSync('/proc/sys/vm/drop_caches', '3');
    return true;
  } catch {
    return false;
  }
}

/** The host and the stowage build a run measured. */
export interface HostInfo {
  cpuModel: string;
  cpus: number;
  memoryGiB: number;
  node: string;
  os: string;
  /** The stowage commit measured, and whether src/ had uncommitted changes. */
  commit: string;
  srcDirty: boolean;
}

export interface MachineInfo extends HostInfo {
  rclone: string;
  s3rver: string;
  awsSdk: string;
}

/** The installed version of an npm package, or 'unknown'. */
export function packageVersion(pkg: string): string {
  try {
    return (JSON.parse(readFileSync(join(ROOT, 'node_modules', pkg, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

export function hostInfo(): HostInfo {
  const git = (...args: string[]) => spawnSync('git', ['-C', ROOT, ...args], { encoding: 'utf8' }).stdout?.trim() ?? '';
  return {
    cpuModel: cpus()[0]?.model ?? 'unknown',
    cpus: cpus().length,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    os: `${process.platform} ${release()}`,
    commit: git('rev-parse', '--short', 'HEAD') || 'unknown',
    srcDirty: git('status', '--porcelain', '--', 'src', 'proto') !== '',
  };
}

export function machineInfo(): MachineInfo {
  const rclone = spawnSync('rclone', ['version'], { encoding: 'utf8' });
  return {
    ...hostInfo(),
    rclone: rclone.stdout?.split('\n')[0]?.trim() || 'not found',
    s3rver: packageVersion('s3rver'),
    awsSdk: packageVersion('@aws-sdk/client-s3'),
  };
}

/** The environment for `rclone` with a remote `s3:` on the benchmark's s3rver (RCLONE_CONFIG_S3_*, no config file). */
export function rcloneEnv(endpoint: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    RCLONE_CONFIG_S3_TYPE: 's3',
    RCLONE_CONFIG_S3_PROVIDER: 'Other',
    RCLONE_CONFIG_S3_ENDPOINT: endpoint,
    RCLONE_CONFIG_S3_ACCESS_KEY_ID: S3_KEY,
    RCLONE_CONFIG_S3_SECRET_ACCESS_KEY: S3_SECRET,
    RCLONE_CONFIG_S3_REGION: 'us-east-1',
  };
  // rclone loads AWS_CA_BUNDLE at start-up and fails on this machine's bundle; plain HTTP needs no CA.
  delete env.AWS_CA_BUNDLE;
  return env;
}

/** An S3 client for the benchmark's s3rver: path-style, its fixed keys, keep-alive sockets, no optional checksums. */
export function s3rverClient(endpoint: string): S3Client {
  return new S3Client({
    region: 'us-east-1',
    endpoint,
    forcePathStyle: true,
    credentials: { accessKeyId: S3_KEY, secretAccessKey: S3_SECRET },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestHandler: new NodeHttpHandler({ httpAgent: new Agent({ keepAlive: true, maxSockets: 32 }) }),
  });
}

/** mulberry32: a small seeded generator, the same sequence on every run and machine (the benchmarks' samples and read plans). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
