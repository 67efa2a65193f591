/**
 * `stowage volume …` as a user runs it: the built command in its own process,
 * against an in-process server found through STOWAGE_SERVER / STOWAGE_TOKEN.
 * Needs `npm run build` first (bin/stowage.js loads dist/).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, removeDir, runCli, runCliBytes, startStowage, tempDir, uniqueName, withoutNodeWarnings, type CliResult, type Stowage } from './support/processes.js';
import { KiB, readTree, treeDifferences, writeRandomTree } from './support/volume-data.js';

/** Small chunks, so that a 300 KiB file is several chunks. */
const CHUNK = 64 * KiB;

interface VolumeJson {
  name: string;
  latestVersion: number;
  fileCount: number;
  totalBytes: number;
}
interface FileJson {
  path: string;
  type: 'file' | 'directory';
  size: number;
}
interface VersionJson {
  version: number;
  fileCount: number;
  totalBytes: number;
}

/** Entries as sorted "dir PATH" / "file PATH" lines, for exact comparison. */
const kinds = (entries: FileJson[]) => entries.map((f) => `${f.type === 'directory' ? 'dir' : 'file'} ${f.path}`).sort();

describe('stowage volume (CLI)', () => {
  let stowage: Stowage;
  let work: string;
  let env: Record<string, string>;

  const cli = (args: string[], input?: Buffer) => runCli(['volume', ...args], env, input);
  /** Runs a command that must succeed; the assertion shows its stderr when it does not. */
  async function ok(args: string[], input?: Buffer): Promise<CliResult> {
    const r = await cli(args, input);
    expect(r.code, `stowage volume ${args.join(' ')}: ${r.stderr}`).toBe(0);
    return r;
  }
  async function json<T>(args: string[]): Promise<T> {
    return JSON.parse((await ok([...args, '--json'])).stdout) as T;
  }
  const volumes = () => json<VolumeJson[]>(['list']);
  const versions = (name: string) => json<VersionJson[]>(['versions', name]);
  async function created(): Promise<string> {
    const name = uniqueName();
    await ok(['create', name]);
    return name;
  }

  beforeAll(async () => {
    stowage = await startStowage();
    env = { STOWAGE_SERVER: stowage.server.address, STOWAGE_TOKEN: stowage.server.token, STOWAGE_CHUNK_SIZE: String(CHUNK) };
    work = tempDir('cli');
  });
  afterAll(async () => {
    await stowage?.stop();
    for (const dir of [work, stowage?.dataDir]) if (dir) removeDir(dir);
  });

  it('creates, lists, renames and deletes volumes', async () => {
    const name = uniqueName();
    expect((await ok(['create', name])).stdout).toContain(`created volume ${name}`);
    const [again, listed, table] = await Promise.all([cli(['create', name]), volumes(), ok(['list'])]);
    expect(again.code).toBe(4);
    expect(listed.find((v) => v.name === name)).toMatchObject({ latestVersion: 0, fileCount: 0, totalBytes: 0 });
    expect(table.stdout).toContain(name);

    const renamed = uniqueName('renamed');
    await ok(['rename', name, renamed]);
    // Without --yes, and with no terminal to ask on, nothing is deleted.
    expect((await cli(['delete', renamed])).code).toBe(2);
    const names = (await volumes()).map((v) => v.name);
    expect(names).toContain(renamed);
    expect(names).not.toContain(name);
    expect((await ok(['delete', renamed, '--yes'])).stdout).toContain(`deleted volume ${renamed}`);
    const [after, ls] = await Promise.all([volumes(), cli(['ls', renamed])]);
    expect(after.map((v) => v.name)).not.toContain(renamed);
    expect(ls.code).toBe(3);
  });

  it('puts a file, a directory, into a remote directory and from stdin, and lists them', async () => {
    const name = await created();
    const file = join(work, 'hello.txt');
    writeFileSync(file, 'hello\n');
    const tree = join(work, 'put-tree');
    writeRandomTree(tree, 5, 100, 2000);

    const first = await ok(['put', name, file]);
    expect(first.stdout).toMatch(/uploaded 1 file .* as version 1 .*chunks transferred: 1 of 1/);
    const [, , , badStdin] = await Promise.all([
      ok(['put', name, tree, 'data']),
      ok(['put', name, file, 'sub/dir/']),
      ok(['put', name, '-', 'piped.bin'], randomBytes(3 * CHUNK + 1)),
      cli(['put', name, '-', 'sub/'], Buffer.from('x')),
    ]);
    expect(badStdin.code).toBe(2);

    const [top, subdir, all, history] = await Promise.all([
      ok(['ls', name]),
      json<FileJson[]>(['ls', name, 'sub/dir']),
      json<FileJson[]>(['ls', '-r', name]),
      versions(name),
    ]);
    for (const shown of ['hello.txt', 'data/', 'sub/', 'piped.bin']) expect(top.stdout).toContain(shown);
    expect(subdir).toMatchObject([{ path: 'sub/dir/hello.txt', type: 'file', size: 6 }]);
    expect(kinds(all)).toEqual([
      'dir data',
      'dir data/d000',
      'dir data/d001',
      'dir sub',
      'dir sub/dir',
      'file data/d000/f00000.bin',
      'file data/d000/f00001.bin',
      'file data/d000/f00002.bin',
      'file data/d001/f00003.bin',
      'file data/d001/f00004.bin',
      'file hello.txt',
      'file piped.bin',
      'file sub/dir/hello.txt',
    ]);
    expect(all.find((f) => f.path === 'piped.bin')?.size).toBe(3 * CHUNK + 1);
    expect(history.map((v) => v.version)).toEqual([1, 2, 3, 4]);
    expect(history.at(-1)?.fileCount).toBe(8);
  });

  it('puts a directory of 150,000 files, and stat, ls and ls -r page through it', { timeout: 300_000 }, async () => {
    const name = await created();
    const dir = join(work, 'many');
    for (let d = 0; d < 15; d++) {
      mkdirSync(join(dir, `d${d}`), { recursive: true });
      for (let i = 0; i < 10_000; i++) writeFileSync(join(dir, `d${d}`, `f${i}`), '');
    }
    const put = JSON.parse((await ok(['put', '--json', name, dir, '/'])).stdout) as { files: number };
    expect(put.files).toBe(150_000);
    const top = (await ok(['ls', name])).stdout.trim().split('\n');
    expect(top).toHaveLength(15);
    const all = (await ok(['ls', '-r', name, 'd7'])).stdout.trim().split('\n');
    expect(all).toHaveLength(10_000);
    expect((await ok(['ls', name, 'd14/f9999'])).stdout).toMatch(/d14\/f9999/);
  });

  it('refuses to overwrite without -f, and with -f moves no chunk it has already', async () => {
    const name = await created();
    const file = join(work, 'weights.bin');
    writeFileSync(file, randomBytes(300 * KiB));

    expect((await ok(['put', name, file])).stdout).toMatch(/as version 1 .*chunks transferred: 5 of 5 /);
    const refused = await cli(['put', name, file]);
    expect(refused.code).toBe(4);
    expect(refused.stderr).toMatch(/"weights.bin" already exists .*put -f.*nothing was uploaded/);
    expect((await versions(name)).map((v) => v.version)).toEqual([1]);

    expect((await ok(['put', '-f', name, file])).stdout).toMatch(/as version 2 .*chunks transferred: 0 of 5 \(0 B\)/);
    expect(await versions(name)).toMatchObject([
      { version: 1, fileCount: 1, totalBytes: 300 * KiB },
      { version: 2, fileCount: 1, totalBytes: 300 * KiB },
    ]);
  });

  it('gets a file, a directory recursively, and a file to stdout', async () => {
    const name = await created();
    const big = randomBytes(3 * CHUNK + 7);
    const bigPath = join(work, 'get-big.bin');
    writeFileSync(bigPath, big);
    const tree = join(work, 'get-tree');
    const files = writeRandomTree(tree, 12, 10, 3 * KiB);
    await Promise.all([ok(['put', name, bigPath, 'big.bin']), ok(['put', name, tree, 'models/tree'])]);

    const out = join(work, 'get-out');
    mkdirSync(out);
    await ok(['get', name, 'big.bin', join(out, 'big.bin')]);
    expect(readFileSync(join(out, 'big.bin')).equals(big)).toBe(true);
    const [exists, intoDir, , piped, dirToStdout, missing] = await Promise.all([
      cli(['get', name, 'big.bin', join(out, 'big.bin')]),
      // Into a directory that exists: the tree lands below it under its own name.
      ok(['get', name, 'models/tree', out]),
      // To a path that does not exist yet: that path becomes the tree.
      ok(['get', name, '/models', join(work, 'models-copy')]),
      runCliBytes(['volume', 'get', name, 'big.bin', '-'], env),
      cli(['get', name, 'models', '-']),
      cli(['get', name, 'nothing.bin', join(out, 'x')]),
    ]);
    expect(exists.code).toBe(4);
    expect(intoDir.stdout).toMatch(/downloaded 12 files /);
    expect(treeDifferences(files, readTree(join(out, 'tree')))).toEqual([]);
    expect(treeDifferences(files, readTree(join(work, 'models-copy', 'tree')))).toEqual([]);
    expect(piped.code, piped.stderr).toBe(0);
    expect(piped.stdout.equals(big)).toBe(true);
    expect(dirToStdout.code).toBe(2);
    expect(missing.code).toBe(3);

    writeFileSync(join(out, 'big.bin'), 'stale');
    await ok(['get', '-f', name, 'big.bin', join(out, 'big.bin')]);
    expect(readFileSync(join(out, 'big.bin')).equals(big)).toBe(true);
  });

  it('removes files and directories, and copies inside a volume', async () => {
    const name = await created();
    const tree = join(work, 'rm-tree');
    writeFileSync(join(work, 'a.txt'), 'alpha');
    writeRandomTree(tree, 3, 10, 100);
    await Promise.all([ok(['put', name, join(work, 'a.txt'), 'a.txt']), ok(['put', name, tree, 'dir'])]);

    await Promise.all([ok(['cp', name, 'a.txt', 'b.txt']), ok(['cp', '-r', name, 'a.txt', 'dir/d000', 'copies'])]);
    const [piped, copies, oneArg, dirNoR] = await Promise.all([
      runCliBytes(['volume', 'get', name, 'b.txt', '-'], env),
      json<FileJson[]>(['ls', '-r', name, 'copies']),
      cli(['cp', name, 'b.txt']),
      cli(['rm', name, 'dir']),
    ]);
    expect(piped.stdout.toString()).toBe('alpha');
    expect(kinds(copies)).toEqual(['dir copies/d000', 'file copies/a.txt', 'file copies/d000/f00000.bin', 'file copies/d000/f00001.bin']);
    expect(oneArg.code).toBe(2);
    expect(dirNoR.code).toBe(5);
    expect(dirNoR.stderr).toContain('rm -r');

    const [rmFile] = await Promise.all([ok(['rm', name, 'a.txt']), ok(['rm', '-r', name, 'dir'])]);
    expect(rmFile.stdout).toContain(`removed a.txt from ${name}`);
    const [again, left, atV2] = await Promise.all([
      cli(['rm', name, 'a.txt']),
      json<FileJson[]>(['ls', '-r', name]),
      // Earlier versions still hold what was removed.
      json<FileJson[]>(['ls', '--version', '2', name]),
    ]);
    expect(again.code).toBe(3);
    expect(kinds(left)).toEqual([
      'dir copies',
      'dir copies/d000',
      'file b.txt',
      'file copies/a.txt',
      'file copies/d000/f00000.bin',
      'file copies/d000/f00001.bin',
    ]);
    expect(kinds(atV2)).toEqual(['dir dir', 'file a.txt']);
  });

  it('rebuilds the index on request', async () => {
    const name = await created();
    await ok(['put', name, '-', 'x.txt'], Buffer.from('x'));
    const res = await json<{ volumes: number; versions: number }>(['rebuild-index']);
    expect(res.volumes).toBeGreaterThanOrEqual(1);
    expect(res.versions).toBeGreaterThanOrEqual(1);
    expect((await versions(name)).map((v) => v.version)).toEqual([1]);
  });

  it('ls into a reader that goes away after one line (`| head -1`) exits 0 without a stack trace', async () => {
    const name = await created();
    // Far more than a pipe's buffer (64 KiB) of rows: the CLI is still writing when the reader leaves.
    const dir = join(work, 'head');
    mkdirSync(dir);
    for (let i = 0; i < 3000; i++) writeFileSync(join(dir, `a-file-with-a-longish-name-${i}`), '');
    await ok(['put', name, dir, '/']);
    const run = await new Promise<{ code: number | null; first: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [CLI, 'volume', 'ls', '-r', name], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
      let first = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => {
        if (first) return;
        first = d.toString().split('\n')[0]!;
        child.stdout.destroy();
      });
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('close', (code) => resolve({ code, first, stderr }));
    });
    expect(run.first).toMatch(/^(file|dir ) .*a-file-with-a-longish-name-/);
    expect(withoutNodeWarnings(run.stderr)).toBe('');
    expect(run.code).toBe(0);
  });

  it('refuses a --keep-last that is not a whole number a uint32 holds, naming the flag and quoting the value (exit 2)', async () => {
    const name = await created();
    const before = (await json<{ keepLast: number }>(['retention', name])).keepLast;
    for (const bad of ['1e3', '', ' ', '0x10', '-1', '4294967296', '1.5']) {
      const r = await cli(['retention', name, '--keep-last', bad]);
      expect(r.code, `--keep-last ${JSON.stringify(bad)}: ${r.stderr}`).toBe(2);
      expect(r.stderr).toContain(`--keep-last ${JSON.stringify(bad)}: must be a whole number from 0 to 4294967295`);
    }
    expect((await json<{ keepLast: number }>(['retention', name])).keepLast).toBe(before);
    // The largest a uint32 holds is taken as it is.
    expect((await json<{ keepLast: number }>(['retention', name, '--keep-last', '4294967295'])).keepLast).toBe(4294967295);
    // 0 and 0 is the server's default, not "only the latest": refused, saying so.
    const zero = await cli(['retention', name, '--keep-last', '0', '--keep-within', '0']);
    expect(zero.code).toBe(2);
    expect(zero.stderr).toMatch(/sets the volume back to the server's default retention; say --default for that, or --keep-last 1 to keep only the latest/);
  });

  it('says which characters a volume name may use (exit 2)', async () => {
    const cases = [['create', 'bad name!'], ['ls', 'bad/name'], ['put', 'bad name', '-', 'x.txt']];
    const results = await Promise.all(cases.map((args) => cli(args, Buffer.from('x'))));
    for (const [i, r] of results.entries()) {
      const args = cases[i]!;
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr, args.join(' ')).toContain('A-Z a-z 0-9 . _ -');
    }
  });

  it('points to `stowage volume create` for a volume that does not exist (exit 3)', async () => {
    const missing = uniqueName('missing');
    const cases = [['ls', missing], ['put', missing, '-', 'x.txt'], ['get', missing, 'x.txt', '-'], ['versions', missing]];
    const results = await Promise.all(cases.map((args) => cli(args, Buffer.from('x'))));
    for (const [i, r] of results.entries()) {
      const args = cases[i]!;
      expect(r.code, args.join(' ')).toBe(3);
      expect(r.stderr, args.join(' ')).toContain(`stowage volume create ${missing}`);
    }
    expect((await volumes()).map((v) => v.name)).not.toContain(missing);
  });
});
