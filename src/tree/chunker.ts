/**
 * Where pages end. A page ends after an item whose key hashes to a boundary
 * (about one key in 64 at the leaves, one in 32 above), so boundaries depend
 * on names alone: inserting or removing an entry moves no boundary but its
 * own, and an edit rewrites only the page it lands in (two, when it adds or
 * removes a boundary). A page also ends when it grows past PAGE_TARGET_MAX
 * bytes, which only entries with very many extents reach; such a forced end
 * is kept by later edits where it falls, so a tree built by edits may differ
 * from one built at once from the same entries. Both are valid trees; only
 * sharing between them is lost.
 */
import { keyOf, type Entry, type PageRef } from './format.js';

const LEAF_MASK = 63;
const INNER_MASK = 31;
/** Bytes (estimated) after which a page ends whatever its keys. */
export const PAGE_TARGET_MAX = 256 * 1024;

/** FNV-1a over the key's UTF-16 units, seeded by level, then murmur3's finaliser. */
function keyHash(key: string, level: number): number {
  let h = (0x811c9dc5 ^ Math.imul(level + 1, 0x9e3779b1)) >>> 0;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export function isBoundary(level: number, key: string): boolean {
  return (keyHash(key, level) & (level === 0 ? LEAF_MASK : INNER_MASK)) === 0;
}

/** Roughly how many bytes an item takes in a page. */
export function itemBytes(item: Entry | PageRef): number {
  if ('first' in item) return item.first.length * 2 + 64;
  if (item.kind === 'dir') return item.name.length * 2 + 72;
  return item.name.length * 2 + 32 + item.extents.length * 48;
}

export interface Chunked<T> {
  pages: T[][];
  /** The last page ended without a boundary (more items would join it). */
  open: boolean;
}

/** Cuts a sorted run of items of one level into pages. */
export function chunk<T extends Entry | PageRef>(items: T[], level: number): Chunked<T> {
  const pages: T[][] = [];
  let cur: T[] = [];
  let bytes = 0;
  for (const it of items) {
    cur.push(it);
    bytes += itemBytes(it);
    if (isBoundary(level, keyOf(it)) || bytes >= PAGE_TARGET_MAX) {
      pages.push(cur);
      cur = [];
      bytes = 0;
    }
  }
  if (cur.length === 0) return { pages, open: false };
  pages.push(cur);
  return { pages, open: true };
}
