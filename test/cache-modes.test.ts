/**
 * Who may read a host's chunk cache and a worker's work directory. `stowage
 * volume warmup` (the built command, the cache `stowage mount` uses) fills a
 * cache directory: private by default (0700 directories, 0600 files, whatever
 * the umask), group-readable with `--cache-mode shared` (0750, 0640, even
 * under umask 077), and a cache left with other modes is set right by the
 * next process that opens it. A `stowage worker` keeps its work directory
 * and the function code it fetched private. Against a stowage server in this
 * process (local store); needs `npm run build`.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, lstatSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { App, Volume } from '../src/client/index.js';
import { FIXTURE, cleanUpWorkers, startWorker, type WorkerProcess } from './support/bridge.js';
import { removeDir, runCli, startStowage, tempDir, uniqueName, type CliResult, type Stowage } from './support/processes.js';
import { KiB } from './support/volume-data.js';

/** Each directory and regular file at or below `root`, with its permission bits in octal (symlinks left out). */
function modesBelow(root: string): [string, string][] {
  const out: [string, string][] = [];
  const visit = (path: string) => {
    const st = lstatSync(path);
    if (!st.isDirectory() && !st.isFile()) return;
    out.push([path, (st.mode & 0o7777).toString(8)]);
    if (st.isDirectory()) for (const name of readdirSync(path)) visit(join(path, name));
  };
  visit(root);
  return out;
}

/** Paths below `root` whose mode is not `dir` (directories) or `file` (files). */
function otherModes(root: string, dir: string, file: string): string[] {
  return modesBelow(root)
    .filter(([path, mode]) => mode !== (lstatSync(path).isDirectory() ? dir : file))
    .map(([path, mode]) => `${path} ${mode}`);
}

function countFiles(root: string): number {
  return modesBelow(root).filter(([path]) => lstatSync(path).isFile()).length;
}

/** Runs the built CLI with the process umask set to `mask` (the child inherits it). */
async function runUnderUmask(mask: number, args: string[], env: Record<string, string>): Promise<CliResult> {
  const old = process.umask(mask);
  try {
    return await runCli(args, env);
  } finally {
    process.umask(old);
  }
}

describe('chunk cache and work directory modes', () => {
  let stowage: Stowage;
  let env: Record<string, string>;
  let worker: WorkerProcess | undefined;
  const name = uniqueName('cache-modes');

  beforeAll(async () => {
    stowage = await startStowage();
    env = { STOWAGE_SERVER: stowage.server.address, STOWAGE_TOKEN: stowage.server.token, STOWAGE_LOG_LEVEL: 'warn' };
    const vol = await Volume.fromName(name, { createIfMissing: true, connection: stowage.connection, chunkSize: 64 * KiB });
    const batch = vol.batchUpload();
    batch.putFile(randomBytes(300 * KiB), '/a.bin');
    batch.putFile(randomBytes(100 * KiB), '/b.bin');
    await batch.commit();
  });

  afterAll(async () => {
    await worker?.kill();
    cleanUpWorkers();
    await stowage?.stop();
    removeDir(stowage.dataDir);
  });

  it('warmup under umask 022 makes a private cache: 0700 directories, 0600 chunk files', async () => {
    const cacheDir = join(tempDir('cache-private'), 'cache');
    const r = await runUnderUmask(0o022, ['volume', 'warmup', name, '--cache-dir', cacheDir], env);
    expect(r.code, r.stderr).toBe(0);
    expect(countFiles(join(cacheDir, 'chunks'))).toBeGreaterThanOrEqual(6);
    expect(otherModes(cacheDir, '700', '600')).toEqual([]);
  });

  it('--cache-mode shared makes it group-readable (0750, 0640) even under umask 077; the next private warmup sets it back', async () => {
    const cacheDir = join(tempDir('cache-shared'), 'cache');
    const shared = await runUnderUmask(0o077, ['volume', 'warmup', name, '/a.bin', '--cache-dir', cacheDir, '--cache-mode', 'shared'], env);
    expect(shared.code, shared.stderr).toBe(0);
    expect(countFiles(join(cacheDir, 'chunks'))).toBeGreaterThanOrEqual(4);
    expect(otherModes(cacheDir, '750', '640')).toEqual([]);

    // Opened private again: what the shared run wrote is private now, and so is what this run adds.
    const mine = await runUnderUmask(0o022, ['volume', 'warmup', name, '--cache-dir', cacheDir], { ...env, STOWAGE_LOG_LEVEL: 'info' });
    expect(mine.code, mine.stderr).toBe(0);
    expect(otherModes(cacheDir, '700', '600')).toEqual([]);
    expect(mine.stderr).toMatch(/set the modes of \d+ files and directories in the chunk cache .* to 0700 \(directories\) and 0600 \(files\)/);
  });

  it('a cache directory every user shares (sticky bit, as /tmp) is refused (exit 5) and left as it is', async () => {
    const shared = tempDir('cache-sticky');
    chmodSync(shared, 0o1777);
    const r = await runCli(['volume', 'warmup', name, '--cache-dir', shared], env);
    expect(r.code, r.stderr).toBe(5);
    expect(r.stderr).toMatch(/is a directory every user shares \(it has the sticky bit, as \/tmp does\); give stowage a directory of its own/);
    expect((lstatSync(shared).mode & 0o7777).toString(8)).toBe('1777');
  });

  it('an unknown --cache-mode is refused (exit 2) naming the choices', async () => {
    const r = await runCli(['volume', 'warmup', name, '--cache-dir', join(tempDir('cache-bad'), 'cache'), '--cache-mode', 'world'], env);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--cache-mode "world": choose private or shared/);
  });

  it('a worker under umask 022 keeps its work directory and the code it fetched private', async () => {
    const old = process.umask(0o022);
    try {
      worker = await startWorker({ id: uniqueName('w'), server: stowage.server.address, token: stowage.server.token, slots: 1 });
    } finally {
      process.umask(old);
    }
    const app = new App('modes', { connection: stowage.connection });
    const add = app.function<[number, number], number>({ module: FIXTURE, name: 'add' }, () => 0);
    expect(await add.remote(2, 3)).toBe(5);
    const code = join(worker.workDir, 'code');
    expect(readdirSync(code).filter((f) => f.endsWith('.mjs'))).toHaveLength(1);
    expect(otherModes(code, '700', '600')).toEqual([]);
    expect((lstatSync(worker.workDir).mode & 0o777).toString(8)).toBe('700');
  });
});
