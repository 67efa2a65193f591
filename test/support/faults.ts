/**
 * Fault injection for tests: the two store setups, a CLI child that can be
 * watched while it runs, polling with a deadline, and damaging stored chunks
 * on disk (the local store's files, or s3rver's object files).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { blobKey } from '../../src/volume-server/store/interface.js';
import { CLI, removeDir, startS3rver, startStowage, tempDir, withoutNodeWarnings, type CliResult, type S3Server, type Stowage } from './processes.js';

export type StoreKind = 'local' | 's3';

export interface Setup {
  kind: StoreKind;
  stowage: Stowage;
  /** Present for the S3 setup. */
  s3?: S3Server;
  stop(): Promise<void>;
}

const scratch: string[] = [];

/** A temporary directory that removeScratch() deletes. */
export function scratchDir(label: string): string {
  const dir = tempDir(label);
  scratch.push(dir);
  return dir;
}

/** Deletes every scratchDir of this test file (its afterAll calls this). */
export function removeScratch(): void {
  for (const dir of scratch.splice(0)) removeDir(dir);
}

/** A stowage server in this process on the local-directory store or on s3rver; data in scratch dirs. */
export async function startSetup(kind: StoreKind): Promise<Setup> {
  const s3 = kind === 's3' ? await startS3rver({ dir: scratchDir('s3rver') }) : undefined;
  const dataDir = scratchDir('stowage');
  const stowage = await startStowage(s3 ? { dataDir, s3: s3.storeOptions() } : { dataDir });
  return {
    kind,
    stowage,
    s3,
    async stop() {
      await stowage.stop();
      await s3?.stop();
    },
  };
}

/** Polls `probe` until it returns a value other than undefined, or fails after `timeoutMs`. */
export async function waitFor<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const clis = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of clis) if (c.pid && c.exitCode === null && c.signalCode === null) process.kill(c.pid, 'SIGKILL');
});

export interface RunningCli {
  pid: number;
  /** Settles when the command exits. */
  result: Promise<CliResult>;
  exited(): boolean;
  kill(): Promise<void>;
}

/** The built `stowage` command as a child process that the test can watch and stop by PID. */
export function startCli(args: string[], env: Record<string, string>): RunningCli {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  clis.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const result = new Promise<CliResult>((resolve) =>
    child.on('close', (code) => {
      clis.delete(child);
      resolve({ code: code ?? -1, stdout, stderr: withoutNodeWarnings(stderr) });
    }),
  );
  return {
    pid: child.pid!,
    result,
    exited: () => child.exitCode !== null || child.signalCode !== null,
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      process.kill(child.pid!, 'SIGKILL');
      await result;
    },
  };
}

/** Files below `dir` (recursively), leaving out the local store's temporary files. */
export async function filesBelow(dir: string): Promise<string[]> {
  let entries;
  try {
    entries = await readdir(dir, { recursive: true, withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  return entries.filter((e) => e.isFile() && !e.name.includes('.tmp-')).map((e) => join(e.parentPath, e.name));
}

/** Writes `size` random bytes to `path` a MiB at a time; returns their SHA-256. */
export async function writeRandomFile(path: string, size: number): Promise<string> {
  const fh = await open(path, 'w');
  const h = createHash('sha256');
  try {
    for (let done = 0; done < size; ) {
      const part = randomBytes(Math.min(1 << 20, size - done));
      h.update(part);
      await fh.write(part);
      done += part.length;
    }
  } finally {
    await fh.close();
  }
  return h.digest('hex');
}

export async function sha256OfFile(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const b of createReadStream(path)) h.update(b as Buffer);
  return h.digest('hex');
}

export async function sha256Of(it: AsyncIterable<Buffer>): Promise<string> {
  const h = createHash('sha256');
  for await (const b of it) h.update(b);
  return h.digest('hex');
}

/** Where the bytes of blob `hash` sit on disk for this setup. */
export function storedBlobFile(setup: Setup, hash: string): Promise<string> {
  return storedObjectFile(setup, blobKey(hash));
}

/** Where the object under `key` (chunks/…, trees/…, versions/…) sits on disk for this setup. */
export async function storedObjectFile(setup: Setup, key: string): Promise<string> {
  if (!setup.s3) return join(setup.stowage.dataDir, 'store', ...key.split('/'));
  // s3rver keeps each object as <dir>/<bucket>/<prefix>/<key>._S3rver_object.
  const name = `/${key}._S3rver_object`;
  const hits = (await filesBelow(setup.s3.dir)).filter((f) => f.endsWith(name));
  if (hits.length !== 1) throw new Error(`expected one s3rver object file for ${key}, found ${hits.length}`);
  return hits[0]!;
}

/** Flips `length` bytes at `offset` in place: same size, different content. */
export async function corruptFile(path: string, offset: number, length = 16): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    const buf = Buffer.alloc(length);
    const { bytesRead } = await fh.read(buf, 0, length, offset);
    if (bytesRead !== length) throw new Error(`${path} has no ${length} bytes at ${offset}`);
    for (let i = 0; i < length; i++) buf[i] = buf[i]! ^ 0xff;
    await fh.write(buf, 0, length, offset);
  } finally {
    await fh.close();
  }
}

/** `promise`, or a failure naming `what` once `ms` have passed. */
export async function withDeadline<T>(what: string, promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}
