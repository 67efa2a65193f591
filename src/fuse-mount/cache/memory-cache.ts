/**
 * MemoryChunkCache: hot chunks in memory, over any other ChunkCache (memory
 * over disk, as Mountpoint's multilevel_cache.rs). A miss here is a get on the
 * layer below, which loads, verifies and stores; the bytes it returns are kept
 * here within `maxBytes`, least recently used leaving first. A hit here hashes
 * nothing: the bytes were verified when they entered, and memory is not a
 * medium this cache guards against. It owns the layer below: close closes it.
 */
import { LRUCache } from 'lru-cache';
import { IntegrityError } from '../../common/errors.js';
import { checkChunkKey, checkMaxBytes, chunkSize } from './chunk-checks.js';
import { Singleflight } from './singleflight.js';
import type { ChunkCache, ChunkCacheStats } from './types.js';

/** A Buffer viewing this much more memory than its own bytes is copied before it is kept. */
const SLACK_FACTOR = 2;
const SLACK_MIN_BYTES = 64 * 1024;

export class MemoryChunkCache implements ChunkCache {
  private readonly chunks: LRUCache<string, Buffer>;
  private readonly flights = new Singleflight<Buffer>();
  private readonly counts = { hits: 0, misses: 0, loads: 0, evictions: 0, corruptions: 0 };
  private closed = false;

  constructor(
    private readonly below: ChunkCache,
    opts: { maxBytes: number },
  ) {
    checkMaxBytes(opts.maxBytes);
    this.chunks = new LRUCache<string, Buffer>({
      maxSize: opts.maxBytes,
      sizeCalculation: (b) => chunkSize(b.length),
      dispose: (_b, _hash, reason) => {
        if (reason === 'evict') this.counts.evictions++;
      },
    });
  }

  async get(hash: string, length: number, load: () => Promise<Buffer>): Promise<Buffer> {
    checkChunkKey(hash, length, this.closed);
    let data = this.chunks.get(hash);
    if (data) {
      this.counts.hits++;
    } else {
      try {
        data = await this.flights.do(hash, async () => {
          this.counts.loads++;
          const got = await this.below.get(hash, length, load);
          this.chunks.set(hash, compact(got));
          return got;
        });
      } finally {
        this.counts.misses++;
      }
    }
    // A caller that joined another's get (or hit an entry) with a different length asked for other bytes.
    if (data.length !== length) throw new IntegrityError(`chunk ${hash.slice(0, 16)}… is ${data.length} bytes, not ${length}`);
    return data;
  }

  has(hash: string): boolean {
    return this.chunks.has(hash) || this.below.has(hash);
  }

  isHot(hash: string): boolean {
    return this.chunks.has(hash);
  }

  stats(): ChunkCacheStats {
    return { bytes: this.chunks.calculatedSize, entries: this.chunks.size, ...this.counts };
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.flights.settled();
    this.chunks.clear();
    await this.below.close();
  }
}

/**
 * A slice of a larger buffer (a whole HTTP body, say) would keep all of it
 * alive and make the byte bound a lie; such a slice is copied. Small buffers
 * from Node's shared pool are left alone.
 */
function compact(b: Buffer): Buffer {
  const slack = b.buffer.byteLength - b.length;
  return slack > SLACK_MIN_BYTES && b.buffer.byteLength > SLACK_FACTOR * b.length ? Buffer.from(b) : b;
}
