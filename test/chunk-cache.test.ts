/**
 * The host's chunk cache (src/fuse-mount/cache/): DiskChunkCache on real files
 * in a temporary directory, checked against the ChunkCache contract
 * (cache/types.ts). The contract and disk tests run twice: with fetch jobs
 * inline (`fetchThreads: 0`) and on two real fetch threads (the worker is
 * dist/src/fuse-mount/cache/fetch-worker.js: needs `npm run build`).
 *
 * Loads are ChunkLoads that count their calls and hand `fetch` plans with the
 * bytes in hand (one chunk, or several at their offsets in a range as a pack
 * read does). Faults are made on the real directory (blocks flipped, files
 * truncated or of the old format, the directory deleted, another cache on the
 * same directory); write failures (ENOSPC, EDQUOT, EACCES) are injected by
 * wrapping node:fs' openSync and writeSync, which reach fetch-job.ts only when
 * jobs run inline, so those tests use `fetchThreads: 0`.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, open as openFile, readFile, readdir, rm, stat, truncate, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { FailedPreconditionError, IntegrityError, InvalidArgumentError, UnavailableError } from '../src/common/errors.js';
import { GROUP_READABLE, PRIVATE, type FileModes } from '../src/common/file-modes.js';
import { sha256 } from '../src/common/hash.js';
import type { Logger } from '../src/common/logger.js';
import { BLOCK, TRAILER_BYTES, blocksOf } from '../src/common/block-file.js';
import { DiskChunkCache } from '../src/fuse-mount/cache/disk-cache.js';
import type { ChunkCache, ChunkLoad, FetchOutcome, FetchPlan } from '../src/fuse-mount/cache/types.js';

/**
 * Injected faults of node:fs as fetch-job.ts writes chunk files: the next
 * writeSync calls fail with `writes` (one code per call), and while `open` is
 * set every openSync of a temporary chunk file fails with it.
 */
const faults = vi.hoisted(() => ({ writes: [] as string[], open: undefined as string | undefined }));
vi.mock('node:fs', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs')>();
  const injected = (code: string): Error => Object.assign(new Error(`${code}: injected failure`), { code });
  const openSync = ((...args: Parameters<typeof real.openSync>) => {
    if (faults.open && String(args[0]).includes('.tmp-')) throw injected(faults.open);
    return real.openSync(...args);
  }) as typeof real.openSync;
  const writeSync = ((...args: unknown[]) => {
    const code = faults.writes.shift();
    if (code) throw injected(code);
    return (real.writeSync as (...a: unknown[]) => number)(...args);
  }) as typeof real.writeSync;
  return { ...real, openSync, writeSync, default: { ...real, openSync, writeSync } };
});

const KiB = 1024;
const CHUNK = 64 * KiB;

interface Chunk {
  hash: string;
  data: Buffer;
}

function chunk(length = CHUNK): Chunk {
  const data = randomBytes(length);
  return { hash: sha256(data), data };
}

/** A plan fetching one chunk from the bytes in hand (a fresh copy, as a fetch would be). */
function planOf(c: Chunk): FetchPlan {
  return { source: { bytes: Buffer.from(c.data) }, offset: 0, length: c.data.length, chunks: [{ hash: c.hash, length: c.data.length, at: 0 }] };
}

/** A plan fetching a range that holds `chunks` one after another, as a pack range does; `shift` moves where the plan says one of them is. */
function packPlan(chunks: Chunk[], shift: { hash?: string; by?: number } = {}): FetchPlan {
  const bytes = Buffer.concat(chunks.map((c) => c.data));
  let at = 0;
  const planned = chunks.map((c) => {
    const p = { hash: c.hash, length: c.data.length, at: at + (c.hash === shift.hash ? (shift.by ?? 0) : 0) };
    at += c.data.length;
    return p;
  });
  return { source: { bytes }, offset: 4096, length: bytes.length, chunks: planned };
}

/** The plan of `c` with other bytes of the same length. */
function wrongBytesPlan(c: Chunk): FetchPlan {
  return { ...planOf(c), source: { bytes: randomBytes(c.data.length) } };
}

interface Loader {
  load: ChunkLoad;
  calls(): number;
  /** What `fetch` answered for each plan, in order. */
  outcomes: FetchOutcome[];
}

/** A load that counts its calls and, one event-loop turn later, hands `fetch` the plans `plans()` makes. */
function loaderOf(plans: () => FetchPlan[]): Loader {
  let calls = 0;
  const outcomes: FetchOutcome[] = [];
  return {
    load: async (fetch) => {
      calls++;
      await new Promise((r) => setImmediate(r));
      for (const plan of plans()) outcomes.push(await fetch(plan));
    },
    calls: () => calls,
    outcomes,
  };
}

const loader = (c: Chunk): Loader => loaderOf(() => [planOf(c)]);

/** A load that counts its calls and rejects with `failure` one turn later. */
function rejecting(failure: Error): Loader {
  let calls = 0;
  return {
    load: async () => {
      calls++;
      await new Promise((r) => setImmediate(r));
      throw failure;
    },
    calls: () => calls,
    outcomes: [],
  };
}

const mustNotLoad: ChunkLoad = () => Promise.reject(new Error('load must not be called on a hit'));

/** The whole chunk by one read: checks the count and returns the bytes read. */
async function readAll(cache: ChunkCache, hash: string, length: number, load: ChunkLoad): Promise<Buffer> {
  const into = Buffer.alloc(length);
  const n = await cache.read(hash, length, 0, into, load);
  expect(n).toBe(length);
  return into;
}

/** Reads all of `c` and checks the bytes. */
async function expectChunk(cache: ChunkCache, c: Chunk, load: ChunkLoad): Promise<void> {
  expect((await readAll(cache, c.hash, c.data.length, load)).equals(c.data)).toBe(true);
}

let dir: string;
const opened: DiskChunkCache[] = [];

interface OpenOptions {
  fetchThreads?: number;
  memoryBytes?: number;
  touchIntervalMs?: number;
  modes?: Readonly<FileModes>;
  logger?: Logger;
}

async function openDisk(maxBytes = 16 * CHUNK, opts: OpenOptions = {}): Promise<DiskChunkCache> {
  const cache = await DiskChunkCache.open({ dir, maxBytes, ...opts });
  opened.push(cache);
  return cache;
}

const chunkPath = (hash: string): string => join(dir, 'chunks', hash.slice(0, 2), hash);
const fileSize = (length: number): number => length + 4 * blocksOf(length) + TRAILER_BYTES;

/** Every file under <dir>/chunks with its size (temporary files included, so leftovers show). */
async function filesOnDisk(): Promise<Map<string, number>> {
  const files = new Map<string, number>();
  const root = join(dir, 'chunks');
  for (const shard of await readdir(root).catch(() => [] as string[])) {
    for (const name of await readdir(join(root, shard))) files.set(name, (await stat(join(root, shard, name))).size);
  }
  return files;
}

/** Whether the chunk's file on disk is whole and good: its bytes, then a table and trailer of the right size ending in "STWC"… */
async function expectGoodFile(c: Chunk): Promise<void> {
  const file = await readFile(chunkPath(c.hash));
  expect(file.length).toBe(fileSize(c.data.length));
  expect(file.subarray(0, c.data.length).equals(c.data)).toBe(true);
  expect(file.subarray(file.length - TRAILER_BYTES, file.length - TRAILER_BYTES + 4).toString('latin1')).toBe('STWC');
}

/** Overwrites `bytes.length` bytes of the file in place at `position` (an open descriptor on it sees the change). */
async function overwrite(path: string, position: number, bytes: Buffer): Promise<void> {
  const fh = await openFile(path, 'r+');
  try {
    await fh.write(bytes, 0, bytes.length, position);
  } finally {
    await fh.close();
  }
}

/** Flips every bit of the byte at `position` of the file, in place. */
async function flipByte(path: string, position: number): Promise<void> {
  const file = await readFile(path);
  await overwrite(path, position, Buffer.from([file[position]! ^ 0xff]));
}

/** A logger whose warnings are collected. */
function capturingLogger(): { logger: Logger; warnings: string[] } {
  const warnings: string[] = [];
  const logger = pino({ level: 'warn' }, { write: (line: string) => void warnings.push(line) });
  return { logger, warnings };
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'stowage-chunk-cache-'));
  faults.writes = [];
  faults.open = undefined;
});

afterEach(async () => {
  faults.writes = [];
  faults.open = undefined;
  for (const c of opened.splice(0)) await c.close();
  await rm(dir, { recursive: true, force: true });
});

describe.each([0, 2])('DiskChunkCache, fetchThreads: %i', (fetchThreads) => {
  const openCache = (maxBytes?: number, opts: OpenOptions = {}): Promise<DiskChunkCache> => openDisk(maxBytes, { fetchThreads, ...opts });

  describe('reads', () => {
    it('loads a missing chunk once, stores it under its hash in the block-file layout and serves it from disk afterwards', async () => {
      const cache = await openCache();
      const c = chunk();
      const l = loader(c);
      expect(cache.has(c.hash)).toBe(false);
      await expectChunk(cache, c, l.load);
      expect(l.calls()).toBe(1);
      expect(l.outcomes).toEqual([new Map([[c.hash, 'kept']])]);
      expect(cache.has(c.hash)).toBe(true);
      await expectGoodFile(c);

      await expectChunk(cache, c, mustNotLoad);
      expect(l.calls()).toBe(1);
      expect(cache.stats()).toEqual({ hits: 1, misses: 1, loads: 1, entries: 1, bytes: CHUNK, evictions: 0, corruptions: 0, inMemory: 0 });
    });

    it('reads any range: aligned, unaligned, across blocks, short at the end, empty beyond it; each the source bytes and nothing past them', async () => {
      const cache = await openCache();
      const length = 3 * BLOCK + 1000;
      const c = chunk(length);
      const l = loader(c);
      const ranges: [at: number, size: number][] = [
        [0, BLOCK], // one block, aligned (first read: the miss)
        [BLOCK, 2 * BLOCK], // aligned, two blocks
        [0, length], // the whole chunk
        [100, 50], // inside a block
        [BLOCK - 10, 20], // across a block boundary
        [BLOCK + 7, 2 * BLOCK], // unaligned, across three blocks
        [3 * BLOCK, 1000], // the last, partial block exactly
        [3 * BLOCK, 128 * KiB], // aligned, short at the end
        [length - 10, 4096], // unaligned, short at the end
        [5, 0], // an empty buffer
        [length, 10], // at the end: nothing
        [length + 5, 10], // beyond the end, in the last block
        [length + 2 * BLOCK + 7, 10], // beyond the end, blocks past the last one
        [4 * BLOCK, 10], // beyond the end, block-aligned
      ];
      const check = async (at: number, size: number): Promise<void> => {
        const into = Buffer.alloc(size, 0xa5);
        const n = await cache.read(c.hash, length, at, into, l.load);
        const want = Math.max(0, Math.min(size, length - at));
        expect(n, `read of ${size} at ${at}`).toBe(want);
        expect(into.subarray(0, n).equals(c.data.subarray(at, at + n)), `bytes of ${size} at ${at}`).toBe(true);
        expect(into.subarray(n).every((b) => b === 0xa5), `bytes after the ${n} read at ${at}`).toBe(true);
      };
      for (const [at, size] of ranges) await check(at, size);
      // All of them again at once, from disk.
      await Promise.all(ranges.map(([at, size]) => check(at, size)));
      expect(l.calls()).toBe(1);
      expect(cache.stats()).toMatchObject({ loads: 1, misses: 1, corruptions: 0, entries: 1 });
      expect(existsSync(chunkPath(c.hash))).toBe(true);
    });

    it('stores and reads a zero-length chunk', async () => {
      const cache = await openCache();
      const c = chunk(0);
      const l = loader(c);
      expect(await cache.read(c.hash, 0, 0, Buffer.alloc(10), l.load)).toBe(0);
      expect(await cache.read(c.hash, 0, 3, Buffer.alloc(10), l.load)).toBe(0);
      expect(l.calls()).toBe(1);
      expect((await stat(chunkPath(c.hash))).size).toBe(TRAILER_BYTES);
      await cache.close();
      const second = await openCache();
      expect(second.has(c.hash)).toBe(true);
      expect(await second.read(c.hash, 0, 0, Buffer.alloc(1), mustNotLoad)).toBe(0);
      expect(await second.fill(c.hash, 0, mustNotLoad)).toBe(false);
    });

    it('rejects a malformed hash, length or offset with InvalidArgumentError, before loading', async () => {
      const cache = await openCache();
      const into = Buffer.alloc(16);
      for (const hash of ['../../etc/passwd', 'A'.repeat(64), `${'a'.repeat(63)}/`, '', 'a'.repeat(65)]) {
        await expect(cache.read(hash, 1, 0, into, mustNotLoad)).rejects.toBeInstanceOf(InvalidArgumentError);
        await expect(cache.fill(hash, 1, mustNotLoad)).rejects.toBeInstanceOf(InvalidArgumentError);
      }
      const ok = 'a'.repeat(64);
      for (const [length, at] of [[-1, 0], [1.5, 0], [Number.NaN, 0], [10, -1], [10, 0.5], [10, Number.POSITIVE_INFINITY]] as const) {
        await expect(cache.read(ok, length, at, into, mustNotLoad), `length ${length} at ${at}`).rejects.toBeInstanceOf(InvalidArgumentError);
      }
      await expect(cache.fill(ok, -1, mustNotLoad)).rejects.toBeInstanceOf(InvalidArgumentError);
      expect(cache.stats()).toMatchObject({ loads: 0, misses: 0 });
    });

    it('refuses reads and fills after close with FailedPreconditionError', async () => {
      const cache = await openCache();
      const c = chunk();
      await cache.fill(c.hash, c.data.length, loader(c).load);
      await cache.close();
      await expect(cache.read(c.hash, c.data.length, 0, Buffer.alloc(10), mustNotLoad)).rejects.toBeInstanceOf(FailedPreconditionError);
      await expect(cache.fill(c.hash, c.data.length, mustNotLoad)).rejects.toBeInstanceOf(FailedPreconditionError);
      expect(existsSync(chunkPath(c.hash))).toBe(true); // stored chunks stay on disk
    });

    it('fill loads a missing chunk and says so, then finds it held; a read after it does not load', async () => {
      const cache = await openCache();
      const c = chunk();
      const l = loader(c);
      expect(await cache.fill(c.hash, c.data.length, l.load)).toBe(true);
      expect(await cache.fill(c.hash, c.data.length, l.load)).toBe(false);
      expect(l.calls()).toBe(1);
      await expectGoodFile(c);
      await expectChunk(cache, c, mustNotLoad);
      expect(cache.stats()).toMatchObject({ misses: 1, hits: 2, loads: 1 });
    });
  });

  describe('loads', () => {
    it('merges 16 concurrent reads of a missing chunk into one load', async () => {
      const cache = await openCache();
      const c = chunk();
      const l = loader(c);
      const reads = await Promise.all(Array.from({ length: 16 }, () => readAll(cache, c.hash, c.data.length, l.load)));
      expect(l.calls()).toBe(1);
      for (const r of reads) expect(r.equals(c.data)).toBe(true);
      expect(cache.stats()).toMatchObject({ loads: 1, misses: 16, hits: 0, entries: 1 });
    });

    it('passes a failed load to every waiting reader and caches nothing, so the next read loads again', async () => {
      const cache = await openCache();
      const c = chunk();
      const failure = new Error('store unreachable');
      const failing = rejecting(failure);
      const results = await Promise.allSettled(Array.from({ length: 4 }, () => readAll(cache, c.hash, c.data.length, failing.load)));
      expect(failing.calls()).toBe(1);
      for (const r of results) expect(r).toEqual({ status: 'rejected', reason: failure });
      expect(cache.has(c.hash)).toBe(false);
      expect((await filesOnDisk()).size).toBe(0);

      const l = loader(c);
      await expectChunk(cache, c, l.load);
      expect(l.calls()).toBe(1);
    });

    it('answers every waiter of a load whose bytes do not match with IntegrityError, and stores nothing', async () => {
      const cache = await openCache();
      const c = chunk();
      const wrong = loaderOf(() => [wrongBytesPlan(c)]);
      const results = await Promise.allSettled(Array.from({ length: 16 }, () => readAll(cache, c.hash, c.data.length, wrong.load)));
      expect(wrong.calls()).toBe(1);
      for (const r of results) {
        expect(r.status).toBe('rejected');
        expect((r as PromiseRejectedResult).reason).toBeInstanceOf(IntegrityError);
      }
      expect(wrong.outcomes).toEqual([new Map([[c.hash, 'mismatch']])]);
      // Bytes of the right length but another hash, or of another length.
      await expect(readAll(cache, c.hash, c.data.length, loaderOf(() => [{ ...planOf(c), source: { bytes: c.data.subarray(1) }, length: c.data.length - 1, chunks: [{ hash: c.hash, length: c.data.length - 1, at: 0 }] }]).load)).rejects.toBeInstanceOf(IntegrityError);
      expect(cache.has(c.hash)).toBe(false);
      expect((await filesOnDisk()).size).toBe(0); // no file, no temporary leftovers
      expect(cache.stats()).toMatchObject({ entries: 0, bytes: 0, inMemory: 0 });

      const l = loader(c);
      await expectChunk(cache, c, l.load);
      expect(l.calls()).toBe(1);
    });

    it('is an IntegrityError when a load resolves without the chunk having been stored', async () => {
      const cache = await openCache();
      const c = chunk();
      await expect(readAll(cache, c.hash, c.data.length, async () => undefined)).rejects.toBeInstanceOf(IntegrityError);
      // Fetching a neighbour only does not store this one.
      const other = chunk();
      await expect(readAll(cache, c.hash, c.data.length, loader(other).load)).rejects.toBeInstanceOf(IntegrityError);
      expect(cache.has(c.hash)).toBe(false);
      expect(cache.has(other.hash)).toBe(true);
    });

    it('stores every chunk of a plan holding several (a pack range): later reads of its neighbours do not load', async () => {
      const cache = await openCache();
      const chunks = [chunk(CHUNK), chunk(1000), chunk(40_000), chunk(0)];
      const [a, b, c, d] = chunks as [Chunk, Chunk, Chunk, Chunk];
      const pack = loaderOf(() => [packPlan(chunks)]);
      await expectChunk(cache, b, pack.load);
      expect(pack.calls()).toBe(1);
      expect(pack.outcomes).toEqual([new Map(chunks.map((x) => [x.hash, 'kept']))]);
      for (const x of [a, c, d]) {
        expect(cache.has(x.hash)).toBe(true);
        await expectChunk(cache, x, mustNotLoad);
      }
      for (const x of chunks) await expectGoodFile(x);
      expect(cache.stats()).toMatchObject({ entries: 4, bytes: CHUNK + 1000 + 40_000, loads: 1 });
    });

    it('keeps the chunks of a plan that match and not one that does not', async () => {
      const cache = await openCache();
      const [a, b] = [chunk(), chunk(5000)];
      const pack = loaderOf(() => [packPlan([a, b], { hash: b.hash, by: -1 })]);
      await expectChunk(cache, a, pack.load);
      expect(pack.outcomes).toEqual([new Map([[a.hash, 'kept'], [b.hash, 'mismatch']])]);
      expect(cache.has(b.hash)).toBe(false);
      expect(existsSync(chunkPath(b.hash))).toBe(false);
    });

    it('lets a load resolve without fetching when a range in flight stores its chunk', async () => {
      const cache = await openCache();
      const [a, b] = [chunk(), chunk()];
      // The pack range is held back until b's read has missed and called its load.
      let release!: () => void;
      const held = new Promise<void>((resolve) => (release = resolve));
      let packCalls = 0;
      const pack: ChunkLoad = async (fetch) => {
        packCalls++;
        await held;
        await fetch(packPlan([a, b]));
      };
      const readA = expectChunk(cache, a, pack);
      let waited = 0;
      const waitForPack: ChunkLoad = async () => {
        waited++;
        release();
        await readA;
      };
      await expectChunk(cache, b, waitForPack);
      expect([packCalls, waited]).toEqual([1, 1]);
    });

    it('passes a plan naming a chunk beyond its range, or a fetch that fails, to the reader and stores nothing', async () => {
      const cache = await openCache();
      const c = chunk();
      const beyond = loaderOf(() => [{ ...planOf(c), length: c.data.length - 1 }]);
      await expect(readAll(cache, c.hash, c.data.length, beyond.load)).rejects.toBeInstanceOf(InvalidArgumentError);
      const missingFile = loaderOf(() => [{ source: { file: join(dir, 'no-such-blob') }, offset: 0, length: c.data.length, chunks: [{ hash: c.hash, length: c.data.length, at: 0 }] }]);
      await expect(readAll(cache, c.hash, c.data.length, missingFile.load)).rejects.toBeInstanceOf(UnavailableError);
      expect(cache.has(c.hash)).toBe(false);
      expect((await filesOnDisk()).size).toBe(0);
    });

    it('reads a chunk from a blob file range (a file source at an offset)', async () => {
      const cache = await openCache();
      const [a, b] = [chunk(3000), chunk(CHUNK)];
      const blob = join(dir, 'blob');
      await writeFile(blob, Buffer.concat([randomBytes(777), a.data, b.data]));
      const fromFile = loaderOf(() => [{ source: { file: blob }, offset: 777, length: a.data.length + b.data.length, chunks: [{ hash: a.hash, length: a.data.length, at: 0 }, { hash: b.hash, length: b.data.length, at: a.data.length }] }]);
      await expectChunk(cache, b, fromFile.load);
      await expectChunk(cache, a, mustNotLoad);
    });
  });

  describe('bounds', () => {
    it('stays within maxBytes while 3× maxBytes are read, evicting least recently used first and removing their files', async () => {
      // The bound counts the chunks' files: their bytes, CRC tables and trailers.
      const maxBytes = 4 * fileSize(CHUNK);
      const cache = await openCache(maxBytes);
      const chunks = Array.from({ length: 12 }, () => chunk());
      const hot = chunks[0]!;
      for (const [i, c] of chunks.entries()) {
        await expectChunk(cache, c, loader(c).load);
        // The first chunk is read again before every insert: recency, not insertion order, decides.
        if (i > 0) await expectChunk(cache, hot, mustNotLoad);
        expect(cache.stats().bytes).toBeLessThanOrEqual(4 * CHUNK);
      }
      const kept = [hot, ...chunks.slice(-3)];
      for (const c of chunks) expect(cache.has(c.hash)).toBe(kept.includes(c));
      expect(cache.stats()).toMatchObject({ entries: 4, bytes: 4 * CHUNK, evictions: 8 });

      await cache.close(); // waits for the evicted files' removal
      const files = await filesOnDisk();
      expect([...files.keys()].sort()).toEqual(kept.map((c) => c.hash).sort());
      expect([...files.values()].every((size) => size === fileSize(CHUNK))).toBe(true);
    });

    it('serves a chunk larger than maxBytes without storing it on disk (in memory when it fits memoryBytes)', async () => {
      const cache = await openCache(CHUNK);
      const big = chunk(CHUNK + 1);
      const l = loader(big);
      await expectChunk(cache, big, l.load);
      await expectChunk(cache, big, l.load);
      expect(l.calls()).toBe(1);
      expect(cache.stats()).toMatchObject({ inMemory: 1, entries: 1 });
      expect((await filesOnDisk()).size).toBe(0);
    });

    it('serves a chunk larger than both maxBytes and memoryBytes to the reads of the load that fetched it, keeping it nowhere', async () => {
      const cache = await openCache(CHUNK, { memoryBytes: CHUNK });
      const big = chunk(CHUNK + 1);
      const l = loader(big);
      const reads = await Promise.all(Array.from({ length: 4 }, () => readAll(cache, big.hash, big.data.length, l.load)));
      for (const r of reads) expect(r.equals(big.data)).toBe(true);
      expect(l.calls()).toBe(1);
      await expectChunk(cache, big, l.load);
      expect(l.calls()).toBe(2);
      expect(cache.has(big.hash)).toBe(false);
      expect(cache.stats()).toMatchObject({ inMemory: 0, entries: 0, bytes: 0 });
      expect((await filesOnDisk()).size).toBe(0);
    });
  });

  describe('on disk', () => {
    it('keeps chunks across a restart: a second cache on the same directory reads them without loading', async () => {
      const first = await openCache();
      const chunks = [chunk(), chunk(), chunk(100)];
      for (const c of chunks) await expectChunk(first, c, loader(c).load);
      await first.close();

      const second = await openCache();
      expect(second.stats()).toMatchObject({ entries: 3, bytes: 2 * CHUNK + 100 });
      for (const c of chunks) {
        expect(second.has(c.hash)).toBe(true);
        await expectChunk(second, c, mustNotLoad);
      }
      expect(second.stats()).toMatchObject({ hits: 3, loads: 0, corruptions: 0 });
    });

    it('seeds recency from file mtimes at open and bumps the mtime of a chunk it serves', async () => {
      const first = await openCache(3 * fileSize(CHUNK));
      const [a, b, c, d] = [chunk(), chunk(), chunk(), chunk()];
      for (const x of [a, b, c]) await expectChunk(first, x, loader(x).load);
      await first.close();
      // Insertion order was a, b, c; the mtimes now say b is the oldest and a the newest.
      await utimes(chunkPath(b.hash), new Date('2001-01-01'), new Date('2001-01-01'));
      await utimes(chunkPath(c.hash), new Date('2002-01-01'), new Date('2002-01-01'));
      await utimes(chunkPath(a.hash), new Date('2003-01-01'), new Date('2003-01-01'));

      const second = await openCache(3 * fileSize(CHUNK), { touchIntervalMs: 0 });
      await expectChunk(second, d, loader(d).load);
      expect([a, b, c, d].map((x) => second.has(x.hash))).toEqual([true, false, true, true]);

      await expectChunk(second, c, mustNotLoad);
      await second.close(); // waits for the mtime bump and the removal of b's file
      expect((await stat(chunkPath(c.hash))).mtimeMs).toBeGreaterThan(new Date('2020-01-01').getTime());
      expect((await stat(chunkPath(a.hash))).mtimeMs).toBe(new Date('2003-01-01').getTime());
      expect(existsSync(chunkPath(b.hash))).toBe(false);
    });

    it('drops chunks beyond a smaller bound at open, oldest mtime first', async () => {
      const first = await openCache(8 * fileSize(CHUNK));
      const chunks = Array.from({ length: 8 }, () => chunk());
      // mtime years, deliberately not in the order the files were written
      const years = [2005, 2001, 2007, 2000, 2006, 2003, 2002, 2004];
      for (const [i, c] of chunks.entries()) {
        await first.fill(c.hash, c.data.length, loader(c).load);
        await utimes(chunkPath(c.hash), new Date(years[i]!, 0, 1), new Date(years[i]!, 0, 1));
      }
      await first.close();
      const second = await openCache(3 * fileSize(CHUNK));
      const newest = chunks.filter((_c, i) => years[i]! >= 2005);
      expect(chunks.map((c) => second.has(c.hash))).toEqual(chunks.map((c) => newest.includes(c)));
      expect(second.stats()).toMatchObject({ entries: 3, bytes: 3 * CHUNK });
      await second.close();
      expect([...(await filesOnDisk()).keys()].sort()).toEqual(newest.map((c) => c.hash).sort());
    });

    it('adopts a file another cache on the directory stored, and treats one it removed as a miss', async () => {
      const a = await openCache(8 * fileSize(CHUNK));
      const b = await openCache(2 * fileSize(CHUNK));
      const [x, y, z] = [chunk(), chunk(), chunk()];
      const lx = loader(x);
      await a.fill(x.hash, x.data.length, lx.load);

      // b never stored x, finds its file and reads it without loading.
      expect(b.has(x.hash)).toBe(false);
      await expectChunk(b, x, mustNotLoad);
      expect(b.has(x.hash)).toBe(true);
      expect(b.stats()).toMatchObject({ entries: 1, bytes: CHUNK, loads: 0 });

      // b's smaller bound evicts x, removing the file a still has in its index.
      await expectChunk(b, y, loader(y).load);
      await expectChunk(b, z, loader(z).load);
      await b.close();
      expect(existsSync(chunkPath(x.hash))).toBe(false);
      expect(a.has(x.hash)).toBe(true);

      await expectChunk(a, x, lx.load);
      expect(lx.calls()).toBe(2);
      await expectGoodFile(x);
    });

    it('still reads right a chunk whose file another cache removed while this one had it open', async () => {
      const a = await openCache();
      const x = chunk();
      await expectChunk(a, x, loader(x).load);
      await rm(chunkPath(x.hash));
      const again = loader(x);
      await expectChunk(a, x, again.load);
      expect(again.calls()).toBeLessThanOrEqual(1);
    });

    it('removes temporary files left by a crash at open, but not ones young enough to be writes in progress', async () => {
      const c = chunk();
      await mkdir(join(dir, 'chunks', c.hash.slice(0, 2)), { recursive: true });
      const stale = `${chunkPath(c.hash)}.tmp-0123456789ab`;
      const young = `${chunkPath(c.hash)}.tmp-ba9876543210`;
      await writeFile(stale, c.data.subarray(0, 100));
      await writeFile(young, c.data.subarray(0, 100));
      await utimes(stale, new Date('2001-01-01'), new Date('2001-01-01'));
      const cache = await openCache();
      expect(existsSync(stale)).toBe(false);
      expect(existsSync(young)).toBe(true);
      expect(cache.stats().entries).toBe(0);
    });

    it('answers a read with the wrong length for a good file with IntegrityError, keeping the file', async () => {
      const cache = await openCache();
      const c = chunk();
      await expectChunk(cache, c, loader(c).load); // its file is open now
      await expect(cache.read(c.hash, c.data.length - 1, 0, Buffer.alloc(10), mustNotLoad)).rejects.toBeInstanceOf(IntegrityError);
      await cache.close();

      const second = await openCache(); // its file is not open yet
      await expect(second.read(c.hash, c.data.length + 1, 0, Buffer.alloc(10), mustNotLoad)).rejects.toBeInstanceOf(IntegrityError);
      expect(second.stats().corruptions).toBe(0);
      await expectGoodFile(c);
      await expectChunk(second, c, mustNotLoad);
    });
  });

  describe('damaged files', () => {
    it('catches a flipped byte by the CRC32C of its block when a read touches that block, then reloads and rewrites the file', async () => {
      const cache = await openCache();
      const c = chunk(3 * BLOCK);
      const l = loader(c);
      await expectChunk(cache, c, l.load);
      await flipByte(chunkPath(c.hash), BLOCK + 100);

      // A read of block 0 reads and checks block 0 only.
      const first = Buffer.alloc(BLOCK);
      expect(await cache.read(c.hash, c.data.length, 0, first, mustNotLoad)).toBe(BLOCK);
      expect(first.equals(c.data.subarray(0, BLOCK))).toBe(true);
      expect(cache.stats().corruptions).toBe(0);

      const second = Buffer.alloc(100);
      expect(await cache.read(c.hash, c.data.length, BLOCK + 50, second, l.load)).toBe(100);
      expect(second.equals(c.data.subarray(BLOCK + 50, BLOCK + 150))).toBe(true);
      expect(l.calls()).toBe(2);
      expect(cache.stats()).toMatchObject({ corruptions: 1, entries: 1 });
      await expectGoodFile(c);
      await expectChunk(cache, c, mustNotLoad);
    });

    it.each([
      ['a byte of its data', (size: number, length: number) => (size > 0 ? Math.floor(length / 2) : 0)],
      ['a byte of its CRC table', (_size: number, length: number) => length + 2],
      ['a byte of its trailer', (size: number) => size - 3],
    ])('catches %s changed in a file not yet opened, counts it, reloads the chunk', async (_what, position) => {
      const cache = await openCache();
      const c = chunk(2 * BLOCK + 5);
      const l = loader(c);
      await cache.fill(c.hash, c.data.length, l.load);
      await flipByte(chunkPath(c.hash), position(fileSize(c.data.length), c.data.length));
      await expectChunk(cache, c, l.load);
      expect(l.calls()).toBe(2);
      expect(cache.stats()).toMatchObject({ corruptions: 1, entries: 1, loads: 2 });
      await expectGoodFile(c);
    });

    it('catches a file truncated under an open descriptor, and one with a garbage trailer', async () => {
      const cache = await openCache();
      const c = chunk();
      const l = loader(c);
      await expectChunk(cache, c, l.load);
      await truncate(chunkPath(c.hash), CHUNK / 2 + 10);
      await expectChunk(cache, c, l.load);
      expect(cache.stats()).toMatchObject({ corruptions: 1, loads: 2 });

      const d = chunk();
      const ld = loader(d);
      await cache.fill(d.hash, d.data.length, ld.load);
      await overwrite(chunkPath(d.hash), fileSize(CHUNK) - TRAILER_BYTES, randomBytes(TRAILER_BYTES));
      await expectChunk(cache, d, ld.load);
      expect(cache.stats()).toMatchObject({ corruptions: 2, loads: 4 });
      await expectGoodFile(c);
      await expectGoodFile(d);
    });

    it('removes a damaged file even when loading the chunk again fails', async () => {
      const cache = await openCache();
      const c = chunk();
      await expectChunk(cache, c, loader(c).load);
      await flipByte(chunkPath(c.hash), 10);
      const failure = new Error('store unreachable');
      await expect(readAll(cache, c.hash, c.data.length, rejecting(failure).load)).rejects.toBe(failure);
      expect(cache.has(c.hash)).toBe(false);
      expect(cache.stats()).toMatchObject({ corruptions: 1, entries: 0 });
      await cache.close(); // waits for the removal
      expect(existsSync(chunkPath(c.hash))).toBe(false);
    });

    it('removes files of the old format (the bare chunk bytes) at its first open; a read loads them again', async () => {
      const chunks = [chunk(CHUNK), chunk(100), chunk(10), chunk(3 * BLOCK + 7)];
      for (const c of chunks) {
        await mkdir(join(dir, 'chunks', c.hash.slice(0, 2)), { recursive: true });
        await writeFile(chunkPath(c.hash), c.data);
      }
      const cache = await openCache();
      for (const c of chunks) expect(cache.has(c.hash), `has ${c.data.length}`).toBe(false);
      expect(cache.stats()).toMatchObject({ entries: 0, bytes: 0 });
      expect((await filesOnDisk()).size).toBe(0);
      for (const c of chunks) {
        const again = loader(c);
        await expectChunk(cache, c, again.load);
        expect(again.calls()).toBe(1);
        await expectGoodFile(c);
      }
    });

    it('catches a file torn by a crash (its last bytes missing) when it is read, and loads it again', async () => {
      const torn = chunk(2 * BLOCK);
      const l = loader(torn);
      const first = await openCache();
      await first.fill(torn.hash, torn.data.length, l.load);
      await first.close();
      await truncate(chunkPath(torn.hash), fileSize(torn.data.length) - 5);
      const cache = await openCache();
      await expectChunk(cache, torn, l.load);
      expect(l.calls()).toBe(2);
      expect(cache.stats()).toMatchObject({ corruptions: 1 });
      await expectGoodFile(torn);
    });
  });

  describe('faults of the directory', () => {
    it('survives its whole directory being deleted: the next miss recreates it and reads work', async () => {
      const cache = await openCache();
      const [a, c, d] = [chunk(), chunk(), chunk()];
      await expectChunk(cache, a, loader(a).load); // open
      const lc = loader(c);
      await cache.fill(c.hash, c.data.length, lc.load); // stored, not open
      await rm(dir, { recursive: true, force: true });

      await expectChunk(cache, c, lc.load);
      expect(lc.calls()).toBe(2);
      await expectGoodFile(c);
      const ld = loader(d);
      await expectChunk(cache, d, ld.load);
      expect(ld.calls()).toBe(1);
      await expectGoodFile(d);
      await expectChunk(cache, a, loader(a).load);
      await expectChunk(cache, c, mustNotLoad);
      await expectChunk(cache, d, mustNotLoad);
      expect(cache.stats().inMemory).toBe(0);
    });
  });

  describe('modes', () => {
    const modesOf = async (path: string): Promise<string> => ((await stat(path)).mode & 0o7777).toString(8);
    const modesAll = async (c: Chunk): Promise<string[]> =>
      Promise.all([dir, join(dir, 'chunks'), join(dir, 'chunks', c.hash.slice(0, 2)), chunkPath(c.hash)].map(modesOf));

    it('makes private directories and files (0700, 0600) under umask 022, group-readable ones (0750, 0640) under umask 077 when shared, and sets them right at open', async () => {
      const old = process.umask(0o022);
      try {
        const c = chunk();
        const mine = await openCache(undefined, { modes: PRIVATE });
        await expectChunk(mine, c, loader(c).load);
        expect(await modesAll(c)).toEqual(['700', '700', '700', '600']);
        await mine.close();

        process.umask(0o077);
        const shared = await openCache(undefined, { modes: GROUP_READABLE });
        expect(await modesAll(c)).toEqual(['750', '750', '750', '640']); // set by the scan
        const d = chunk();
        await expectChunk(shared, d, loader(d).load);
        expect(await modesAll(d)).toEqual(['750', '750', '750', '640']);
        await shared.close();

        process.umask(0o022);
        await openCache(undefined, { modes: PRIVATE });
        expect(await modesAll(c)).toEqual(['700', '700', '700', '600']);
        expect(await modesAll(d)).toEqual(['700', '700', '700', '600']);
      } finally {
        process.umask(old);
      }
    });
  });
});

/**
 * Write faults are injected into node:fs, which fetch-job.ts calls on this
 * thread only with fetchThreads: 0. The test setup file has loaded the SDK
 * (and with it fetch-job.ts) before this file's mock: the cache is imported
 * afresh here, so that its fetch jobs see the mocked node:fs.
 */
describe('DiskChunkCache when its files cannot be written (fetchThreads: 0)', () => {
  let Fresh: typeof DiskChunkCache;
  beforeAll(async () => {
    vi.resetModules();
    Fresh = (await import('../src/fuse-mount/cache/disk-cache.js')).DiskChunkCache;
  });
  const openInline = async (maxBytes = 16 * CHUNK, opts: OpenOptions = {}): Promise<DiskChunkCache> => {
    const cache = await Fresh.open({ dir, maxBytes, fetchThreads: 0, ...opts });
    opened.push(cache);
    return cache;
  };

  it('on ENOSPC evicts and retries once; if that fails too, keeps the chunk in memory, serves it, and logs each kind once', async () => {
    const { logger, warnings } = capturingLogger();
    const cache = await openInline(8 * CHUNK, { logger });
    const [a, b, c, d, e, f] = [chunk(), chunk(), chunk(), chunk(), chunk(), chunk()];
    await expectChunk(cache, a, loader(a).load);
    await expectChunk(cache, b, loader(b).load);

    faults.writes = ['ENOSPC'];
    await expectChunk(cache, c, loader(c).load);
    expect(faults.writes).toEqual([]);
    expect(cache.has(a.hash)).toBe(false); // the least recently used made room
    expect(cache.has(b.hash)).toBe(true);
    expect(cache.has(c.hash)).toBe(true);
    await expectGoodFile(c);
    expect(cache.stats()).toMatchObject({ evictions: 1, inMemory: 0 });
    expect(warnings).toHaveLength(0);

    faults.writes = ['ENOSPC', 'ENOSPC', 'EDQUOT', 'EDQUOT'];
    const ld = loader(d);
    const le = loader(e);
    await expectChunk(cache, d, ld.load);
    await expectChunk(cache, e, le.load);
    expect(faults.writes).toEqual([]);
    expect(cache.has(d.hash)).toBe(true);
    expect(cache.has(e.hash)).toBe(true);
    expect(cache.stats()).toMatchObject({ inMemory: 2, entries: 2, evictions: 3 }); // b and c made room in vain
    await expectChunk(cache, d, mustNotLoad);
    await expectChunk(cache, e, mustNotLoad);
    // A range of a chunk held in memory.
    const part = Buffer.alloc(1000);
    expect(await cache.read(d.hash, CHUNK, CHUNK - 500, part, mustNotLoad)).toBe(500);
    expect(part.subarray(0, 500).equals(d.data.subarray(CHUNK - 500))).toBe(true);

    faults.writes = ['ENOSPC', 'ENOSPC'];
    await expectChunk(cache, f, loader(f).load);
    expect(cache.stats().inMemory).toBe(3);
    await cache.close();
    expect((await filesOnDisk()).size).toBe(0); // evicted files removed, no temporary leftovers
    expect(warnings.filter((w) => w.includes('ENOSPC'))).toHaveLength(1);
    expect(warnings.filter((w) => w.includes('EDQUOT'))).toHaveLength(1);
  });

  it('keeps chunks in memory when the directory refuses writes (EACCES), without evicting, and stores again once it can', async () => {
    const { logger, warnings } = capturingLogger();
    const cache = await openInline(8 * CHUNK, { logger });
    const [a, b, c, d] = [chunk(), chunk(3 * BLOCK + 11), chunk(), chunk()];
    await expectChunk(cache, a, loader(a).load);

    faults.open = 'EACCES';
    const lb = loader(b);
    await expectChunk(cache, b, lb.load);
    await expectChunk(cache, c, loader(c).load);
    expect(cache.has(b.hash)).toBe(true);
    expect(cache.has(a.hash)).toBe(true);
    expect(cache.stats()).toMatchObject({ evictions: 0, inMemory: 2, entries: 3 });
    for (const [at, size] of [[0, BLOCK], [BLOCK - 3, 10], [3 * BLOCK, 100]] as const) {
      const into = Buffer.alloc(size);
      const n = await cache.read(b.hash, b.data.length, at, into, mustNotLoad);
      expect(into.subarray(0, n).equals(b.data.subarray(at, at + size))).toBe(true);
    }
    expect(lb.calls()).toBe(1);
    expect(warnings.filter((w) => w.includes('EACCES'))).toHaveLength(1);

    faults.open = undefined;
    await expectChunk(cache, d, loader(d).load);
    await expectGoodFile(d);
    const files = await filesOnDisk();
    expect([...files.keys()].sort()).toEqual([a.hash, d.hash].sort());
  });

  it('keeps no more than memoryBytes in memory, least recently used leaving first', async () => {
    const cache = await openInline(8 * CHUNK, { memoryBytes: 2 * CHUNK });
    const chunks = [chunk(), chunk(), chunk()];
    faults.open = 'EACCES';
    for (const c of chunks) await expectChunk(cache, c, loader(c).load);
    expect(cache.stats()).toMatchObject({ inMemory: 2, entries: 2, bytes: 2 * CHUNK, evictions: 1 });
    expect(chunks.map((c) => cache.has(c.hash))).toEqual([false, true, true]);
    const again = loader(chunks[0]!);
    await expectChunk(cache, chunks[0]!, again.load);
    expect(again.calls()).toBe(1);
    expect(cache.stats().bytes).toBeLessThanOrEqual(2 * CHUNK);
  });
});
