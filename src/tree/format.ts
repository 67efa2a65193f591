/**
 * The tree format: how a version of a volume is stored, as git stores trees.
 *
 * A version is the hash of its root directory. A directory is a prolly tree
 * of immutable pages, each an object in the store named by the SHA-256 of its
 * bytes (`trees/<hh>/<hash>`). A leaf page holds a run of the directory's
 * entries, sorted by name; an inner page holds references to the pages one
 * level down, each with the first name below it and the totals below it. A
 * directory small enough for one page is one leaf. Page boundaries depend on
 * the names only (chunker.ts), so a change to one entry of a directory of a
 * million rewrites the few pages on its path, and unchanged directories and
 * pages are shared by every version (and volume) that has them.
 *
 * Entries:
 * - a file: name, inode id, size, mode, mtime and its extents (the runs of
 *   blob bytes that make it up, in order);
 * - a directory: name, inode id, mtime, the hash of its root page and the
 *   totals below it (so that a version's size and file count, and a
 *   directory's, are read off one entry, never counted again).
 * Inode ids are given by the commit that creates or changes an entry, from a
 * counter kept per volume, and kept by every later version while the entry is
 * unchanged: a mount numbers its inodes with them, stable across reloads and
 * remounts, with no table of its own.
 *
 * Invariants a decoded page satisfies (decodePage checks them all; a page
 * that breaks one is an IntegrityError, never data):
 * - leaf entries and inner references are sorted by name, strictly (names are
 *   compared as JavaScript strings, by UTF-16 code unit), and not empty;
 * - names are valid path components (no '/', no NUL, not '.' or '..', 1 to
 *   255 bytes); numbers are non-negative safe integers (mtime may be negative);
 * - a file's extents cover exactly its size; hashes are 32 bytes;
 * - an inner page's level is 1 or more, and its references are non-empty.
 *
 * Encoding: msgpack arrays, hashes as 32-byte binaries.
 *   leaf   [1, 0, [entry…]]
 *   inner  [1, 1, level, [ref…]]
 *   file   [name, 0, id, size, mode, mtimeMs, [extent…]]
 *   extent [hash, length] (a whole blob: blob = hash, offset 0) | [blob, offset, length, hash]
 *   dir    [name, 1, id, mtimeMs, tree, entries, subdirs, files, dirs, bytes]
 *   ref    [first, page, entries, subdirs, files, dirs, bytes]
 */
import { Decoder, Encoder } from '@msgpack/msgpack';
import { IntegrityError } from '../common/errors.js';
import { sha256 } from '../common/hash.js';
import { quote } from '../common/quote.js';

export const TREE_FORMAT = 1;
const LEAF = 0;
const INNER = 1;
const FILE = 0;
const DIR = 1;
/** The largest page decodePage accepts (a leaf of one file with about 400,000 extents). */
export const MAX_PAGE_BYTES = 16 * 1024 * 1024;
const MAX_NAME_BYTES = 255;
const MAX_LEVEL = 32;

export interface TreeExtent {
  blob: string;
  offset: number;
  length: number;
  hash: string;
}

/** What lies below a page or a directory: `entries` and `subdirs` directly in it, the rest at any depth. */
export interface Totals {
  entries: number;
  subdirs: number;
  files: number;
  dirs: number;
  bytes: number;
}

export interface FileItem {
  kind: 'file';
  name: string;
  id: number;
  size: number;
  mode: number;
  mtimeMs: number;
  extents: TreeExtent[];
}

export interface DirItem {
  kind: 'dir';
  name: string;
  id: number;
  mtimeMs: number;
  /** The hash of the directory's root page. */
  tree: string;
  totals: Totals;
}

export type Entry = FileItem | DirItem;

/** A page one level down, as an inner page names it. */
export interface PageRef {
  /** The first name in the page's subtree. */
  first: string;
  hash: string;
  totals: Totals;
}

export interface LeafPage {
  kind: 'leaf';
  entries: Entry[];
}

export interface InnerPage {
  kind: 'inner';
  /** 1 for pages of leaves, and so on up. */
  level: number;
  refs: PageRef[];
}

export type Page = LeafPage | InnerPage;

/** A directory as its parent knows it: its root page and what is below. */
export interface DirRoot {
  hash: string;
  totals: Totals;
}

export const EMPTY_TOTALS: Totals = Object.freeze({ entries: 0, subdirs: 0, files: 0, dirs: 0, bytes: 0 });

export function pageLevel(p: Page): number {
  return p.kind === 'leaf' ? 0 : p.level;
}

/** The totals of a page: what its subtree holds. */
/** Whether two files are the same bytes with the same attributes (size, mode, mtime and extents; names and ids aside). */
export function sameFile(a: Omit<FileItem, 'name' | 'id'>, b: Omit<FileItem, 'name' | 'id'>): boolean {
  return (
    a.size === b.size &&
    a.mode === b.mode &&
    a.mtimeMs === b.mtimeMs &&
    a.extents.length === b.extents.length &&
    a.extents.every((x, i) => {
      const y = b.extents[i]!;
      return x.hash === y.hash && x.blob === y.blob && x.offset === y.offset && x.length === y.length;
    })
  );
}

export function pageTotals(p: Page): Totals {
  const t = { entries: 0, subdirs: 0, files: 0, dirs: 0, bytes: 0 };
  if (p.kind === 'leaf') {
    for (const e of p.entries) {
      t.entries++;
      if (e.kind === 'file') {
        t.files++;
        t.bytes += e.size;
      } else {
        t.subdirs++;
        t.dirs += 1 + e.totals.dirs;
        t.files += e.totals.files;
        t.bytes += e.totals.bytes;
      }
    }
  } else {
    for (const r of p.refs) addTotals(t, r.totals);
  }
  return t;
}

export function addTotals(into: Totals, t: Totals): void {
  into.entries += t.entries;
  into.subdirs += t.subdirs;
  into.files += t.files;
  into.dirs += t.dirs;
  into.bytes += t.bytes;
}

/** The key a page item sorts and chunks by. */
export function keyOf(item: Entry | PageRef): string {
  return 'first' in item ? item.first : item.name;
}

// ---- encoding ----------------------------------------------------------------

const encoder = new Encoder({ initialBufferSize: 16 * 1024 });
const decoder = new Decoder({ maxStrLength: 4096, maxBinLength: 32, maxArrayLength: 1 << 22, maxMapLength: 0 });

const bin = (hex: string): Uint8Array => Buffer.from(hex, 'hex');
/**
 * Hex of a binary the decoder handed out: a view into the page's bytes. One
 * Buffer over the page's memory serves every hash of the page, instead of a
 * new Buffer object per hash (decoding is most of what a listing costs).
 */
let whole: { ab: ArrayBufferLike; buf: Buffer } | undefined;
const hex = (b: Uint8Array): string => {
  if (whole?.ab !== b.buffer) whole = { ab: b.buffer, buf: Buffer.from(b.buffer) };
  return whole.buf.toString('hex', b.byteOffset, b.byteOffset + b.byteLength);
};

export function encodePage(p: Page): Buffer {
  const body =
    p.kind === 'leaf'
      ? [TREE_FORMAT, LEAF, p.entries.map(encodeEntry)]
      : [TREE_FORMAT, INNER, p.level, p.refs.map((r) => [r.first, bin(r.hash), ...totalsArray(r.totals)])];
  const out = encoder.encode(body);
  return Buffer.from(out.buffer, out.byteOffset, out.byteLength);
}

function encodeEntry(e: Entry): unknown[] {
  if (e.kind === 'dir') return [e.name, DIR, e.id, e.mtimeMs, bin(e.tree), ...totalsArray(e.totals)];
  const extents = e.extents.map((x) =>
    x.blob === x.hash && x.offset === 0 ? [bin(x.hash), x.length] : [bin(x.blob), x.offset, x.length, bin(x.hash)],
  );
  return [e.name, FILE, e.id, e.size, e.mode, e.mtimeMs, extents];
}

function totalsArray(t: Totals): number[] {
  return [t.entries, t.subdirs, t.files, t.dirs, t.bytes];
}

/** A page's bytes and its name in the store. */
export function hashPage(p: Page): { hash: string; bytes: Buffer } {
  const bytes = encodePage(p);
  return { hash: sha256(bytes), bytes };
}

export function treeObjectKey(hash: string): string {
  return `trees/${hash.slice(0, 2)}/${hash}`;
}

export function parseTreeObjectKey(key: string): string | undefined {
  const m = /^trees\/[0-9a-f]{2}\/([0-9a-f]{64})$/.exec(key);
  return m ? m[1] : undefined;
}

// ---- decoding, which trusts nothing ------------------------------------------

class Malformed extends Error {}

function fail(why: string): never {
  throw new Malformed(why);
}

/**
 * Checks that `bytes` hash to `hash`, decodes them and checks every invariant
 * above. IntegrityError (naming the object) otherwise.
 */
export function decodePage(hash: string, bytes: Uint8Array): Page {
  if (bytes.length > MAX_PAGE_BYTES) throw new IntegrityError(`tree object ${hash} is ${bytes.length} bytes, over the limit of ${MAX_PAGE_BYTES}`);
  const actual = sha256(bytes);
  if (actual !== hash) throw new IntegrityError(`tree object ${hash} is damaged: its bytes hash to ${actual}`);
  try {
    return parsePage(decoder.decode(bytes));
  } catch (err) {
    throw new IntegrityError(`tree object ${hash} is malformed: ${(err as Error).message}`);
  } finally {
    whole = undefined;
  }
}

function parsePage(v: unknown): Page {
  const a = arr(v, 'page');
  if (a[0] !== TREE_FORMAT) fail(`unknown format ${String(a[0])}`);
  if (a[1] === LEAF) {
    if (a.length !== 3) fail('leaf with extra fields');
    const entries = arr(a[2], 'entries').map(parseEntry);
    sorted(entries.map((e) => e.name));
    return { kind: 'leaf', entries };
  }
  if (a[1] === INNER) {
    if (a.length !== 4) fail('inner page with extra fields');
    const level = uint(a[2], 'level');
    if (level < 1 || level > MAX_LEVEL) fail(`level ${level}`);
    const refs = arr(a[3], 'refs').map((r): PageRef => {
      const x = arr(r, 'ref');
      if (x.length !== 7) fail('ref of the wrong length');
      return { first: name(x[0]), hash: hash(x[1]), totals: totals(x, 2) };
    });
    if (refs.length === 0) fail('inner page without references');
    sorted(refs.map((r) => r.first));
    return { kind: 'inner', level, refs };
  }
  return fail(`unknown page kind ${String(a[1])}`);
}

function parseEntry(v: unknown): Entry {
  const a = arr(v, 'entry');
  const n = name(a[0]);
  if (a[1] === DIR) {
    if (a.length !== 10) fail(`directory "${n}": wrong length`);
    return { kind: 'dir', name: n, id: uint(a[2], 'id'), mtimeMs: int(a[3], 'mtime'), tree: hash(a[4]), totals: totals(a, 5) };
  }
  if (a[1] !== FILE || a.length !== 7) fail(`entry "${n}": unknown kind or wrong length`);
  const size = uint(a[3], 'size');
  let covered = 0;
  const extents = arr(a[6], 'extents').map((x): TreeExtent => {
    const e = arr(x, 'extent');
    if (e.length === 2) {
      const h = hash(e[0]);
      const length = uint(e[1], 'length');
      covered += length;
      return { blob: h, offset: 0, length, hash: h };
    }
    if (e.length !== 4) fail(`file "${n}": extent of the wrong length`);
    const length = uint(e[2], 'length');
    covered += length;
    return { blob: hash(e[0]), offset: uint(e[1], 'offset'), length, hash: hash(e[3]) };
  });
  if (covered !== size) fail(`file "${n}": extents cover ${covered} bytes, its size is ${size}`);
  return { kind: 'file', name: n, id: uint(a[2], 'id'), size, mode: uint(a[4], 'mode'), mtimeMs: int(a[5], 'mtime'), extents };
}

function arr(v: unknown, what: string): unknown[] {
  if (!Array.isArray(v)) fail(`${what} is not an array`);
  return v as unknown[];
}

function uint(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) fail(`${what} is not a whole number`);
  return v as number;
}

function int(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) fail(`${what} is not an integer`);
  return v as number;
}

function hash(v: unknown): string {
  if (!(v instanceof Uint8Array) || v.length !== 32) fail('hash is not 32 bytes');
  return hex(v as Uint8Array);
}

function name(v: unknown): string {
  if (typeof v !== 'string' || !isComponent(v)) fail(`invalid name ${quote(String(v))}`);
  return v as string;
}

function totals(a: unknown[], from: number): Totals {
  return {
    entries: uint(a[from], 'entries'),
    subdirs: uint(a[from + 1], 'subdirs'),
    files: uint(a[from + 2], 'files'),
    dirs: uint(a[from + 3], 'dirs'),
    bytes: uint(a[from + 4], 'bytes'),
  };
}

function sorted(names: string[]): void {
  for (let i = 1; i < names.length; i++) {
    if (!(names[i - 1]! < names[i]!)) fail(`names out of order at ${quote(names[i]!)}`);
  }
}

/** Whether `s` can name an entry of a directory. */
export function isComponent(s: string): boolean {
  return s !== '' && s !== '.' && s !== '..' && !s.includes('/') && !s.includes('\0') && Buffer.byteLength(s) <= MAX_NAME_BYTES;
}
