/**
 * PackReads: cold reads of small files that sit side by side in a pack blob.
 *
 * Small files are packed into shared blobs at upload (volumes: files under
 * 1 MiB), so a directory of 10,000 files of 4 KiB is a few blobs. Fetched one
 * extent at a time, a cold read of that directory is 10,000 GETs; this module
 * turns a run of misses in one pack into a few ranged GETs, the way the
 * prefetcher does for a sequential read of one big file, and still fetches
 * only the extent asked for when a pack is read at random.
 *
 * Design.
 * - The index: the mount never holds a whole version, so the files it knows
 *   about come in as it loads them, a leaf page of a directory at a time
 *   (every page a listing loads, and the page of each file opened: add()).
 *   Pages are kept in an LRU bounded by their number of extents. A blob's
 *   pack is the extents of the indexed pages that lie in it, sorted by offset,
 *   when there are two or more distinct ones (a blob holding one extent, a
 *   chunk of a big file, is read as before). The upload packs a directory's
 *   small files in name order, so the pages of a directory being walked hold
 *   the pack's neighbours of the file being read.
 * - Each pack keeps up to CURSORS read cursors (the end of the last range it
 *   fetched and the window that range used). A miss at or just after a
 *   cursor's end (within SEQUENTIAL_GAP) is the next step of a sequential
 *   walk through the pack: its window doubles, from `initialWindow` up to
 *   `maxWindow`. Any other miss
 *   starts a cursor (replacing the least recently used) whose first range is
 *   the extent alone: a single file read at random costs one small GET.
 * - A range runs from the missed extent's start forward over whole extents
 *   while they fit in the window and are not in the cache already. While it
 *   is in flight, misses on extents it covers wait for it rather than start
 *   their own GET (eight readers walking one directory share each range).
 * - A range is one plan for the chunk cache's fetch threads (through
 *   ExtentReader.fetchRange): the thread fetches it, verifies every extent in
 *   it against its hash and writes each one's cache file. A bad neighbour is
 *   dropped and fetched on its own if it is ever read. A range counts as in
 *   flight until every extent of it is stored, so a miss that joins it finds
 *   its extent in the cache (or, if that one was bad, fetches it alone): no
 *   extent is fetched twice because a reader came between the transfer and
 *   the write.
 */
import { LRUCache } from 'lru-cache';
import type { FileEntry } from '../../gen/stowage/v1/volume.js';
import type { ChunkLoad } from '../cache/types.js';
import type { ExtentReader, PlannedChunk } from './extent-reader.js';

const KiB = 1024;
const MiB = 1024 * KiB;
export const DEFAULT_PACK_INITIAL_WINDOW = 128 * KiB;
export const DEFAULT_PACK_MAX_WINDOW = 4 * MiB;
/** How far past a cursor's end a miss may start and still continue it (files skipped, readers racing). */
const SEQUENTIAL_GAP = 64 * KiB;
/** Read cursors remembered per pack. */
const CURSORS = 4;
/** Packs whose cursors are remembered. */
const MAX_PACK_STREAMS = 4096;
/** Extents indexed at most (about 200 bytes each, shared with the tree's pages while they are cached). */
const DEFAULT_MAX_INDEXED = 65_536;

interface PackedExtent {
  offset: number;
  length: number;
  hash: string;
}

interface Cursor {
  /** Where the last range fetched for this cursor ended. */
  end: number;
  /** The window of that range. */
  window: number;
  usedAt: number;
}

interface Range {
  start: number;
  end: number;
  /** Settles once every extent of the range is stored (or failed). */
  done: Promise<unknown>;
}

export interface PackReadOptions {
  initialWindow?: number;
  /** 0 turns pack read-ahead off: every extent is fetched on its own. */
  maxWindow?: number;
  /** Extents of indexed pages kept (default DEFAULT_MAX_INDEXED). */
  maxIndexed?: number;
}

export interface PackReadStats {
  /** Ranged GETs of pack blobs. */
  ranges: number;
  /** Bytes those GETs fetched. */
  bytes: number;
  /** Misses answered from a range already in flight. */
  joined: number;
  /** Neighbouring extents fetched with the extent a miss asked for. */
  filled: number;
}

export class PackReads {
  /** Indexed leaf pages: blob → the page's extents in it, sorted by offset. */
  private readonly pages: LRUCache<string, Map<string, PackedExtent[]>>;
  /** Blob → the indexed pages with extents in it. */
  private readonly pagesOf = new Map<string, Set<string>>();
  private readonly cursors = new LRUCache<string, Cursor[]>({ max: MAX_PACK_STREAMS });
  private readonly inflight = new Map<string, Range[]>();
  private readonly counts: PackReadStats = { ranges: 0, bytes: 0, joined: 0, filled: 0 };
  private clock = 0;
  readonly initialWindow: number;
  readonly maxWindow: number;

  constructor(
    private readonly reader: ExtentReader,
    opts: PackReadOptions = {},
  ) {
    this.maxWindow = opts.maxWindow ?? DEFAULT_PACK_MAX_WINDOW;
    this.initialWindow = Math.min(opts.initialWindow ?? DEFAULT_PACK_INITIAL_WINDOW, this.maxWindow);
    this.pages = new LRUCache<string, Map<string, PackedExtent[]>>({
      maxSize: opts.maxIndexed ?? DEFAULT_MAX_INDEXED,
      sizeCalculation: (byBlob) => {
        let n = 1;
        for (const run of byBlob.values()) n += run.length;
        return n;
      },
      dispose: (byBlob, key) => {
        for (const blob of byBlob.keys()) {
          const set = this.pagesOf.get(blob);
          set?.delete(key);
          if (set?.size === 0) this.pagesOf.delete(blob);
        }
      },
    });
  }

  /**
   * Indexes the files of one leaf page of a directory (`key`: the page's
   * hash; a page indexed already is only marked recently used). Blobs never
   * change, so what is indexed stays right across reloads.
   */
  add(key: string, files: Iterable<{ extents: readonly (PackedExtent & { blob: string })[] }>): void {
    if (this.maxWindow === 0 || this.pages.get(key)) return;
    const byBlob = new Map<string, PackedExtent[]>();
    for (const f of files) {
      for (const e of f.extents) {
        // A chunk of a big file (the whole blob) is never part of a pack.
        if (e.hash === e.blob) continue;
        let run = byBlob.get(e.blob);
        if (!run) byBlob.set(e.blob, (run = []));
        run.push(e);
      }
    }
    if (byBlob.size === 0) return;
    for (const run of byBlob.values()) run.sort((a, b) => a.offset - b.offset);
    this.pages.set(key, byBlob);
    for (const blob of byBlob.keys()) {
      let set = this.pagesOf.get(blob);
      if (!set) this.pagesOf.set(blob, (set = new Set()));
      set.add(key);
    }
  }

  /** The indexed extents of `blob`, sorted by offset, when there are two or more distinct ones. */
  private packOf(blob: string): PackedExtent[] | undefined {
    const keys = this.pagesOf.get(blob);
    if (!keys) return undefined;
    const runs: PackedExtent[][] = [];
    for (const k of keys) {
      const run = this.pages.peek(k)?.get(blob);
      if (run) runs.push(run);
    }
    const all = runs.length === 1 ? runs[0]! : runs.flat().sort((a, b) => a.offset - b.offset);
    // The same bytes in several files (deduplicated at upload) are one extent here.
    const pack: PackedExtent[] = [];
    for (const x of all) if (pack.length === 0 || pack[pack.length - 1]!.offset !== x.offset) pack.push(x);
    return pack.length > 1 ? pack : undefined;
  }

  stats(): PackReadStats {
    return { ...this.counts };
  }

  /** The loader of extent `index` of `entry` for the cache: a run of its pack when there is one, else the extent alone. */
  loader(entry: FileEntry, index: number): ChunkLoad {
    // Made for every read, called only on a miss: the pack is looked up then, not on every hit.
    return async (fetch) => {
      const e = entry.extents[index]!;
      const pack = this.maxWindow > 0 ? this.packOf(e.blob) : undefined;
      const alone: PlannedChunk[] = [{ hash: e.hash, length: e.length, at: 0 }];
      if (!pack) {
        await this.reader.fetchRange(entry, index, e.offset, e.length, alone, fetch);
        return;
      }
      const end = e.offset + e.length;
      const covering = this.inflight.get(e.blob)?.find((r) => r.start <= e.offset && end <= r.end);
      if (covering) {
        this.counts.joined++;
        await covering.done.catch(() => undefined);
        // Stored by that range; a bad copy there is fetched on its own.
        if (!this.reader.cache.has(e.hash)) await this.reader.fetchRange(entry, index, e.offset, e.length, alone, fetch);
        return;
      }
      const cursor = this.cursorFor(e.blob, e.offset);
      const { to, fill } = this.extendRange(pack, e.offset, end, cursor.window);
      // The cursor moves to where this range ends, whether it arrives or not.
      cursor.end = to;
      const chunks = [...alone];
      const seen = new Set([e.hash]);
      for (const x of fill) {
        if (seen.has(x.hash)) continue;
        seen.add(x.hash);
        chunks.push({ hash: x.hash, length: x.length, at: x.offset - e.offset });
      }
      const range: Range = { start: e.offset, end: to, done: this.reader.fetchRange(entry, index, e.offset, to - e.offset, chunks, fetch) };
      this.counts.ranges++;
      this.counts.bytes += to - e.offset;
      this.counts.filled += chunks.length - 1;
      this.track(e.blob, range);
      await range.done;
    };
  }

  /** Waits for the ranges in flight. */
  async settled(): Promise<void> {
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight.values()].flat().map((r) => r.done));
  }

  /**
   * The cursor a miss at `offset` continues, its window doubled; or a new
   * cursor with no window (the extent alone), replacing the least recently used.
   */
  private cursorFor(blob: string, offset: number): Cursor {
    let list = this.cursors.get(blob);
    if (!list) this.cursors.set(blob, (list = []));
    const now = ++this.clock;
    const next = list.find((c) => offset >= c.end && offset <= c.end + SEQUENTIAL_GAP);
    if (next) {
      next.window = Math.min(this.maxWindow, Math.max(this.initialWindow, next.window * 2));
      next.usedAt = now;
      return next;
    }
    const fresh: Cursor = { end: offset, window: 0, usedAt: now };
    if (list.length < CURSORS) list.push(fresh);
    else list[list.indexOf(list.reduce((x, y) => (x.usedAt <= y.usedAt ? x : y)))] = fresh;
    return fresh;
  }

  /** The end of a range from the missed extent: whole extents after it while they fit in `window` and are not cached. */
  private extendRange(pack: PackedExtent[], start: number, firstEnd: number, window: number): { to: number; fill: PackedExtent[] } {
    let to = firstEnd;
    const fill: PackedExtent[] = [];
    if (window > 0) {
      for (let i = firstAtOrAfter(pack, firstEnd); i < pack.length; i++) {
        const x = pack[i]!;
        if (x.offset + x.length - start > window || this.reader.cache.has(x.hash)) break;
        fill.push(x);
        to = x.offset + x.length;
      }
    }
    return { to, fill };
  }

  private track(blob: string, range: Range): void {
    let list = this.inflight.get(blob);
    if (!list) this.inflight.set(blob, (list = []));
    list.push(range);
    const done = () => {
      const l = this.inflight.get(blob);
      if (!l) return;
      l.splice(l.indexOf(range), 1);
      if (l.length === 0) this.inflight.delete(blob);
    };
    range.done.then(done, done);
  }
}

/** The index of the first extent starting at or after `offset`. */
function firstAtOrAfter(pack: PackedExtent[], offset: number): number {
  let lo = 0;
  let hi = pack.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (pack[mid]!.offset < offset) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
