/**
 * The host's chunk cache (src/fuse-mount/): DiskChunkCache on real files in a
 * temporary directory, and MemoryChunkCache over it. Loads are counted, faults
 * are made on the real directory (files corrupted or deleted, another cache
 * instance on the same directory), and write failures for lack of space are
 * injected by wrapping node:fs/promises' writeFile.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { FailedPreconditionError, IntegrityError, InvalidArgumentError } from '../src/common/errors.js';
import { sha256 } from '../src/common/hash.js';
import type { Logger } from '../src/common/logger.js';
import { DiskChunkCache } from '../src/fuse-mount/cache/disk-cache.js';
import { MemoryChunkCache } from '../src/fuse-mount/cache/memory-cache.js';
import type { ChunkCache, ChunkCacheStats } from '../src/fuse-mount/cache/types.js';

/** Error codes the next writeFile calls fail with, one per call, then writes succeed again. */
const writeFaults = vi.hoisted(() => ({ codes: [] as string[] }));
vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>();
  const failingWriteFile: typeof real.writeFile = async (...args) => {
    const code = writeFaults.codes.shift();
    if (code) throw Object.assign(new Error(`${code}: injected write failure`), { code });
    return real.writeFile(...args);
  };
  return { ...real, writeFile: failingWriteFile };
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

/** A load that counts its calls and returns a fresh copy of the chunk, one event-loop turn later. */
function loader(c: Chunk): { load: () => Promise<Buffer>; calls: () => number } {
  let calls = 0;
  return {
    load: async () => {
      calls++;
      await new Promise((r) => setImmediate(r));
      return Buffer.from(c.data);
    },
    calls: () => calls,
  };
}

const mustNotLoad = (): Promise<Buffer> => Promise.reject(new Error('load must not be called on a hit'));

/** An inner layer that counts the gets reaching it. */
class CountingCache implements ChunkCache {
  gets = 0;
  constructor(private readonly inner: ChunkCache) {}
  get(hash: string, length: number, load: () => Promise<Buffer>): Promise<Buffer> {
    this.gets++;
    return this.inner.get(hash, length, load);
  }
  has(hash: string): boolean {
    return this.inner.has(hash);
  }
  isHot(hash: string): boolean {
    return this.inner.isHot(hash);
  }
  stats(): ChunkCacheStats {
    return this.inner.stats();
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

let dir: string;
const open: DiskChunkCache[] = [];

async function openDisk(maxBytes = 16 * CHUNK, opts: { touchIntervalMs?: number; logger?: Logger } = {}): Promise<DiskChunkCache> {
  const cache = await DiskChunkCache.open({ dir, maxBytes, ...opts });
  open.push(cache);
  return cache;
}

const chunkPath = (hash: string): string => join(dir, 'chunks', hash.slice(0, 2), hash);

/** Every file under <dir>/chunks with its size (temporary files included, so leftovers show). */
async function filesOnDisk(): Promise<Map<string, number>> {
  const files = new Map<string, number>();
  const root = join(dir, 'chunks');
  for (const shard of await readdir(root).catch(() => [])) {
    for (const name of await readdir(join(root, shard))) files.set(name, (await stat(join(root, shard, name))).size);
  }
  return files;
}

/** A logger whose warnings are collected. */
function capturingLogger(): { logger: Logger; warnings: string[] } {
  const warnings: string[] = [];
  const logger = pino({ level: 'warn' }, { write: (line: string) => void warnings.push(line) });
  return { logger, warnings };
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'stowage-chunk-cache-'));
  writeFaults.codes = [];
});

afterEach(async () => {
  for (const c of open.splice(0)) await c.close();
  await rm(dir, { recursive: true, force: true });
});

describe('DiskChunkCache', () => {
  it('loads a missing chunk once, stores it under its hash and serves it from disk afterwards', async () => {
    const cache = await openDisk();
    const c = chunk();
    const l = loader(c);
    expect(cache.has(c.hash)).toBe(false);
    expect((await cache.get(c.hash, c.data.length, l.load)).equals(c.data)).toBe(true);
    expect(l.calls()).toBe(1);
    expect(cache.has(c.hash)).toBe(true);
    expect((await readFile(chunkPath(c.hash))).equals(c.data)).toBe(true);

    expect((await cache.get(c.hash, c.data.length, l.load)).equals(c.data)).toBe(true);
    expect(l.calls()).toBe(1);
    expect(cache.stats()).toMatchObject({ hits: 1, misses: 1, loads: 1, entries: 1, bytes: CHUNK, corruptions: 0 });
  });

  it('merges 16 concurrent gets of one chunk into one load', async () => {
    const cache = await openDisk();
    const c = chunk();
    const l = loader(c);
    const results = await Promise.all(Array.from({ length: 16 }, () => cache.get(c.hash, c.data.length, l.load)));
    expect(l.calls()).toBe(1);
    for (const r of results) expect(r.equals(c.data)).toBe(true);
    expect(cache.stats()).toMatchObject({ loads: 1, misses: 16, hits: 0 });
  });

  it('keeps chunks across a remount: a second cache on the same directory hits without loading', async () => {
    const first = await openDisk();
    const chunks = [chunk(), chunk(), chunk(100)];
    for (const c of chunks) await first.get(c.hash, c.data.length, loader(c).load);
    await first.close();

    const second = await openDisk();
    expect(second.stats()).toMatchObject({ entries: 3, bytes: 2 * CHUNK + 100 });
    for (const c of chunks) {
      expect(second.has(c.hash)).toBe(true);
      expect((await second.get(c.hash, c.data.length, mustNotLoad)).equals(c.data)).toBe(true);
    }
    expect(second.stats()).toMatchObject({ hits: 3, loads: 0 });
  });

  it('stays within maxBytes while 3× maxBytes are inserted, evicting least recently used first', async () => {
    const maxBytes = 4 * CHUNK;
    const cache = await openDisk(maxBytes);
    const chunks = Array.from({ length: 12 }, () => chunk());
    const hot = chunks[0]!;
    for (const [i, c] of chunks.entries()) {
      await cache.get(c.hash, c.data.length, loader(c).load);
      // The first chunk is read again before every insert: recency, not insertion order, decides.
      if (i > 0) await cache.get(hot.hash, hot.data.length, mustNotLoad);
      expect(cache.stats().bytes).toBeLessThanOrEqual(maxBytes);
    }
    const kept = [hot, ...chunks.slice(-3)];
    for (const c of chunks) expect(cache.has(c.hash)).toBe(kept.includes(c));
    expect(cache.stats()).toMatchObject({ entries: 4, bytes: maxBytes, evictions: 8 });

    await cache.close(); // waits for the evicted files' removal
    const files = await filesOnDisk();
    expect([...files.keys()].sort()).toEqual(kept.map((c) => c.hash).sort());
    expect([...files.values()].reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(maxBytes);
  });

  it('seeds recency from file mtimes at open and bumps the mtime of a chunk it serves', async () => {
    const first = await openDisk(3 * CHUNK);
    const [a, b, c, d] = [chunk(), chunk(), chunk(), chunk()];
    for (const x of [a, b, c]) await first.get(x.hash, x.data.length, loader(x).load);
    await first.close();
    // Insertion order was a, b, c; the mtimes now say b is the oldest and a the newest.
    await utimes(chunkPath(b.hash), new Date('2001-01-01'), new Date('2001-01-01'));
    await utimes(chunkPath(c.hash), new Date('2002-01-01'), new Date('2002-01-01'));
    await utimes(chunkPath(a.hash), new Date('2003-01-01'), new Date('2003-01-01'));

    const second = await openDisk(3 * CHUNK, { touchIntervalMs: 0 });
    await second.get(d.hash, d.data.length, loader(d).load);
    expect([a, b, c, d].map((x) => second.has(x.hash))).toEqual([true, false, true, true]);

    await second.get(c.hash, c.data.length, mustNotLoad);
    await second.close(); // waits for the mtime bump and the removal of b's file
    expect((await stat(chunkPath(c.hash))).mtimeMs).toBeGreaterThan(new Date('2020-01-01').getTime());
    expect((await stat(chunkPath(a.hash))).mtimeMs).toBe(new Date('2003-01-01').getTime());
    expect(existsSync(chunkPath(b.hash))).toBe(false);
  });

  it('drops chunks beyond a smaller bound at open, oldest mtime first', async () => {
    const first = await openDisk(8 * CHUNK);
    const chunks = Array.from({ length: 8 }, () => chunk());
    // mtime years, deliberately not in the order the files were written
    const years = [2005, 2001, 2007, 2000, 2006, 2003, 2002, 2004];
    for (const [i, c] of chunks.entries()) {
      await first.get(c.hash, c.data.length, loader(c).load);
      await utimes(chunkPath(c.hash), new Date(years[i]!, 0, 1), new Date(years[i]!, 0, 1));
    }
    await first.close();
    const second = await openDisk(3 * CHUNK);
    const newest = chunks.filter((_c, i) => years[i]! >= 2005);
    expect(chunks.map((c) => second.has(c.hash))).toEqual(chunks.map((c) => newest.includes(c)));
    expect(second.stats()).toMatchObject({ entries: 3, bytes: 3 * CHUNK });
    await second.close();
    expect([...(await filesOnDisk()).keys()].sort()).toEqual(newest.map((c) => c.hash).sort());
  });

  it('detects a corrupted file, counts it, reloads the chunk and repairs the file', async () => {
    const cache = await openDisk();
    const c = chunk();
    const l = loader(c);
    await cache.get(c.hash, c.data.length, l.load);
    const damaged = Buffer.from(c.data);
    damaged[1000] = damaged[1000]! ^ 0xff;
    await writeFile(chunkPath(c.hash), damaged);

    expect((await cache.get(c.hash, c.data.length, l.load)).equals(c.data)).toBe(true);
    expect(l.calls()).toBe(2);
    expect(cache.stats().corruptions).toBe(1);
    expect((await readFile(chunkPath(c.hash))).equals(c.data)).toBe(true);

    // Truncated is damaged too.
    await writeFile(chunkPath(c.hash), c.data.subarray(0, 10));
    expect((await cache.get(c.hash, c.data.length, l.load)).equals(c.data)).toBe(true);
    expect(cache.stats()).toMatchObject({ corruptions: 2, loads: 3 });

    expect((await cache.get(c.hash, c.data.length, mustNotLoad)).equals(c.data)).toBe(true);
    expect(cache.stats()).toMatchObject({ corruptions: 2, loads: 3, entries: 1 });
  });

  it('survives its whole directory being deleted: the next get reloads and stores again', async () => {
    const cache = await openDisk();
    const [c, d] = [chunk(), chunk()];
    const l = loader(c);
    await cache.get(c.hash, c.data.length, l.load);
    await rm(dir, { recursive: true, force: true });

    expect((await cache.get(c.hash, c.data.length, l.load)).equals(c.data)).toBe(true);
    expect(l.calls()).toBe(2);
    expect((await readFile(chunkPath(c.hash))).equals(c.data)).toBe(true);
    expect((await cache.get(d.hash, d.data.length, loader(d).load)).equals(d.data)).toBe(true);
    expect(existsSync(chunkPath(d.hash))).toBe(true);
    expect((await cache.get(c.hash, c.data.length, mustNotLoad)).equals(c.data)).toBe(true);
  });

  it('treats a file another process evicted as a miss, and adopts a file another process stored', async () => {
    const a = await openDisk(8 * CHUNK);
    const b = await openDisk(2 * CHUNK);
    const [x, y, z] = [chunk(), chunk(), chunk()];
    const lx = loader(x);
    await a.get(x.hash, x.data.length, lx.load);

    // b never stored x, finds its file and serves it without loading.
    expect(b.has(x.hash)).toBe(false);
    expect((await b.get(x.hash, x.data.length, mustNotLoad)).equals(x.data)).toBe(true);
    expect(b.has(x.hash)).toBe(true);

    // b's smaller bound evicts x, removing the file a still has in its index.
    await b.get(y.hash, y.data.length, loader(y).load);
    await b.get(z.hash, z.data.length, loader(z).load);
    await b.close();
    expect(existsSync(chunkPath(x.hash))).toBe(false);
    expect(a.has(x.hash)).toBe(true);

    expect((await a.get(x.hash, x.data.length, lx.load)).equals(x.data)).toBe(true);
    expect(lx.calls()).toBe(2);
    expect(existsSync(chunkPath(x.hash))).toBe(true);
  });

  it('passes a failed load to every waiting caller and caches nothing, so the next get loads again', async () => {
    const cache = await openDisk();
    const c = chunk();
    const failure = new Error('store unreachable');
    let failedCalls = 0;
    const failing = async (): Promise<Buffer> => {
      failedCalls++;
      await new Promise((r) => setImmediate(r));
      throw failure;
    };
    const results = await Promise.allSettled(Array.from({ length: 4 }, () => cache.get(c.hash, c.data.length, failing)));
    expect(failedCalls).toBe(1);
    for (const r of results) expect(r).toEqual({ status: 'rejected', reason: failure });
    expect(cache.has(c.hash)).toBe(false);
    expect(existsSync(chunkPath(c.hash))).toBe(false);

    const l = loader(c);
    expect((await cache.get(c.hash, c.data.length, l.load)).equals(c.data)).toBe(true);
    expect(l.calls()).toBe(1);
  });

  it('rejects loaded bytes that do not match the hash or the length with IntegrityError, caching nothing', async () => {
    const cache = await openDisk();
    const c = chunk();
    const other = chunk();
    await expect(cache.get(c.hash, c.data.length, async () => Buffer.from(other.data))).rejects.toBeInstanceOf(IntegrityError);
    await expect(cache.get(c.hash, c.data.length, async () => c.data.subarray(1))).rejects.toBeInstanceOf(IntegrityError);
    await expect(cache.get(c.hash, c.data.length + 1, async () => Buffer.from(c.data))).rejects.toBeInstanceOf(IntegrityError);
    expect(cache.has(c.hash)).toBe(false);
    expect(cache.has(other.hash)).toBe(false);
    expect((await filesOnDisk()).size).toBe(0);

    const l = loader(c);
    expect((await cache.get(c.hash, c.data.length, l.load)).equals(c.data)).toBe(true);
    expect(l.calls()).toBe(1);
  });

  it('answers a get with the wrong length for a cached chunk with IntegrityError, keeping the good file', async () => {
    const cache = await openDisk();
    const c = chunk();
    await cache.get(c.hash, c.data.length, loader(c).load);
    await expect(cache.get(c.hash, c.data.length - 1, mustNotLoad)).rejects.toBeInstanceOf(IntegrityError);
    expect(cache.stats().corruptions).toBe(0);
    expect((await readFile(chunkPath(c.hash))).equals(c.data)).toBe(true);
    expect((await cache.get(c.hash, c.data.length, mustNotLoad)).equals(c.data)).toBe(true);
  });

  it('removes temporary files left by a crash at open, but not ones young enough to be writes in progress', async () => {
    const c = chunk();
    await mkdir(join(dir, 'chunks', c.hash.slice(0, 2)), { recursive: true });
    const stale = `${chunkPath(c.hash)}.tmp-0123456789ab`;
    const young = `${chunkPath(c.hash)}.tmp-ba9876543210`;
    await writeFile(stale, c.data.subarray(0, 100));
    await writeFile(young, c.data.subarray(0, 100));
    await utimes(stale, new Date('2001-01-01'), new Date('2001-01-01'));
    const cache = await openDisk();
    expect(existsSync(stale)).toBe(false);
    expect(existsSync(young)).toBe(true);
    expect(cache.stats().entries).toBe(0);
  });

  it('rejects a malformed hash or length before touching the disk or loading', async () => {
    const cache = await openDisk();
    for (const hash of ['../../etc/passwd', 'A'.repeat(64), `${'a'.repeat(63)}/`, '']) {
      await expect(cache.get(hash, 1, mustNotLoad)).rejects.toBeInstanceOf(InvalidArgumentError);
    }
    await expect(cache.get('a'.repeat(64), -1, mustNotLoad)).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(cache.get('a'.repeat(64), 1.5, mustNotLoad)).rejects.toBeInstanceOf(InvalidArgumentError);
  });

  it('returns but does not store a chunk larger than the whole bound', async () => {
    const cache = await openDisk(CHUNK);
    const big = chunk(CHUNK + 1);
    const l = loader(big);
    expect((await cache.get(big.hash, big.data.length, l.load)).equals(big.data)).toBe(true);
    expect((await cache.get(big.hash, big.data.length, l.load)).equals(big.data)).toBe(true);
    expect(l.calls()).toBe(2);
    expect((await filesOnDisk()).size).toBe(0);
  });

  it('on ENOSPC evicts and retries once; if that fails too, serves the chunk uncached and logs once', async () => {
    const { logger, warnings } = capturingLogger();
    const cache = await openDisk(8 * CHUNK, { logger });
    const [a, b, c, d, e] = [chunk(), chunk(), chunk(), chunk(), chunk()];
    await cache.get(a.hash, a.data.length, loader(a).load);
    await cache.get(b.hash, b.data.length, loader(b).load);

    writeFaults.codes = ['ENOSPC'];
    expect((await cache.get(c.hash, c.data.length, loader(c).load)).equals(c.data)).toBe(true);
    expect(cache.has(a.hash)).toBe(false); // the least recently used made room
    expect(cache.has(b.hash)).toBe(true);
    expect(cache.has(c.hash)).toBe(true);
    expect(existsSync(chunkPath(c.hash))).toBe(true);
    expect(cache.stats().evictions).toBe(1);
    expect(warnings).toHaveLength(0);

    writeFaults.codes = ['EDQUOT', 'EDQUOT', 'ENOSPC', 'ENOSPC'];
    expect((await cache.get(d.hash, d.data.length, loader(d).load)).equals(d.data)).toBe(true);
    expect((await cache.get(e.hash, e.data.length, loader(e).load)).equals(e.data)).toBe(true);
    expect(cache.has(d.hash)).toBe(false);
    expect(cache.has(e.hash)).toBe(false);
    await cache.close();
    const files = await filesOnDisk();
    expect(files.has(d.hash) || files.has(e.hash)).toBe(false);
    expect([...files.keys()].some((f) => f.includes('.tmp-'))).toBe(false);
    expect(warnings.filter((w) => w.includes('EDQUOT'))).toHaveLength(1);
    expect(warnings.filter((w) => w.includes('ENOSPC'))).toHaveLength(1);
  });

  it('serves chunks uncached when writes fail for other reasons, without evicting', async () => {
    const cache = await openDisk();
    const [a, b] = [chunk(), chunk()];
    await cache.get(a.hash, a.data.length, loader(a).load);
    writeFaults.codes = ['EACCES'];
    expect((await cache.get(b.hash, b.data.length, loader(b).load)).equals(b.data)).toBe(true);
    expect(cache.has(b.hash)).toBe(false);
    expect(cache.has(a.hash)).toBe(true);
    expect(cache.stats().evictions).toBe(0);
  });

  it('refuses gets after close', async () => {
    const cache = await openDisk();
    await cache.close();
    const c = chunk();
    await expect(cache.get(c.hash, c.data.length, loader(c).load)).rejects.toBeInstanceOf(FailedPreconditionError);
  });
});

describe('MemoryChunkCache over DiskChunkCache', () => {
  it('serves hot chunks without reaching the disk layer, within its byte bound', async () => {
    const disk = await openDisk(16 * CHUNK);
    const inner = new CountingCache(disk);
    const memory = new MemoryChunkCache(inner, { maxBytes: 2 * CHUNK });
    const chunks = Array.from({ length: 6 }, () => chunk());
    for (const c of chunks) {
      await memory.get(c.hash, c.data.length, loader(c).load);
      expect(memory.stats().bytes).toBeLessThanOrEqual(2 * CHUNK);
    }
    expect(inner.gets).toBe(6);
    expect(memory.stats()).toMatchObject({ entries: 2, bytes: 2 * CHUNK, evictions: 4, misses: 6, hits: 0 });

    // In memory: the last two; the rest only on disk (held, but not hot).
    expect(chunks.map((c) => memory.isHot(c.hash))).toEqual([false, false, false, false, true, true]);
    expect(chunks.every((c) => memory.has(c.hash))).toBe(true);
    expect(chunks.some((c) => disk.isHot(c.hash))).toBe(false);

    const diskHits = disk.stats().hits;
    for (const c of chunks.slice(-2)) expect((await memory.get(c.hash, c.data.length, mustNotLoad)).equals(c.data)).toBe(true);
    expect(inner.gets).toBe(6);
    expect(disk.stats().hits).toBe(diskHits);
    expect(memory.stats().hits).toBe(2);

    // An evicted chunk comes back from disk, not from load.
    const old = chunks[0]!;
    expect((await memory.get(old.hash, old.data.length, mustNotLoad)).equals(old.data)).toBe(true);
    expect(inner.gets).toBe(7);
    expect(disk.stats().hits).toBe(diskHits + 1);
    expect(memory.has(old.hash)).toBe(true);
  });

  it('merges concurrent gets into one get below and one load', async () => {
    const inner = new CountingCache(await openDisk());
    const memory = new MemoryChunkCache(inner, { maxBytes: 4 * CHUNK });
    const c = chunk();
    const l = loader(c);
    const results = await Promise.all(Array.from({ length: 16 }, () => memory.get(c.hash, c.data.length, l.load)));
    for (const r of results) expect(r.equals(c.data)).toBe(true);
    expect(inner.gets).toBe(1);
    expect(l.calls()).toBe(1);
  });

  it('keeps nothing from a failed or mismatching load, and passes the error on', async () => {
    const inner = new CountingCache(await openDisk());
    const memory = new MemoryChunkCache(inner, { maxBytes: 4 * CHUNK });
    const c = chunk();
    const failure = new Error('boom');
    await expect(memory.get(c.hash, c.data.length, () => Promise.reject(failure))).rejects.toBe(failure);
    await expect(memory.get(c.hash, c.data.length, async () => randomBytes(CHUNK))).rejects.toBeInstanceOf(IntegrityError);
    expect(memory.has(c.hash)).toBe(false);
    expect(memory.stats().entries).toBe(0);
    const l = loader(c);
    expect((await memory.get(c.hash, c.data.length, l.load)).equals(c.data)).toBe(true);
    expect(l.calls()).toBe(1);
  });

  it('closes the layer below with it', async () => {
    const disk = await openDisk();
    const memory = new MemoryChunkCache(disk, { maxBytes: CHUNK });
    await memory.close();
    const c = chunk();
    await expect(disk.get(c.hash, c.data.length, loader(c).load)).rejects.toBeInstanceOf(FailedPreconditionError);
  });
});
