/**
 * TreeObjects: the server's TreeSource over the store. Pages come from a
 * bounded memory cache of decoded pages, else (for stores far away, S3) from
 * the index's copy of their bytes, else from the store; every page read from
 * bytes is checked against its hash (decodePage) before it is used, so a
 * damaged object fails with an IntegrityError, never as a wrong listing.
 * Concurrent loads of one page are merged.
 *
 * write() stores a commit's new pages before the commit refers to them: the
 * commit writes its version record only after every page is in the store.
 */
import { LRUCache } from 'lru-cache';
import pLimit from 'p-limit';
import { IntegrityError, NotFoundError } from '../common/errors.js';
import { sha256 } from '../common/hash.js';
import type { Logger } from '../common/logger.js';
import type { PageSink } from '../tree/edit.js';
import { decodePage, encodePage, treeObjectKey, type Page } from '../tree/format.js';
import type { TreeSource } from '../tree/read.js';
import type { MetadataIndex } from './index/types.js';
import type { BlobStore } from './store/interface.js';

export interface TreeObjectsOptions {
  /** Bytes of decoded pages kept in memory (default 64 MiB). */
  memoryBytes?: number;
  /** Keep the bytes of every page in the index too: for stores that are far away (default false). */
  keepInIndex?: boolean;
  /** Told of each lookup in the memory cache (the server's metrics). */
  cacheCounter?: TreeCacheCounter;
}

/** Counts lookups of pages in the memory cache: a hit is served from memory, a miss loads the page (or waits for its load). */
export interface TreeCacheCounter {
  hit(): void;
  miss(): void;
}

/** A decoded page takes several times its encoded bytes in memory. */
const DECODED_FACTOR = 5;
/** Pages written at once that are also kept in memory (more: a bulk commit, whose pages are read back rarely). */
const REMEMBER_WRITTEN = 64;

export class TreeObjects implements TreeSource {
  private readonly memory: LRUCache<string, Page>;
  private readonly loading = new Map<string, Promise<Page>>();
  private readonly keepInIndex: boolean;
  private readonly limit = pLimit(64);
  private readonly counter: TreeCacheCounter | undefined;

  constructor(
    private readonly store: BlobStore,
    private readonly index: MetadataIndex,
    private readonly log: Logger,
    opts: TreeObjectsOptions = {},
  ) {
    this.memory = new LRUCache<string, Page>({ maxSize: opts.memoryBytes ?? 64 * 1024 * 1024, sizeCalculation: () => 1 });
    this.keepInIndex = opts.keepInIndex ?? false;
    this.counter = opts.cacheCounter;
  }

  page(hash: string): Promise<Page> {
    const hit = this.memory.get(hash);
    if (hit) {
      this.counter?.hit();
      return Promise.resolve(hit);
    }
    this.counter?.miss();
    let p = this.loading.get(hash);
    if (!p) {
      p = this.load(hash).finally(() => this.loading.delete(hash));
      this.loading.set(hash, p);
    }
    return p;
  }

  /** A page's bytes as stored, checked against its hash (for clients that read trees themselves). */
  async bytes(hash: string): Promise<Buffer> {
    // A page held decoded is served from memory, as the server's own reads of it are: encoded again, if that gives its bytes.
    const held = this.memory.get(hash);
    if (held) {
      const again = encodePage(held);
      if (sha256(again) === hash) {
        this.counter?.hit();
        return again;
      }
    }
    this.counter?.miss();
    const { bytes } = await this.fetch(hash);
    const actual = sha256(bytes);
    if (actual !== hash) throw new IntegrityError(`tree object ${hash} in ${this.store.description} is damaged: its bytes hash to ${actual}`);
    return bytes;
  }

  /**
   * Stores the pages of the sink that `root` reaches and the store does not
   * have yet (a commit may have made pages it then did not use); returns how
   * many and their bytes.
   */
  async write(sink: PageSink, root: string): Promise<{ objects: number; bytes: number }> {
    const fresh: [string, { page: Page; bytes: Buffer }][] = [];
    const stack = [root];
    const seen = new Set<string>();
    while (stack.length) {
      const hash = stack.pop()!;
      const mine = sink.pages.get(hash);
      if (!mine || seen.has(hash)) continue;
      seen.add(hash);
      if (!this.index.hasTree(hash)) fresh.push([hash, mine]);
      if (mine.page.kind === 'inner') for (const r of mine.page.refs) stack.push(r.hash);
      else for (const e of mine.page.entries) if (e.kind === 'dir') stack.push(e.tree);
    }
    return this.writePages(fresh);
  }

  /** Stores pages (those the store lacks) and records them; returns how many and their bytes. */
  async writePages(pages: [string, { page: Page; bytes: Buffer }][]): Promise<{ objects: number; bytes: number }> {
    const fresh = pages.filter(([hash]) => !this.index.hasTree(hash));
    await Promise.all(fresh.map(([hash, { bytes }]) => this.limit(() => this.store.put(treeObjectKey(hash), bytes))));
    await this.index.putTrees(fresh.map(([hash, { bytes }]) => [hash, this.keepInIndex ? bytes : undefined]));
    // The pages of a small commit are the path the next one walks again; a bulk commit's would only push them out.
    if (fresh.length <= REMEMBER_WRITTEN) for (const [hash, { page, bytes }] of fresh) this.remember(hash, page, bytes.length);
    return { objects: fresh.length, bytes: fresh.reduce((n, [, p]) => n + p.bytes.length, 0) };
  }

  /** Forgets pages garbage collection deleted. */
  forget(hashes: string[]): void {
    for (const h of hashes) this.memory.delete(h);
  }

  private async load(hash: string): Promise<Page> {
    const { bytes, fromIndex } = await this.fetch(hash);
    const page = decodePage(hash, bytes);
    if (!fromIndex && this.keepInIndex) {
      this.index.putTrees([[hash, bytes]]).catch((err: unknown) => this.log.warn({ err: (err as Error).message }, 'cannot keep a tree object in the index'));
    }
    this.remember(hash, page, bytes.length);
    return page;
  }

  private async fetch(hash: string): Promise<{ bytes: Buffer; fromIndex: boolean }> {
    const kept = this.index.getTree(hash);
    if (kept) return { bytes: kept, fromIndex: true };
    try {
      return { bytes: await this.store.get(treeObjectKey(hash)), fromIndex: false };
    } catch (err) {
      // A version refers to it: gone is damage, not an absent name.
      if (err instanceof NotFoundError) throw new IntegrityError(`tree object ${hash} is missing from ${this.store.description}`);
      throw err;
    }
  }

  private remember(hash: string, page: Page, bytes: number): void {
    this.memory.set(hash, page, { size: Math.max(1, bytes * DECODED_FACTOR) });
  }
}
