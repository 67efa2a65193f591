/**
 * The mount's prefetcher (src/fuse-mount/read/prefetcher.ts). Without FUSE: the
 * window logic (growth, cap, reset on a jump, the kernel's out-of-order
 * readahead) and the fetch scheduling (bounds per file and per mount, nothing
 * for a random reader, failures swallowed) against a fake fetch. With a real
 * FUSE mount on s3rver: S3 GETs counted while reading cold files (each chunk
 * of a sequential read fetched once, prefetch included; a random reader
 * fetches only the chunks it touches). No timing assertions.
 */
import { randomBytes } from 'node:crypto';
import { open, readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Volume } from '../src/client/index.js';
import { PackReads } from '../src/fuse-mount/read/pack-reads.js';
import { Prefetcher, ReadWindow } from '../src/fuse-mount/read/prefetcher.js';
import type { ChunkCache, ChunkCacheStats, ChunkLoad, FetchOutcome, FetchPlan } from '../src/fuse-mount/cache/types.js';
import type { ExtentReader, PlannedChunk } from '../src/fuse-mount/read/extent-reader.js';
import type { FileEntry } from '../src/gen/stowage/v1/volume.js';
import { removeScratch, scratchDir, startSetup, waitFor, type Setup } from './support/faults.js';
import { cleanUpMounts, startMountProcess, stopMount, type MountProcess } from './support/mount.js';
import { runCli, uniqueName } from './support/processes.js';
import { KiB, MiB, sha256 } from './support/volume-data.js';

const READ = 128 * KiB;

describe('prefetch window (no FUSE)', () => {
  it('grows by doubling on sequential reads up to the cap, and resets on a jump', () => {
    const w = new ReadWindow(1 * MiB, 8 * MiB);
    const sizes: number[] = [];
    for (let i = 0; i < 6; i++) sizes.push(w.observe(i * READ, READ));
    expect(sizes).toEqual([1, 2, 4, 8, 8, 8].map((n) => n * MiB));
    expect(w.next).toBe(6 * READ);

    // A jump: nothing ahead, and the stream starts again from where it landed.
    expect(w.observe(100 * MiB, READ)).toBe(0);
    expect(w.next).toBe(100 * MiB + READ);
    expect(w.observe(100 * MiB + READ, READ)).toBe(1 * MiB);
    expect(w.observe(100 * MiB + 2 * READ, READ)).toBe(2 * MiB);
    // A jump backwards resets it too.
    expect(w.observe(10 * MiB, READ)).toBe(0);
  });

  it('takes the out-of-order requests of the kernel readahead as sequential', () => {
    const w = new ReadWindow(1 * MiB, 64 * MiB);
    expect(w.observe(0, READ)).toBe(1 * MiB);
    // Two requests in flight at once arrive swapped.
    expect(w.observe(2 * READ, READ)).toBe(2 * MiB);
    expect(w.observe(READ, READ)).toBe(4 * MiB);
    expect(w.next).toBe(3 * READ);
    expect(w.observe(3 * READ + 64 * KiB, READ)).toBe(8 * MiB);
  });

  it('never starts above its cap, and a first read far from the start is a jump', () => {
    expect(new ReadWindow(1 * MiB, 256 * KiB).observe(0, READ)).toBe(256 * KiB);
    expect(new ReadWindow(1 * MiB, 64 * MiB).observe(50 * MiB, READ)).toBe(0);
  });
});

describe('prefetch scheduling (no FUSE)', () => {
  const hashOf = (file: number, i: number) => `${file.toString(16).padStart(8, '0')}${i.toString(16).padStart(56, '0')}`;
  const fileOf = (id: number, chunks: number) => ({
    size: chunks * MiB,
    extents: Array.from({ length: chunks }, (_, i) => ({ hash: hashOf(id, i), length: MiB })),
  });
  const settle = async () => {
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  };

  /** A fake chunk cache: fetches wait until released; released chunks are cached. */
  function fakeCache() {
    const cached = new Set<string>();
    const waiting: { hash: string; done: (ok: boolean) => void }[] = [];
    const fetched: string[] = [];
    let active = 0;
    let maxActive = 0;
    const fetch = (hash: string) => {
      fetched.push(hash);
      active++;
      maxActive = Math.max(maxActive, active);
      return new Promise<void>((resolve, reject) =>
        waiting.push({
          hash,
          done: (ok) => {
            active--;
            if (ok) {
              cached.add(hash);
              resolve();
            } else reject(new Error('store unreachable'));
          },
        }),
      );
    };
    /** Finishes every fetch waiting now (and those they start) until none is left. */
    const drain = async (ok = true) => {
      await settle();
      while (waiting.length > 0) {
        waiting.shift()!.done(ok);
        await settle();
      }
    };
    return { cached, fetched, fetch, drain, maxActive: () => maxActive, waiting };
  }

  it('fetches the window ahead of a sequential reader once each, within the per-file and global bounds', async () => {
    const c = fakeCache();
    const p = new Prefetcher((h) => c.cached.has(h), { maxWindow: 8 * MiB, perFile: 2, total: 3 });
    const a = fileOf(1, 40);
    const b = fileOf(2, 40);
    const fa = p.open(a, (i) => c.fetch(a.extents[i]!.hash));
    const fb = p.open(b, (i) => c.fetch(b.extents[i]!.hash));
    for (let i = 0; i < 16; i++) {
      fa.read(i * READ, READ);
      fb.read(i * READ, READ);
      await settle();
      // Never more than 2 per file issued, 3 running for the whole mount.
      expect(c.waiting.filter((w) => w.hash.startsWith(hashOf(1, 0).slice(0, 8))).length).toBeLessThanOrEqual(2);
      expect(c.waiting.length).toBeLessThanOrEqual(3);
    }
    await c.drain();
    // The reader is at 2 MiB with an 8 MiB window: chunks 1..9 (chunk 0 is the reader's own), each once.
    const wantA = Array.from({ length: 9 }, (_, i) => hashOf(1, i + 1));
    const wantB = Array.from({ length: 9 }, (_, i) => hashOf(2, i + 1));
    expect([...c.fetched].sort()).toEqual([...wantA, ...wantB].sort());
    expect(c.maxActive()).toBeLessThanOrEqual(3);
    expect(p.stats()).toMatchObject({ started: 18, failed: 0, running: 0 });
    expect(p.stats().maxRunning).toBeLessThanOrEqual(3);
    await p.close();
  });

  it('fetches nothing ahead of random reads, and starts again when the reads turn sequential', async () => {
    const c = fakeCache();
    const p = new Prefetcher((h) => c.cached.has(h), { maxWindow: 64 * MiB });
    const f = fileOf(3, 64);
    const h = p.open(f, (i) => c.fetch(f.extents[i]!.hash));
    for (const at of [30, 7, 52, 3, 18]) h.read(at * MiB + 300 * KiB, 4 * KiB);
    await c.drain();
    expect(c.fetched).toEqual([]);
    // Sequential from 40 MiB: the first window reaches into the next chunk only.
    h.read(40 * MiB, READ);
    h.read(40 * MiB + READ, READ);
    await c.drain();
    expect(c.fetched).toEqual([hashOf(3, 41)]);
    await p.close();
  });

  it('swallows failed fetches, and issues nothing once the handle is released', async () => {
    const c = fakeCache();
    const p = new Prefetcher((h) => c.cached.has(h), { maxWindow: 4 * MiB, perFile: 4 });
    const f = fileOf(4, 16);
    const h = p.open(f, (i) => c.fetch(f.extents[i]!.hash));
    for (let i = 0; i < 4; i++) h.read(i * READ, READ);
    await c.drain(false);
    expect(p.stats().failed).toBeGreaterThan(0);
    expect(p.stats().failed).toBe(p.stats().started);
    const before = c.fetched.length;
    h.release();
    h.read(4 * READ, READ);
    await c.drain();
    expect(c.fetched.length).toBe(before);
    await p.close();
  });
});

describe('pack read-ahead (no FUSE)', () => {
  const FILE = 4 * KiB;
  /** One pack blob of `n` small files back to back, as the upload packs them. */
  function pack(n: number) {
    const files = Array.from({ length: n }, () => randomBytes(FILE));
    const blob = Buffer.concat(files);
    const entries = files.map(
      (data, i) => ({ path: `f${i}`, size: FILE, extents: [{ blob: 'pack1', offset: i * FILE, length: FILE, hash: sha256(data) }] }) as unknown as FileEntry,
    );
    return { files, blob, entries };
  }
  /** A chunk cache in a Map that checks what it stores and merges concurrent loads, as the real one does. */
  class MapCache implements ChunkCache {
    readonly chunks = new Map<string, Buffer>();
    private readonly flights = new Map<string, Promise<void>>();
    async read(hash: string, length: number, at: number, into: Buffer, load: ChunkLoad): Promise<number> {
      await this.fill(hash, length, load);
      const c = this.chunks.get(hash);
      if (!c) throw new Error(`bad bytes for ${hash}`);
      return c.copy(into, 0, at, Math.min(length, at + into.length));
    }
    async fill(hash: string, _length: number, load: ChunkLoad): Promise<boolean> {
      if (this.chunks.has(hash)) return false;
      let f = this.flights.get(hash);
      if (!f) {
        f = load((plan) => this.fetch(plan)).finally(() => this.flights.delete(hash));
        this.flights.set(hash, f);
      }
      await f;
      return true;
    }
    private async fetch(plan: FetchPlan): Promise<FetchOutcome> {
      const src = (plan.source as { bytes: Uint8Array }).bytes;
      const out: FetchOutcome = new Map();
      for (const c of plan.chunks) {
        const b = Buffer.from(src.subarray(c.at, c.at + c.length));
        const ok = sha256(b) === c.hash;
        if (ok) this.chunks.set(c.hash, b);
        out.set(c.hash, ok ? 'kept' : 'mismatch');
      }
      return out;
    }
    has(hash: string): boolean {
      return this.chunks.has(hash);
    }
    stats(): ChunkCacheStats {
      return { bytes: 0, entries: this.chunks.size, hits: 0, misses: 0, loads: 0, evictions: 0, corruptions: 0, inMemory: 0 };
    }
    async close(): Promise<void> {}
  }
  function setup(n: number) {
    const p = pack(n);
    const cache = new MapCache();
    const ranges: [number, number][] = [];
    // The part of ExtentReader that PackReads uses, over the blob in memory.
    const reader = {
      cache,
      fetchRange: async (_entry: FileEntry, _index: number, offset: number, length: number, chunks: PlannedChunk[], fetch: (plan: FetchPlan) => Promise<FetchOutcome>) => {
        ranges.push([offset, length]);
        await new Promise((r) => setImmediate(r));
        return fetch({ source: { bytes: p.blob.subarray(offset, offset + length) }, offset, length, chunks });
      },
    };
    const reads = new PackReads(reader as unknown as ExtentReader);
    // As the mount indexes the leaf pages of a directory it lists: here two pages.
    reads.add('page-1', p.entries.slice(0, n >> 1));
    reads.add('page-2', p.entries.slice(n >> 1));
    const read = async (i: number) => {
      const into = Buffer.alloc(FILE);
      const got = await cache.read(p.entries[i]!.extents[0]!.hash, FILE, 0, into, reads.loader(p.entries[i]!, 0));
      return into.subarray(0, got);
    };
    return { ...p, cache, ranges, reads, read };
  }

  it('grows ranged GETs while files are read in pack order, filling the cache with every file they bring', async () => {
    const t = setup(200);
    for (let i = 0; i < 200; i++) expect((await t.read(i)).equals(t.files[i]!)).toBe(true);
    await t.reads.settled();
    // One file alone, then 128 KiB, 256 KiB, 512 KiB, … each from where the last ended.
    expect(t.ranges.map(([, len]) => len / FILE)).toEqual([1, 32, 64, 103]);
    expect(t.ranges.map(([off]) => off / FILE)).toEqual([0, 1, 33, 97]);
    expect(t.cache.chunks.size).toBe(200);
  });

  it('fetches only the file asked for when files are read out of order, and never what is cached', async () => {
    const t = setup(100);
    for (const i of [50, 10, 80, 30]) expect((await t.read(i)).equals(t.files[i]!)).toBe(true);
    expect(t.ranges).toEqual([50, 10, 80, 30].map((i) => [i * FILE, FILE]));
    // Continuing after 30 grows a range, which stops before the cached file 50.
    expect((await t.read(31)).equals(t.files[31]!)).toBe(true);
    await t.reads.settled();
    expect(t.ranges.at(-1)).toEqual([31 * FILE, 19 * FILE]);
  });

  it('lets misses covered by a range in flight wait for it instead of fetching again', async () => {
    const t = setup(64);
    await t.read(0);
    const got = await Promise.all(Array.from({ length: 20 }, (_, i) => t.read(i + 1)));
    got.forEach((g, i) => expect(g.equals(t.files[i + 1]!)).toBe(true));
    expect(t.ranges).toHaveLength(2);
    expect(t.reads.stats().joined).toBe(19);
  });
});

describe('prefetching FUSE mount on S3 (s3rver)', () => {
  const CHUNK = 1 * MiB;
  const SMALL = 4 * KiB;
  const SMALL_FILES = 600;
  const smallName = (dir: string, i: number) => `${dir}/f${String(i).padStart(4, '0')}.bin`;
  let setup: Setup;
  let env: Record<string, string>;
  let work: string;
  let mnt: string;
  let mount: MountProcess;
  const name = uniqueName('prefetch');
  const files = new Map<string, Buffer>();
  const extentsOf = new Map<string, number>();

  beforeAll(async () => {
    work = scratchDir('mount-prefetch');
    mnt = join(work, 'mnt');
    setup = await startSetup('s3');
    const { connection, server } = setup.stowage;
    env = { STOWAGE_SERVER: server.address, STOWAGE_TOKEN: server.token };
    const vol = await Volume.fromName(name, { createIfMissing: true, connection, chunkSize: CHUNK });
    // Each read by one test only, so that its chunks start cold.
    files.set('sequential.bin', randomBytes(12 * CHUNK - 1000));
    files.set('ahead.bin', randomBytes(12 * CHUNK));
    files.set('random.bin', randomBytes(40 * CHUNK + 5));
    files.set('off.bin', randomBytes(3 * CHUNK + 7));
    // Small files, packed by the upload into blobs of CHUNK bytes, in this order.
    for (let i = 0; i < SMALL_FILES; i++) files.set(smallName('walk', i), randomBytes(SMALL));
    const batch = vol.batchUpload();
    for (const [path, data] of files) batch.putFile(data, path);
    await batch.commit();
    // A pack of their own (a batch seals its last pack), read by nothing else.
    const lone = vol.batchUpload();
    for (let i = 0; i < 64; i++) {
      files.set(smallName('lone', i), randomBytes(SMALL));
      lone.putFile(files.get(smallName('lone', i))!, smallName('lone', i));
    }
    await lone.commit();
    for (const path of files.keys()) {
      const { entry } = await connection.unary(connection.volumes.getFile.bind(connection.volumes), { volume: name, path, version: 2, presign: false });
      extentsOf.set(path, new Set(entry!.extents.map((e) => e.blob)).size);
    }
    expect(extentsOf.get('sequential.bin')).toBe(12);
    mount = await startMountProcess({ volume: name, dir: mnt, cacheDir: join(work, 'cache'), env });
  });

  afterAll(async () => {
    cleanUpMounts();
    await setup?.stop();
    cleanUpMounts();
    removeScratch();
  });

  const getChunks = async () => (await setup.s3!.stats())['GET chunks'] ?? 0;
  const getChunkBytes = async () => (await setup.s3!.stats())['bytes GET chunks'] ?? 0;

  /** Reads [from, to) of a file READ bytes at a time. */
  async function readRange(path: string, from: number, to: number): Promise<Buffer> {
    const fh = await open(path, 'r');
    try {
      const out = Buffer.alloc(to - from);
      for (let got = 0; got < out.length; ) {
        const { bytesRead } = await fh.read(out, got, Math.min(READ, out.length - got), from + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      return out;
    } finally {
      await fh.close();
    }
  }

  it('reads a cold file sequentially with the right bytes, fetching each chunk once (prefetch included)', { timeout: 60_000 }, async () => {
    await setup.s3!.resetStats();
    const data = files.get('sequential.bin')!;
    const got = await readRange(join(mnt, 'sequential.bin'), 0, data.length);
    expect(sha256(got)).toBe(sha256(data));
    expect(await getChunks()).toBe(12);
  });

  it('fetches the chunks ahead of a sequential reader before it gets there, once each', { timeout: 60_000 }, async () => {
    await setup.s3!.resetStats();
    const data = files.get('ahead.bin')!;
    const got = Buffer.alloc(data.length);
    // The handle stays open: a released handle issues nothing more.
    const fh = await open(join(mnt, 'ahead.bin'), 'r');
    try {
      // The first MiB read sequentially grows the window past the whole 12 MiB file.
      for (let at = 0; at < 1 * MiB; at += READ) expect((await fh.read(got, at, READ, at)).bytesRead).toBe(READ);
      await waitFor('the prefetcher to fetch every chunk of ahead.bin', async () => ((await getChunks()) >= 12 ? true : undefined), 30_000);
      for (let at = 1 * MiB; at < data.length; at += READ) await fh.read(got, at, Math.min(READ, data.length - at), at);
    } finally {
      await fh.close();
    }
    expect(got.equals(data)).toBe(true);
    expect(await getChunks()).toBe(12);
  });

  it('fetches only the chunks random reads touch, never the whole file', { timeout: 60_000 }, async () => {
    await setup.s3!.resetStats();
    const data = files.get('random.bin')!;
    const chunks = [30, 7, 22, 3, 15, 36];
    const fh = await open(join(mnt, 'random.bin'), 'r');
    try {
      for (const c of chunks) {
        const at = c * CHUNK + 300 * KiB;
        const buf = Buffer.alloc(4 * KiB);
        const { bytesRead } = await fh.read(buf, 0, buf.length, at);
        expect(bytesRead).toBe(buf.length);
        expect(buf.equals(data.subarray(at, at + buf.length)), `chunk ${c}`).toBe(true);
      }
    } finally {
      await fh.close();
    }
    // Let anything wrongly fetched in the background reach the store before counting.
    await new Promise((r) => setTimeout(r, 500));
    expect(await getChunks()).toBe(chunks.length);
    expect(extentsOf.get('random.bin')).toBe(41);
  });

  it('walks a cold directory of packed small files in a few ranged GETs, not one per file', { timeout: 60_000 }, async () => {
    await setup.s3!.resetStats();
    const names = (await readdir(join(mnt, 'walk'))).sort();
    expect(names).toHaveLength(SMALL_FILES);
    // Four readers, in listing order (as `cp -r` or a data loader walks a directory).
    let next = 0;
    const reader = async () => {
      for (let i = next++; i < names.length; i = next++) {
        const got = await readFile(join(mnt, 'walk', names[i]!));
        expect(got.equals(files.get(`walk/${names[i]}`)!), names[i]).toBe(true);
      }
    };
    await Promise.all([reader(), reader(), reader(), reader()]);
    await new Promise((r) => setTimeout(r, 500));
    const gets = await getChunks();
    // 600 files in 3 packs: each pack's window grows from one file to 128 KiB, 256 KiB, … (about 5 GETs a pack).
    expect(gets).toBeGreaterThanOrEqual(3);
    expect(gets).toBeLessThanOrEqual(40);
    // Nothing fetched twice over, nothing beyond the files.
    expect(await getChunkBytes()).toBeGreaterThanOrEqual(SMALL_FILES * SMALL);
    expect(await getChunkBytes()).toBeLessThanOrEqual(1.1 * SMALL_FILES * SMALL);
  });

  it('reads a packed small file picked at random with one GET of its own bytes', { timeout: 60_000 }, async () => {
    await setup.s3!.resetStats();
    for (const i of [40, 12]) {
      const got = await readFile(join(mnt, smallName('lone', i)));
      expect(got.equals(files.get(smallName('lone', i))!)).toBe(true);
    }
    await new Promise((r) => setTimeout(r, 500));
    expect(await getChunks()).toBe(2);
    expect(await getChunkBytes()).toBe(2 * SMALL);
  });

  it('--prefetch-window 0 turns prefetching off; a bad size is refused', { timeout: 60_000 }, async () => {
    const dir = join(work, 'off');
    const bad = await runCli(['mount', name, dir, '--prefetch-window', 'lots', '--cache-dir', join(work, 'cache-off')], env);
    expect(bad.code, bad.stderr).toBe(2);
    for (const threads of ['65', '-1', '2x', '']) {
      const badThreads = await runCli(['mount', name, dir, '--fetch-threads', threads, '--cache-dir', join(work, 'cache-off')], env);
      expect(badThreads.code, badThreads.stderr).toBe(2);
      expect(badThreads.stderr).toContain('--fetch-threads');
    }
    const m = await startMountProcess({ volume: name, dir, cacheDir: join(work, 'cache-off'), args: ['--prefetch-window', '0'], env });
    try {
      await setup.s3!.resetStats();
      const data = files.get('off.bin')!;
      const fh = await open(join(dir, 'off.bin'), 'r');
      try {
        const buf = Buffer.alloc(READ);
        await fh.read(buf, 0, READ, 0);
        await fh.read(buf, 0, READ, READ);
        expect(buf.equals(data.subarray(READ, 2 * READ))).toBe(true);
      } finally {
        await fh.close();
      }
      await new Promise((r) => setTimeout(r, 500));
      expect(await getChunks()).toBe(1);
      expect(sha256(await readRange(join(dir, 'off.bin'), 0, data.length))).toBe(sha256(data));
    } finally {
      expect(await stopMount(m, 'SIGTERM')).toBe(0);
    }
  });

  it('still serves its reads after all that', { timeout: 30_000 }, async () => {
    expect(mount.child.exitCode).toBeNull();
    expect(mount.stderr()).not.toMatch(/read failed/);
  });
});
