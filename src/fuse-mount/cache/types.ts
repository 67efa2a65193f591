/**
 * ChunkCache: the host's store of verified chunks, under the FUSE mount. A
 * chunk is named by the SHA-256 of its bytes, so one cached copy serves every
 * file, version and volume that contains those bytes. The implementation is
 * DiskChunkCache (files shared by every mount on the host, kept across
 * restarts; the kernel's page cache over them is the memory tier).
 *
 * Reads are by range: a read copies the bytes a FUSE read asks for into the
 * buffer FUSE handed it, and a miss makes the chunk's file first. Misses are
 * loaded by the caller's `ChunkLoad`, which says where the bytes are (a range
 * of a blob, perhaps holding neighbours that are stored too) and hands that
 * plan to the cache's `fetch`, which fetches, verifies and writes on the
 * cache's fetch threads (fetch-pool.ts).
 *
 * Invariants (test/chunk-cache.test.ts checks them):
 * - read never returns bytes of a chunk that did not hash to its key when it
 *   was loaded: bytes are checked against their SHA-256 before they are
 *   stored, and bytes read back from disk are checked against the CRC32C of
 *   each block they touch (block-file.ts). A damaged block is logged, its file
 *   dropped and the chunk loaded again; the read gets the good bytes.
 * - Concurrent reads of one key while it is missing call `load` once and all
 *   wait for it. A failed load caches nothing, so the next read loads again.
 *   A load whose bytes do not match is an IntegrityError for every waiter.
 * - The cache never fails a read because of its own storage: a full, vanished
 *   or damaged cache directory turns hits into misses and stores into chunks
 *   kept in memory (within `memoryBytes`). Only `load`'s own errors and
 *   IntegrityError reach the caller.
 * - Stored bytes stay within the cache's byte bound, least recently used
 *   chunks leaving first. A chunk larger than the bound is served but not
 *   kept.
 */

/** Where the bytes of a miss come from (fetch-job.ts runs it). */
export type { FetchSource } from '../../client/fetch-job.js';
import type { FetchSource } from '../../client/fetch-job.js';

/** A range of one blob holding one or more chunks, each at its offset in the range. */
export interface FetchPlan {
  source: FetchSource;
  /** The range of the blob (for a URL or file source). */
  offset: number;
  length: number;
  chunks: { hash: string; length: number; at: number }[];
}

/** What became of each chunk of a plan: kept (on disk or in memory), or its bytes did not match. */
export type FetchOutcome = Map<string, 'kept' | 'mismatch'>;

/**
 * Loads a missing chunk: hands one or more plans to `fetch` (retrying
 * another way when one fails, if it can) and resolves once it is done. The
 * cache then reads the chunk; if it still does not hold it, the read is an
 * IntegrityError. Resolving without fetching is allowed when another load
 * (a range in flight that holds this chunk) has stored it meanwhile.
 */
export type ChunkLoad = (fetch: (plan: FetchPlan) => Promise<FetchOutcome>) => Promise<void>;

/** Counters of the cache since it was opened. */
export interface ChunkCacheStats {
  /** Bytes of chunks it holds (as far as it knows: see DiskChunkCache), on disk and in memory. */
  bytes: number;
  /** Chunks it holds. */
  entries: number;
  /** Reads and fills answered from what it held. */
  hits: number;
  /** Reads and fills that were not: the chunk was loaded, or the read failed. */
  misses: number;
  /** Calls to `load`; merged misses count once. */
  loads: number;
  /** Chunks dropped to stay within the byte bound. */
  evictions: number;
  /** Stored chunks whose bytes no longer matched their CRC (or whose file was not whole); each was dropped and loaded again. */
  corruptions: number;
  /** Chunks held in memory because their file could not be written. */
  inMemory: number;
}

export interface ChunkCache {
  /**
   * Copies bytes [at, at + into.length) of the chunk whose SHA-256
   * (lowercase hex) is `hash` and whose size is `length` into `into`, and
   * returns how many it copied (fewer at the end of the chunk). On a miss
   * calls `load` once, however many callers ask at the same time. A `hash`
   * that is not 64 lowercase hex digits, a `length` or `at` that is not a
   * non-negative safe integer, is an InvalidArgumentError.
   */
  read(hash: string, length: number, at: number, into: Buffer, load: ChunkLoad): Promise<number>;

  /** Makes sure the chunk is held, calling `load` on a miss; resolves to whether it loaded it. */
  fill(hash: string, length: number, load: ChunkLoad): Promise<boolean>;

  /**
   * Whether this cache believes it holds the chunk now, without reading it or
   * changing its recency. A later read may still miss (another process may
   * have removed the file); it never returns wrong bytes because of it.
   */
  has(hash: string): boolean;

  stats(): ChunkCacheStats;

  /**
   * Waits for reads and writes in progress, then releases the cache and its
   * fetch threads. Stored chunks stay on disk. Reads after close are a
   * FailedPreconditionError.
   */
  close(): Promise<void>;
}
