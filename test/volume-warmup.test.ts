/**
 * `stowage volume warmup` as a user runs it: the built command in its own
 * process against a stowage server in this process on S3 (s3rver), with the
 * store's GETs counted by s3rver's /__stats. A warmed cache is then checked
 * two ways: DiskChunkCache opened on the same directory says which chunks it
 * holds, and a real `stowage mount` (a child process, killed by PID; its
 * mount point detached with fusermount -uz whatever happened) reads every
 * file with no GET to the store. Needs `npm run build` first.
 */
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bytes } from '../src/cli/output.js';
import { Volume } from '../src/client/index.js';
import { DiskChunkCache } from '../src/fuse-mount/cache/disk-cache.js';
import type { WarmupResult } from '../src/fuse-mount/read/warmup.js';
import { FileType, type FileEntry } from '../src/gen/stowage/v1/volume.js';
import { removeScratch, scratchDir, startSetup, type Setup } from './support/faults.js';
import { cleanUpMounts, detach, startMountProcess, stopMount } from './support/mount.js';
import { runCli, uniqueName, type CliResult } from './support/processes.js';
import { KiB, sha256, writeRandomTree } from './support/volume-data.js';

/** Small chunks, so that a file of a few hundred KiB is several chunks. */
const CHUNK = 64 * KiB;

/** What `warmup --json` prints. */
type WarmupJson = WarmupResult & { cacheDir: string };

describe('stowage volume warmup (S3 store)', () => {
  let setup: Setup;
  let work: string;
  let env: Record<string, string>;
  const name = uniqueName('warmup');
  /** Every file's bytes, by path. */
  const want = new Map<string, Buffer>();
  /** Every file's listed entry (with extents), by path. */
  const entries = new Map<string, FileEntry>();
  /** A whole chunk that begins both shared/x.bin and shared/y.bin. */
  const common = randomBytes(CHUNK);

  const hashesOf = (...paths: string[]): Set<string> => new Set(paths.flatMap((p) => entries.get(p)!.extents.map((e) => e.hash)));
  /** GET requests s3rver answered since the last reset, of any kind. */
  async function gets(): Promise<number> {
    const stats = await setup.s3!.stats();
    return Object.entries(stats).reduce((n, [k, v]) => (k.startsWith('GET ') ? n + v : n), 0);
  }
  async function warmup(args: string[], extraEnv: Record<string, string> = {}): Promise<CliResult> {
    return runCli(['volume', 'warmup', name, ...args], { ...env, ...extraEnv });
  }
  async function warmupJson(args: string[], extraEnv: Record<string, string> = {}): Promise<WarmupJson> {
    const r = await warmup([...args, '--json'], extraEnv);
    expect(r.code, `warmup ${args.join(' ')}: ${r.stderr}`).toBe(0);
    return JSON.parse(r.stdout) as WarmupJson;
  }
  async function cachedIn(dir: string): Promise<(hash: string) => boolean> {
    const cache = await DiskChunkCache.open({ dir, maxBytes: 1024 ** 3 });
    await cache.close();
    return (hash) => cache.has(hash);
  }

  beforeAll(async () => {
    work = scratchDir('warmup');
    setup = await startSetup('s3');
    const { connection, server } = setup.stowage;
    env = { STOWAGE_SERVER: server.address, STOWAGE_TOKEN: server.token, STOWAGE_LOG_LEVEL: 'warn' };
    const vol = await Volume.fromName(name, { createIfMissing: true, connection, chunkSize: CHUNK });

    want.set('a.bin', randomBytes(3 * CHUNK + 1000));
    want.set('b.bin', randomBytes(2 * CHUNK + 500));
    // The same bytes as b.bin: every chunk shared.
    want.set('copy-of-b.bin', want.get('b.bin')!);
    want.set('shared/x.bin', Buffer.concat([common, randomBytes(CHUNK / 2)]));
    want.set('shared/y.bin', Buffer.concat([common, randomBytes(CHUNK / 3)]));
    want.set('empty.bin', Buffer.alloc(0));
    const batch = vol.batchUpload();
    for (const [path, data] of want) batch.putFile(data, path);
    // Small files, packed several to a blob.
    const treeDir = join(work, 'tree-src');
    for (const [rel, data] of writeRandomTree(treeDir, 40, 0, 3000)) want.set(`tree/${rel}`, data);
    batch.putDirectory(treeDir, 'tree');
    expect((await batch.commit()).version).toBe(1);

    const call = connection.volumes.listFiles({ volume: name, path: '', recursive: true, version: 1, pageSize: 0, pageToken: '', withoutExtents: false });
    for await (const b of connection.stream(call)) {
      for (const e of b.entries) if (e.type !== FileType.FILE_TYPE_DIRECTORY) entries.set(e.path, e);
    }
    expect([...entries.keys()].sort()).toEqual([...want.keys()].sort());
    expect(entries.get('shared/x.bin')!.extents[0]!.hash).toBe(entries.get('shared/y.bin')!.extents[0]!.hash);
  });

  afterAll(async () => {
    cleanUpMounts();
    await setup?.stop();
    cleanUpMounts();
    removeScratch();
  });

  it('warms the whole volume fetching each distinct chunk once; a second warmup fetches nothing', { timeout: 60_000 }, async () => {
    const cacheDir = join(work, 'cache-whole');
    const distinct = hashesOf(...entries.keys());
    const totalBytes = [...want.values()].reduce((n, d) => n + d.length, 0);
    await setup.s3!.resetStats();
    const first = await warmupJson(['--cache-dir', cacheDir]);
    expect(first).toMatchObject({
      volume: name,
      version: 1,
      files: want.size,
      bytes: totalBytes,
      chunks: distinct.size,
      chunksFetched: distinct.size,
      chunksCached: 0,
      chunksNotKept: 0,
      cacheDir,
    });
    // Shared chunks (copy-of-b.bin, the start of shared/*) left the store once.
    expect((await setup.s3!.stats())['GET chunks']).toBe(distinct.size);
    const has = await cachedIn(cacheDir);
    expect([...distinct].filter((h) => !has(h))).toEqual([]);

    await setup.s3!.resetStats();
    const again = await warmup(['--cache-dir', cacheDir]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout.trim()).toBe(
      `warmed ${want.size} files (${bytes(totalBytes)}) of ${name} version 1 into ${cacheDir}: 0 chunks fetched (0 B), ${distinct.size} already cached`,
    );
    expect(await gets()).toBe(0);
  });

  it('warms only the files a path names, and directories recursively', { timeout: 60_000 }, async () => {
    const cacheDir = join(work, 'cache-one');
    await setup.s3!.resetStats();
    const one = await warmupJson(['a.bin', '--cache-dir', cacheDir]);
    expect(one).toMatchObject({ files: 1, bytes: want.get('a.bin')!.length, chunks: 4, chunksFetched: 4, chunksCached: 0 });
    expect((await setup.s3!.stats())['GET chunks']).toBe(4);
    let has = await cachedIn(cacheDir);
    expect([...hashesOf('a.bin')].every(has)).toBe(true);
    expect([...hashesOf('b.bin', 'shared/x.bin', 'tree/d000/f00000.bin')].some(has)).toBe(false);

    // A directory and a file inside it: each file once; a.bin's chunks are already there.
    const treeFiles = [...entries.keys()].filter((p) => p.startsWith('tree/'));
    const dir = await warmupJson(['/tree/', 'tree/d000/f00000.bin', 'a.bin', '--cache-dir', cacheDir]);
    const treeChunks = hashesOf(...treeFiles);
    expect(dir).toMatchObject({ files: treeFiles.length + 1, chunks: treeChunks.size + 4, chunksFetched: treeChunks.size, chunksCached: 4 });
    has = await cachedIn(cacheDir);
    expect([...treeChunks].every(has)).toBe(true);
    expect([...hashesOf('b.bin', 'shared/x.bin')].some(has)).toBe(false);
  });

  it('fetches a chunk shared by two files once', { timeout: 60_000 }, async () => {
    const cacheDir = join(work, 'cache-shared');
    await setup.s3!.resetStats();
    // x and y share their first chunk; b.bin and copy-of-b.bin share all three of theirs.
    const r = await warmupJson(['shared', 'b.bin', 'copy-of-b.bin', '--cache-dir', cacheDir]);
    expect(r).toMatchObject({ files: 4, chunks: 3 + 3, chunksFetched: 6, chunksCached: 0 });
    expect((await setup.s3!.stats())['GET chunks']).toBe(6);
  });

  it('takes the cache directory from STOWAGE_CACHE_DIR, as stowage mount does', { timeout: 30_000 }, async () => {
    const cacheDir = join(work, 'cache-env');
    const r = await warmupJson(['empty.bin'], { STOWAGE_CACHE_DIR: cacheDir });
    expect(r).toMatchObject({ files: 1, bytes: 0, chunks: hashesOf('empty.bin').size, cacheDir });
  });

  it('leaves a cache that a mount reads every file from without any GET to the store', { timeout: 90_000 }, async () => {
    const cacheDir = join(work, 'cache-mount');
    expect((await warmupJson(['--cache-dir', cacheDir])).chunksFetched).toBeGreaterThan(0);
    const mnt = join(work, 'mnt');
    await setup.s3!.resetStats();
    const m = await startMountProcess({ volume: name, dir: mnt, cacheDir, env });
    try {
      expect(m.line).toBe(`mounted ${name} version 1 at ${mnt}`);
      const wrong: string[] = [];
      for (const [path, data] of want) {
        const got = await readFile(join(mnt, path));
        if (got.length !== data.length || sha256(got) !== sha256(data)) wrong.push(path);
      }
      expect(wrong).toEqual([]);
      expect(await gets()).toBe(0);
    } finally {
      detach(mnt);
      await stopMount(m, 'SIGKILL');
    }
  });

  it('fails with NOT_FOUND and a hint for a missing volume, version or path; INVALID_ARGUMENT for a bad size', { timeout: 30_000 }, async () => {
    const cacheDir = join(work, 'cache-errors');
    const noVolume = await runCli(['volume', 'warmup', uniqueName('missing'), '--cache-dir', cacheDir], env);
    expect(noVolume.code, noVolume.stderr).toBe(3);
    expect(noVolume.stderr).toContain('stowage volume create');
    const noPath = await warmup(['no/such/file', '--cache-dir', cacheDir]);
    expect(noPath.code, noPath.stderr).toBe(3);
    expect(noPath.stderr).toContain(`stowage volume ls ${name}`);
    const noVersion = await warmup(['--version', '9', '--cache-dir', cacheDir]);
    expect(noVersion.code, noVersion.stderr).toBe(3);
    expect(noVersion.stderr).toContain(`stowage volume versions ${name}`);
    const badSize = await warmup(['--cache-size', 'lots', '--cache-dir', cacheDir]);
    expect(badSize.code, badSize.stderr).toBe(2);
    expect(badSize.stderr).toContain('--cache-size "lots" is not a size');
  });
});
