/**
 * Real components for tests: an S3 API server (s3rver, in its own process) and
 * stowage servers (in-process, or as a child process for kill tests). Every
 * process started here binds 127.0.0.1 on a port chosen at run time and is
 * stopped by PID: by the test's own cleanup, and on worker exit as a backstop.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Connection, type ConnectOptions } from '../../src/client/index.js';
import { startServer, type RunningServer, type ServeOptions } from '../../src/server/server.js';
import type { S3StoreOptions } from '../../src/volume-server/store/s3.js';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CLI = join(ROOT, 'bin', 'stowage.js');

const children = new Set<ChildProcess>();
/** Every tempDir of this test file's process: removeTempDirs() (after the file's own afterAll hooks) deletes them. */
const tempDirs = new Set<string>();
process.on('exit', () => {
  for (const c of children) if (c.pid && c.exitCode === null) process.kill(c.pid, 'SIGKILL');
});

/**
 * Deletes the temp dirs of this process (test/support/cleanup.ts calls it
 * once a test file is done). A directory something is still mounted below is
 * left alone: removing through a mount could touch what it serves.
 */
export function removeTempDirs(): void {
  const mounted = readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[1] ?? '');
  for (const dir of tempDirs) {
    if (mounted.some((m) => m === dir || m.startsWith(`${dir}/`))) continue;
    tempDirs.delete(dir);
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch {
      // best effort: a leftover temp dir fails nothing
    }
  }
}

export function tempDir(label: string): string {
  const base = join(tmpdir(), 'stowage-test');
  mkdirSync(base, { recursive: true });
  const dir = mkdtempSync(join(base, `${label}-`));
  tempDirs.add(dir);
  return dir;
}

export function uniqueName(prefix = 'test'): string {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

/** Waits for the first stdout line of a child and parses it as JSON. */
function firstJsonLine<T>(child: ChildProcess, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    const rl = createInterface({ input: child.stdout! });
    rl.once('line', (line) => {
      try {
        resolve(JSON.parse(line) as T);
      } catch {
        reject(new Error(`${what} printed ${line}`));
      }
    });
    child.once('exit', (code) => reject(new Error(`${what} exited with ${code}: ${stderr}`)));
  });
}

export interface S3Server {
  port: number;
  endpoint: string;
  bucket: string;
  dir: string;
  pid: number;
  /** Options for S3BlobStore / startServer pointing at this server. */
  storeOptions(prefix?: string): S3StoreOptions;
  /** Request counts by "METHOD kind", e.g. "PUT chunks". */
  stats(): Promise<Record<string, number>>;
  resetStats(): Promise<void>;
  /** Stops the process (the data directory stays). */
  stop(): Promise<void>;
  /** Starts it again on the same port and directory. */
  restart(): Promise<void>;
}

export async function startS3rver(opts: { bucket?: string; dir?: string; port?: number } = {}): Promise<S3Server> {
  const dir = opts.dir ?? tempDir('s3rver');
  const bucket = opts.bucket ?? 'stowage-test';
  let child: ChildProcess;
  const launch = async (port: number) => {
    child = spawn(
      process.execPath,
      ['--openssl-legacy-provider', join(ROOT, 'test/support/s3rver-main.cjs'), '--dir', dir, '--bucket', bucket, '--port', String(port)],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    children.add(child);
    return (await firstJsonLine<{ port: number }>(child, 's3rver')).port;
  };
  const port = await launch(opts.port ?? 0);
  const endpoint = `http://127.0.0.1:${port}`;
  const s3: S3Server = {
    port,
    endpoint,
    bucket,
    dir,
    get pid() {
      return child.pid!;
    },
    storeOptions: (prefix = uniqueName('prefix')) => ({
      bucket,
      endpoint,
      prefix,
      region: 'us-east-1',
      credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
    }),
    async stats() {
      return (await (await fetch(`${endpoint}/__stats`)).json()) as Record<string, number>;
    },
    async resetStats() {
      await fetch(`${endpoint}/__stats`, { method: 'POST' });
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      process.kill(child.pid!, 'SIGKILL');
      await exited;
      children.delete(child);
    },
    async restart() {
      await s3.stop();
      await launch(port);
    },
  };
  return s3;
}

export interface Stowage {
  server: RunningServer;
  connection: Connection;
  dataDir: string;
  stop(): Promise<void>;
}

/** A stowage server in this process, on a free port, with its own data dir. */
export async function startStowage(opts: Omit<ServeOptions, 'port' | 'host'> = {}, connect: ConnectOptions = {}): Promise<Stowage> {
  const dataDir = opts.dataDir ?? tempDir('stowage');
  const server = await startServer({ ...opts, dataDir, host: '127.0.0.1', port: 0 });
  // Knowing the data dir lets the client move chunk bytes itself (file:// URLs) on the local store.
  const connection = new Connection({ server: server.address, token: server.token, dataDir, ...connect });
  return {
    server,
    connection,
    dataDir,
    async stop() {
      connection.close();
      await server.stop();
    },
  };
}

export interface ChildServer {
  /** Resolves when the process exits (by itself or killed). */
  exited: Promise<void>;
  pid: number;
  address: string;
  token: string;
  dataDir: string;
  /** What it printed on stderr so far, without the Node version notices (withoutNodeWarnings). */
  stderr(): string;
  /** All it printed on stderr so far. */
  rawStderr(): string;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** `stowage serve` as a child process (for SIGKILL tests). */
export async function spawnStowage(dataDir: string, extraArgs: string[] = [], env: Record<string, string> = {}): Promise<ChildServer> {
  const port = await freePort();
  const child = spawn(process.execPath, [CLI, 'serve', '--data-dir', dataDir, '--port', String(port), ...extraArgs], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, STOWAGE_LOG_LEVEL: 'warn', ...env },
  });
  children.add(child);
  let err = '';
  await new Promise<void>((resolve, reject) => {
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      if (err.includes('stowage serving on')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`stowage serve exited with ${code}: ${err}`)));
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return {
    exited,
    pid: child.pid!,
    address: `127.0.0.1:${port}`,
    token: readFileSync(join(dataDir, 'token'), 'utf8').trim(),
    dataDir,
    stderr: () => withoutNodeWarnings(err),
    rawStderr: () => err,
    async kill(signal = 'SIGKILL') {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      process.kill(child.pid!, signal);
      await exited;
      children.delete(child);
    },
  };
}

export async function freePort(): Promise<number> {
  const { createServer } = await import('node:net');
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/**
 * The two notices a stowage process on Node < 22 prints on stderr, and only them: the
 * CLI's one line (src/cli/main.ts) and the AWS SDK's NodeVersionSupportWarning, which a
 * process making an S3 client prints once, with Node's hint after a process's first
 * warning. Tests that expect an exact stderr compare what is left; cli-node-version.test.ts
 * checks the notices themselves.
 */
export function withoutNodeWarnings(stderr: string): string {
  return stderr
    .replace(/^stowage: Node v\d+\.\d+\.\d+ is past its end of life \(Node 20 reached it in April 2026\); AWS SDK releases from January 2027 need Node 22 or newer: use Node 22 or 24\n/m, '')
    .replace(
      /^\(node:\d+\) Warning: NodeVersionSupportWarning: The AWS SDK for JavaScript \(v3\)\n(?:.*\n){6}More information can be found at: \S+\n(?:\(Use `node --trace-warnings \.\.\.` to show where the warning was created\)\n)?/m,
      '',
    );
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the built `stowage` command against a server. */
export async function runCli(args: string[], env: Record<string, string>, input?: Buffer): Promise<CliResult> {
  const r = await runCliBytes(args, env, input);
  return { ...r, stdout: r.stdout.toString('utf8') };
}

/** runCli with stdout as bytes, for commands that write file contents to it. */
export function runCliBytes(
  args: string[],
  env: Record<string, string>,
  input?: Buffer,
): Promise<Omit<CliResult, 'stdout'> & { stdout: Buffer }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: { ...process.env, ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    children.add(child);
    const out: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdin.end(input);
    child.on('close', (code) => {
      children.delete(child);
      resolve({ code: code ?? -1, stdout: Buffer.concat(out), stderr: withoutNodeWarnings(stderr) });
    });
  });
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}
