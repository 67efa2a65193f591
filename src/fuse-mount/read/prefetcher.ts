/**
 * The mount's prefetcher: chunks fetched into the chunk cache ahead of a
 * sequential reader, so that a cold sequential read does not wait for each
 * chunk in turn behind the kernel's 128 KiB requests.
 *
 * Design (after Mountpoint for S3's prefetch.rs, without its part queue).
 * - Cursor. Each open file handle has a ReadWindow: `next`, the furthest end
 *   of the reads of the current stream, and `size`, how many bytes beyond
 *   `next` should already be on their way. A read is sequential when it
 *   starts within SEQUENTIAL_SLACK of `next`, either side: the kernel's
 *   readahead sends several requests at once and they may arrive out of
 *   order (Mountpoint tolerates 1 MiB back and waits up to 16 MiB forward).
 *   A fresh handle expects its first read at 0. Each sequential read doubles
 *   the window, from `initialWindow` (1 MiB) up to `maxWindow` (32 MiB by
 *   default); a read anywhere else (a jump) sets it to 0, so a random reader
 *   only ever fetches the extents its reads touch, through the read path.
 * - Fetching. The extents that start in [next, next + size), beyond the one
 *   the last read ended in, are fetched in order with `fetch`, which is the
 *   read path's own cache get: the bytes land in the chunk cache and nowhere
 *   else (no buffer of our own), and a read of a chunk being prefetched joins
 *   that load (the cache merges concurrent gets of a key). An extent the
 *   cache holds in memory (`isHot`) is not fetched again; one it holds only
 *   on disk is, from the disk: a warm sequential read then has its disk reads
 *   and hash checks done ahead of it instead of one chunk at a time.
 * - Backpressure. A handle has at most `perFile` fetches issued, and the
 *   whole mount at most `total` running (p-limit): a handle issues its next
 *   extent only when one of its own settles, so the queue is bounded too.
 *   The window bounds how far ahead of the reader the fetches reach.
 * - Reset. A jump bumps the handle's generation: fetches already running
 *   finish (their load may be shared with a reader; the chunk is cached
 *   either way), queued ones of the old generation do nothing when their
 *   turn comes.
 * - Failures are never the reader's: a failed prefetch is counted and
 *   logged at debug, and the read that needs the chunk fetches it itself
 *   and reports whatever goes wrong then.
 *
 * Chunks prefetched beyond the memory cache's bound go to the disk layer
 * below it, so a large window over a small memory cache costs a disk read at
 * read time, not a second transfer.
 */
import pLimit, { type LimitFunction } from 'p-limit';
import { messageOf } from '../../common/errors.js';
import { createLogger, type Logger } from '../../common/logger.js';
import { extentStarts, lastAtOrBefore, type ExtentList } from './extents.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Default bound on the read-ahead window of one handle (`stowage mount --prefetch-window`). */
export const DEFAULT_PREFETCH_WINDOW = 32 * MiB;
const DEFAULT_INITIAL_WINDOW = 1 * MiB;
const DEFAULT_PER_FILE = 4;
/** 8 fetches of 8 MiB chunks: 64 MiB in flight at most, enough to keep a loopback or LAN store busy. */
const DEFAULT_TOTAL = 8;
/** How far from the expected position a read may start and still continue a sequential stream. */
const SEQUENTIAL_SLACK = 1 * MiB;

export interface PrefetchOptions {
  /** Most bytes kept on their way ahead of a sequential reader; 0 turns prefetching off. */
  maxWindow?: number;
  /** The window a sequential stream starts with (at most maxWindow). */
  initialWindow?: number;
  /** Prefetches issued at once for one open file. */
  perFile?: number;
  /** Prefetches running at once for the whole mount. */
  total?: number;
}

/**
 * The sequential-read detector of one handle. observe() takes each read in
 * the order it arrives and answers how many bytes beyond `next` to have on
 * their way (0: the reads are not sequential, fetch nothing ahead).
 */
export class ReadWindow {
  /** Where the next sequential read is expected: the furthest end of this stream's reads. */
  next = 0;
  /** Bytes to keep on their way beyond `next`; 0 while the reads are not sequential. */
  size = 0;
  private readonly initial: number;

  constructor(
    initial: number,
    private readonly max: number,
    private readonly slack = SEQUENTIAL_SLACK,
  ) {
    this.initial = Math.min(initial, max);
  }

  observe(position: number, length: number): number {
    const end = position + length;
    if (Math.abs(position - this.next) <= this.slack) {
      this.size = this.size === 0 ? this.initial : Math.min(this.max, this.size * 2);
      this.next = Math.max(this.next, end);
    } else {
      this.size = 0;
      this.next = end;
    }
    return this.size;
  }
}

/** Counters since the prefetcher was made (for tests and logs). */
export interface PrefetchStats {
  /** Fetches started (each may have joined a load already running). */
  started: number;
  /** Fetches that failed; their readers fetched (or failed) on their own. */
  failed: number;
  /** Fetches running now, and the most that ever ran at once. */
  running: number;
  maxRunning: number;
}

/** The mount-wide side: the global bound, and the stream of each open handle. */
export class Prefetcher {
  readonly maxWindow: number;
  readonly initialWindow: number;
  readonly perFile: number;
  private readonly limit: LimitFunction;
  private readonly pending = new Set<Promise<void>>();
  private readonly counts = { started: 0, failed: 0, maxRunning: 0 };
  private running = 0;
  private closed = false;

  constructor(
    /** Whether the chunk cache holds a chunk in memory now (ChunkCache.isHot). */
    private readonly has: (hash: string) => boolean,
    opts: PrefetchOptions = {},
    private readonly log: Logger = createLogger('prefetch'),
  ) {
    this.maxWindow = opts.maxWindow ?? DEFAULT_PREFETCH_WINDOW;
    this.initialWindow = opts.initialWindow ?? DEFAULT_INITIAL_WINDOW;
    this.perFile = opts.perFile ?? DEFAULT_PER_FILE;
    this.limit = pLimit(opts.total ?? DEFAULT_TOTAL);
  }

  /**
   * The prefetch stream of a newly opened handle of `file`. `fetch(i)` gets
   * extent i through the chunk cache (its result is dropped).
   */
  open(file: ExtentList, fetch: (index: number) => Promise<unknown>): FilePrefetch {
    return new FilePrefetch(this, file, fetch, new ReadWindow(this.initialWindow, this.maxWindow));
  }

  stats(): PrefetchStats {
    return { ...this.counts, running: this.running };
  }

  /** Stops starting fetches and waits for those running (queued ones then end at once). */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled([...this.pending]);
  }

  /** For FilePrefetch: whether the mount is closing. */
  get isClosed(): boolean {
    return this.closed;
  }

  /** For FilePrefetch: whether the cache holds the chunk in memory (nothing to fetch). */
  cached(hash: string): boolean {
    return this.has(hash);
  }

  /** For FilePrefetch: runs `fetch` within the global bound unless `stale()` says it is no longer wanted; never rejects. */
  schedule(stale: () => boolean, fetch: () => Promise<unknown>): Promise<void> {
    const task = this.limit(async () => {
      if (this.closed || stale()) return;
      this.counts.started++;
      this.running++;
      this.counts.maxRunning = Math.max(this.counts.maxRunning, this.running);
      try {
        await fetch();
      } catch (err) {
        this.counts.failed++;
        this.log.debug({ err: messageOf(err) }, 'prefetch failed; the read that needs the chunk fetches it itself');
      } finally {
        this.running--;
      }
    });
    this.pending.add(task);
    void task.finally(() => this.pending.delete(task));
    return task;
  }
}

/** The prefetch stream of one open file handle. */
export class FilePrefetch {
  /** Bumped by a jump: queued fetches of an older generation do nothing. */
  private generation = 0;
  /** The first extent of the current stream not yet issued. */
  private nextIndex = 0;
  /** Extents starting before this byte offset are wanted. */
  private until = 0;
  private issued = 0;
  private released = false;

  constructor(
    private readonly owner: Prefetcher,
    private readonly file: ExtentList,
    private readonly fetch: (index: number) => Promise<unknown>,
    readonly window: ReadWindow,
  ) {}

  /** Takes a read of [position, position+length) (within the file) and issues what its window wants. */
  read(position: number, length: number): void {
    if (this.released || length <= 0) return;
    const ahead = this.window.observe(position, length);
    if (ahead === 0) {
      this.generation++;
      this.nextIndex = 0;
      this.until = 0;
      return;
    }
    const from = this.window.next;
    const starts = extentStarts(this.file);
    if (from >= this.file.size || starts.length === 0) return;
    // The extent `from` falls inside was touched by the read that ended there: the read path has it.
    const at = lastAtOrBefore(starts, from);
    const first = starts[at] === from ? at : at + 1;
    this.nextIndex = Math.max(this.nextIndex, first);
    this.until = Math.min(this.file.size, from + ahead);
    this.pump();
  }

  /** The handle was closed: nothing more is issued for it. */
  release(): void {
    this.released = true;
    this.generation++;
  }

  private pump(): void {
    const { extents } = this.file;
    const starts = extentStarts(this.file);
    while (
      !this.released &&
      !this.owner.isClosed &&
      this.issued < this.owner.perFile &&
      this.nextIndex < extents.length &&
      starts[this.nextIndex]! < this.until
    ) {
      const index = this.nextIndex++;
      const { hash, length } = extents[index]!;
      if (length === 0 || this.owner.cached(hash)) continue;
      const generation = this.generation;
      this.issued++;
      void this.owner
        .schedule(
          () => generation !== this.generation || this.owner.cached(hash),
          () => this.fetch(index),
        )
        .finally(() => {
          this.issued--;
          this.pump();
        });
    }
  }
}
