/**
 * ChunkCache: the host's store of verified extents, under the FUSE mount. A
 * chunk is named by the SHA-256 of its bytes, so one cached copy serves every
 * file, version and volume that contains those bytes. Implementations:
 * DiskChunkCache (files shared by every mount on the host, kept across
 * restarts) and MemoryChunkCache (hot chunks in memory, wrapping another
 * ChunkCache: memory over disk).
 *
 * Invariants every implementation keeps (test/chunk-cache.test.ts checks them):
 * - get never returns bytes that do not hash to the key: loaded bytes are
 *   checked before they are stored or returned, and bytes read back from a
 *   medium that can be damaged (disk) are checked again on every read. A
 *   mismatch is an IntegrityError and nothing is cached.
 * - Concurrent gets of one key while it is missing call `load` once and all
 *   receive its result (or its error). A failed load caches nothing, so the
 *   next get loads again.
 * - The cache never fails a get because of its own storage: a full, vanished
 *   or damaged cache directory turns hits into misses (load is called) and
 *   stores into no-ops. Only `load`'s own errors and IntegrityError reach the
 *   caller.
 * - Stored bytes stay within the cache's byte bound, least recently used
 *   chunks leaving first. A chunk larger than the bound is returned but not
 *   stored.
 * - A returned Buffer may be shared with other callers and kept by the cache:
 *   treat it as read-only. For the same reason `load` must return a Buffer the
 *   cache may keep (not one a pool will reuse).
 */

/** Counters of one cache layer since it was opened. */
export interface ChunkCacheStats {
  /** Bytes of chunks this layer holds (as far as it knows: see DiskChunkCache). */
  bytes: number;
  /** Chunks this layer holds. */
  entries: number;
  /** Gets answered from this layer's own storage. */
  hits: number;
  /** Gets that were not: the bytes came from `load` (or the layer below), or the get failed. */
  misses: number;
  /** Calls to `load` (for a wrapping layer, calls into the layer below); merged gets count once. */
  loads: number;
  /** Chunks dropped to stay within the byte bound. */
  evictions: number;
  /** Stored chunks whose bytes no longer matched their hash; each was dropped and loaded again. */
  corruptions: number;
}

export interface ChunkCache {
  /**
   * The bytes of the chunk whose SHA-256 (lowercase hex) is `hash` and whose
   * size is `length`. On a miss calls `load` once, however many callers ask at
   * the same time, checks its bytes against `hash` and `length`
   * (IntegrityError on a mismatch, nothing cached), stores them and returns
   * them. `load`'s own rejection reaches every waiting caller unchanged. A
   * `hash` that is not 64 lowercase hex digits, or a `length` that is not a
   * non-negative safe integer, is an InvalidArgumentError.
   */
  get(hash: string, length: number, load: () => Promise<Buffer>): Promise<Buffer>;

  /**
   * Whether this cache believes it holds the chunk now, without reading it or
   * changing its recency. A later get may still miss (another process may have
   * removed the file); it never returns wrong bytes because of it.
   */
  has(hash: string): boolean;

  /**
   * Whether a get of the chunk would be answered from memory now, with no I/O
   * (the prefetcher reads ahead whatever is not: from the disk layer when the
   * chunk is there, from the store when not).
   */
  isHot(hash: string): boolean;

  /** This layer's counters; a wrapping layer does not add in the layer below. */
  stats(): ChunkCacheStats;

  /**
   * Waits for gets and writes in progress, then releases the cache (and the
   * layer it wraps, if any). Stored chunks stay on disk. Gets after close are a
   * FailedPreconditionError.
   */
  close(): Promise<void>;
}
