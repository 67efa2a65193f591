/**
 * MountTreeSource: the pages of a volume's tree as a mount reads them, fetched
 * from the server as lookups and listings reach them (tree/read.ts), never the
 * whole version.
 *
 * - Trust: every page arrives as raw bytes (GetTreeObjects) and is checked
 *   with decodePage, which verifies its SHA-256 against the hash asked for and
 *   every invariant of the format. A page that fails is an IntegrityError for
 *   whoever asked for it (the filesystem names the path it was reading) and
 *   is not cached: the next lookup asks again.
 * - Memory: decoded pages live in an LRU bounded in bytes (an estimate of
 *   their decoded size, DECODED_FACTOR times their encoded bytes); a page is
 *   the same in every version that has it, so the cache is shared by every
 *   version the mount serves, before and after reloads.
 * - Requests: concurrent loads of one page are merged; the misses of one turn
 *   of the event loop (the children of an inner page loaded together, the
 *   lookups of several FUSE callbacks) go out as one GetTreeObjects request
 *   of up to MAX_BATCH hashes. The server fails a whole request at the first
 *   page it cannot serve, so a request of several pages failed for damage is
 *   asked again page by page, one after another: one damaged page fails only
 *   the lookups that need it. Any other failure (the server unreachable)
 *   fails the request's lookups, which FUSE answers with EIO.
 * - Lookups by name (find) are remembered in a second bounded LRU keyed by
 *   the directory's root page and the name, with the leaf page the entry was
 *   found in: a directory's root page names its content, so what is
 *   remembered is right in every version, and repeated stats of one path cost
 *   no page loads even after its pages have left the page cache.
 */
import { LRUCache } from 'lru-cache';
import pLimit from 'p-limit';
import type { Connection } from '../client/connection.js';
import { IntegrityError, isStowageError } from '../common/errors.js';
import { decodePage, type Entry, type LeafPage, type Page } from '../tree/format.js';
import { childFor, type TreeSource } from '../tree/read.js';

/** GetTreeObjects takes at most this many hashes. */
const MAX_BATCH = 1024;
/** Requests in flight at once. */
const CONCURRENCY = 4;
/** A decoded page takes about this many times its encoded bytes in memory (strings, objects). */
export const DECODED_FACTOR = 5;
/** Lookups by name remembered. */
const MAX_LOOKUPS = 16_384;

export const DEFAULT_TREE_CACHE_BYTES = 32 * 1024 * 1024;

export interface TreeSourceStats {
  /** Pages fetched from the server (each counted once however many waited for it). */
  fetched: number;
  /** Their encoded bytes. */
  bytes: number;
  /** GetTreeObjects requests. */
  requests: number;
  /** Pages answered from memory. */
  hits: number;
  /** Pages that failed their check. */
  damaged: number;
}

/** Where an entry is: it, and the leaf page it was found in. */
export interface Located {
  entry: Entry;
  leaf: string;
}

interface Waiter {
  resolve: (p: Page) => void;
  reject: (err: unknown) => void;
}

export class MountTreeSource implements TreeSource {
  private readonly pages: LRUCache<string, Page>;
  private readonly lookups = new LRUCache<string, Located | false>({ max: MAX_LOOKUPS });
  private readonly loading = new Map<string, Promise<Page>>();
  /** Misses waiting for the next request. */
  private queued = new Map<string, Waiter>();
  private flushing = false;
  private readonly limit = pLimit(CONCURRENCY);
  private readonly counts: TreeSourceStats = { fetched: 0, bytes: 0, requests: 0, hits: 0, damaged: 0 };

  constructor(
    private readonly conn: Connection,
    private readonly volume: string,
    /** The bound of the cache of decoded pages (an estimate: DECODED_FACTOR). */
    readonly maxBytes = DEFAULT_TREE_CACHE_BYTES,
  ) {
    this.pages = new LRUCache<string, Page>({ maxSize: maxBytes });
  }

  page(hash: string): Promise<Page> {
    const hit = this.pages.get(hash);
    if (hit) {
      this.counts.hits++;
      return Promise.resolve(hit);
    }
    let p = this.loading.get(hash);
    if (!p) {
      p = new Promise<Page>((resolve, reject) => this.queued.set(hash, { resolve, reject })).finally(() => this.loading.delete(hash));
      this.loading.set(hash, p);
      this.scheduleFlush();
    }
    return p;
  }

  /** The entry `name` of the directory whose root page is `dir`, with its leaf page; undefined when there is none. */
  async find(dir: string, name: string): Promise<Located | undefined> {
    const key = `${dir}/${name}`;
    const known = this.lookups.get(key);
    if (known !== undefined) return known || undefined;
    let hash = dir;
    let page = await this.page(hash);
    while (page.kind === 'inner') {
      hash = page.refs[childFor(page, name)]!.hash;
      page = await this.page(hash);
    }
    const entry = findInLeaf(page, name);
    const found = entry ? { entry, leaf: hash } : undefined;
    this.lookups.set(key, found ?? false);
    return found;
  }

  /**
   * The leaf pages of the directory whose root page is `dir`, in name order.
   * The children of each inner page are asked for together (one request).
   */
  async *leaves(dir: string): AsyncGenerator<{ hash: string; page: LeafPage }> {
    const root = await this.page(dir);
    yield* this.leavesBelow(dir, root);
  }

  stats(): TreeSourceStats {
    return { ...this.counts };
  }

  private async *leavesBelow(hash: string, page: Page): AsyncGenerator<{ hash: string; page: LeafPage }> {
    if (page.kind === 'leaf') {
      yield { hash, page };
      return;
    }
    const children = await Promise.all(page.refs.map((r) => this.page(r.hash)));
    for (let i = 0; i < children.length; i++) yield* this.leavesBelow(page.refs[i]!.hash, children[i]!);
  }

  private scheduleFlush(): void {
    if (this.flushing) return;
    this.flushing = true;
    setImmediate(() => {
      this.flushing = false;
      const all = this.queued;
      this.queued = new Map();
      const hashes = [...all.keys()];
      for (let i = 0; i < hashes.length; i += MAX_BATCH) {
        const batch = new Map(hashes.slice(i, i + MAX_BATCH).map((h) => [h, all.get(h)!]));
        this.limit(() => this.fetch(batch, true)).catch((err: unknown) => {
          for (const w of batch.values()) w.reject(err);
        });
      }
    });
  }

  /**
   * One GetTreeObjects request for the pages in `batch`; settles every waiter
   * in it. A page the server does not send is damage (an IntegrityError, EIO
   * in the mount), never a missing name.
   */
  private async fetch(batch: Map<string, Waiter>, retryAlone: boolean): Promise<void> {
    this.counts.requests++;
    try {
      const call = this.conn.volumes.getTreeObjects({ volume: this.volume, hashes: [...batch.keys()] });
      for await (const o of this.conn.stream(call)) {
        const w = batch.get(o.hash);
        if (!w) continue;
        batch.delete(o.hash);
        this.accept(o.hash, o.data, w);
      }
    } catch (err) {
      if (retryAlone && batch.size > 1 && isStowageError(err, 'INTEGRITY')) {
        // The server stops at the first page it cannot serve and does not say which: ask for each of the rest
        // on its own, one after another, so that only the lookups that need the bad page fail.
        for (const [h, w] of batch) await this.fetch(new Map([[h, w]]), false);
        return;
      }
      for (const w of batch.values()) w.reject(err);
      return;
    }
    for (const [hash, w] of batch) w.reject(new IntegrityError(`tree object ${hash} of volume "${this.volume}" was asked for and not sent by the server`));
  }

  private accept(hash: string, data: Uint8Array, w: Waiter): void {
    let page: Page;
    try {
      page = decodePage(hash, data);
    } catch (err) {
      this.counts.damaged++;
      w.reject(err instanceof IntegrityError ? err : new IntegrityError(`tree object ${hash}: ${(err as Error).message}`));
      return;
    }
    this.counts.fetched++;
    this.counts.bytes += data.length;
    this.pages.set(hash, page, { size: Math.max(1, data.length * DECODED_FACTOR) });
    w.resolve(page);
  }
}

function findInLeaf(page: LeafPage, name: string): Entry | undefined {
  let lo = 0;
  let hi = page.entries.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (page.entries[mid]!.name < name) lo = mid + 1;
    else hi = mid;
  }
  const e = page.entries[lo];
  return e?.name === name ? e : undefined;
}
