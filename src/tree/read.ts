/**
 * Reading trees: where an entry is, what a directory lists, what is below a
 * path. Every read loads only the pages on its way (a lookup in a directory
 * of a million entries loads about four), through a TreeSource that checks
 * each page against its hash (format.ts decodePage) and caches as it likes.
 */
import { IntegrityError, NotFoundError, isStowageError } from '../common/errors.js';
import type { DirItem, Entry, InnerPage, Page, PageRef } from './format.js';
import { pageLevel } from './format.js';

/** Where pages come from. */
export interface TreeSource {
  /** The page named `hash`, checked and decoded. IntegrityError when damaged or absent (a version refers to it). */
  page(hash: string): Promise<Page>;
}

/** The index of the last reference whose first name is at most `key` (0 when none is). */
export function childFor(p: InnerPage, key: string): number {
  let lo = 0;
  let hi = p.refs.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (p.refs[mid]!.first <= key) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** The index of the first entry named `key` or after it. */
function entryAtOrAfter(entries: Entry[], key: string): number {
  let lo = 0;
  let hi = entries.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (entries[mid]!.name < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The entry `name` of the directory whose root page is `dir`, if there is one. */
export async function findEntry(src: TreeSource, dir: string, name: string): Promise<Entry | undefined> {
  let page = await src.page(dir);
  while (page.kind === 'inner') page = await src.page(page.refs[childFor(page, name)]!.hash);
  const i = entryAtOrAfter(page.entries, name);
  const e = page.entries[i];
  return e?.name === name ? e : undefined;
}

export type Lookup = { found: Entry } | { missing: string; below?: Entry };

/**
 * The entry at `parts` below the directory `root` ([] is the root itself,
 * which has no entry: undefined). When it is missing, `missing` is the first
 * path part that is not there, and `below` the file that stands where a
 * directory was needed, if that is why.
 */
export async function lookupPath(src: TreeSource, root: string, parts: string[]): Promise<Lookup> {
  let dir = root;
  let entry: Entry | undefined;
  for (let i = 0; i < parts.length; i++) {
    entry = await findEntry(src, dir, parts[i]!);
    if (!entry) return { missing: parts.slice(0, i + 1).join('/') };
    if (i < parts.length - 1) {
      if (entry.kind !== 'dir') return { missing: parts.slice(0, i + 2).join('/'), below: entry };
      dir = entry.tree;
    }
  }
  if (!entry) throw new NotFoundError('the root has no entry of its own');
  return { found: entry };
}

/**
 * Runs `fn`, adding to an IntegrityError (a damaged tree object; a TreeSource
 * reports a missing one as damaged too, since a version refers to it) which
 * path of which version it stopped.
 */
export async function atPath<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (isStowageError(err, 'INTEGRITY')) throw new IntegrityError(`${what}: ${err.message}`);
    throw err;
  }
}

interface Frame {
  hash: string;
  page: Page;
  index: number;
}

/**
 * A position among the entries of one directory, moving forward. Pages are
 * loaded as the position reaches them; `skipPage` steps over a whole page
 * (at any level) without loading what is below it, which is what lets a diff
 * of two versions cost what changed.
 */
export class EntryCursor {
  /** frames[0] is the root page; each further frame is the page the one above points at. */
  private frames: Frame[] = [];
  readonly rootLevel: number;

  private constructor(
    private readonly src: TreeSource,
    readonly root: string,
    rootPage: Page,
  ) {
    this.frames = [{ hash: root, page: rootPage, index: 0 }];
    this.rootLevel = pageLevel(rootPage);
  }

  /**
   * A cursor at the first entry named after `after` (or, with `inclusive`,
   * named `after` or after it); at the first entry when `after` is undefined.
   */
  static async open(src: TreeSource, root: string, after?: string, inclusive = false): Promise<EntryCursor> {
    const c = new EntryCursor(src, root, await src.page(root));
    if (after !== undefined) await c.seek(after, inclusive);
    return c;
  }

  get done(): boolean {
    return this.frames.length === 0;
  }

  /** The entry here (loading pages down to it), undefined at the end. */
  async entry(): Promise<Entry | undefined> {
    await this.descend(0);
    const f = this.frames.at(-1);
    if (!f) return undefined;
    return (f.page as { entries: Entry[] }).entries[f.index];
  }

  /** The rest of the current leaf page's entries, from the position on; the position moves past them ([] at the end). */
  async takeLeaf(): Promise<Entry[]> {
    await this.descend(0);
    const f = this.frames.at(-1);
    if (!f) return [];
    const entries = (f.page as { entries: Entry[] }).entries;
    const run = f.index === 0 ? entries : entries.slice(f.index);
    f.index = entries.length;
    this.settle();
    return run;
  }

  async next(): Promise<void> {
    await this.descend(0);
    const f = this.frames.at(-1);
    if (!f) return;
    f.index++;
    this.settle();
  }

  /** Whether the position is the first entry of the page at `level` it is in. */
  atPageStart(level: number): boolean {
    if (this.done) return false;
    for (const f of this.frames) if (pageLevel(f.page) <= level && f.index !== 0) return false;
    return true;
  }

  /** The hash of the page at `level` the position is in, when the page above it is loaded. */
  pageHash(level: number): string | undefined {
    if (this.done) return undefined;
    if (level === this.rootLevel) return this.root;
    const above = this.frames.find((f) => pageLevel(f.page) === level + 1);
    return above ? (above.page as InnerPage).refs[above.index]!.hash : undefined;
  }

  /** Loads pages down to `level` along the position (so that pageHash(level - 1) is known). */
  async descend(level: number): Promise<void> {
    for (;;) {
      const f = this.frames.at(-1);
      if (!f || pageLevel(f.page) <= level || f.page.kind !== 'inner') return;
      const ref = f.page.refs[f.index]!;
      this.frames.push({ hash: ref.hash, page: await this.src.page(ref.hash), index: 0 });
    }
  }

  /** Moves past the whole page at `level` the position is in (its hash must be known). */
  skipPage(level: number): void {
    if (level >= this.rootLevel) {
      this.frames = [];
      return;
    }
    const at = this.frames.findIndex((f) => pageLevel(f.page) === level + 1);
    if (at < 0) throw new Error(`skipPage(${level}): the page above it is not loaded`);
    this.frames.length = at + 1;
    this.frames[at]!.index++;
    this.settle();
  }

  /** Pops frames whose index ran past their end, moving their parents on. */
  private settle(): void {
    for (;;) {
      const f = this.frames.at(-1);
      if (!f) return;
      const len = f.page.kind === 'leaf' ? f.page.entries.length : f.page.refs.length;
      if (f.index < len) return;
      this.frames.pop();
      const up = this.frames.at(-1);
      if (!up) return;
      up.index++;
    }
  }

  private async seek(after: string, inclusive: boolean): Promise<void> {
    for (;;) {
      const f = this.frames.at(-1)!;
      if (f.page.kind === 'leaf') {
        f.index = entryAtOrAfter(f.page.entries, after);
        if (!inclusive && f.page.entries[f.index]?.name === after) f.index++;
        this.settle();
        return;
      }
      f.index = childFor(f.page, after);
      const ref: PageRef = f.page.refs[f.index]!;
      this.frames.push({ hash: ref.hash, page: await this.src.page(ref.hash), index: 0 });
    }
  }
}

/** The entries of a directory in name order, from after `after`, at most `limit` (all when undefined). */
export async function listEntries(src: TreeSource, dir: string, after?: string, limit?: number): Promise<Entry[]> {
  const out: Entry[] = [];
  const c = await EntryCursor.open(src, dir, after);
  for (let e = await c.entry(); e && (limit === undefined || out.length < limit); e = await c.entry()) {
    out.push(e);
    await c.next();
  }
  return out;
}

export interface WalkItem {
  /** '/'-separated, relative to where the walk started. */
  path: string;
  entry: Entry;
}

/**
 * Every entry below the directory `dir`, depth first in name order (a
 * directory before what is in it), starting after `after` (a path relative to
 * `dir`) when given. `prune(path, dir)` returning true skips what is below a
 * directory (the directory itself is still yielded).
 */
export async function* walk(
  src: TreeSource,
  dir: string,
  opts: { prefix?: string; after?: string; prune?: (path: string, d: DirItem) => boolean } = {},
): AsyncGenerator<WalkItem> {
  const prefix = opts.prefix ?? '';
  const afterParts = opts.after ? opts.after.split('/') : [];
  yield* walkDir(src, dir, prefix, afterParts, opts.prune);
}

async function* walkDir(
  src: TreeSource,
  dir: string,
  prefix: string,
  after: string[],
  prune: ((path: string, d: DirItem) => boolean) | undefined,
): AsyncGenerator<WalkItem> {
  // Resuming after a path: its first part is where to resume in this directory. That
  // entry was yielded already; what is below it (when it is a directory) was not,
  // but for the part of it up to the rest of the path.
  const first = after[0];
  const c = await EntryCursor.open(src, dir, first, true);
  for (let e = await c.entry(); e; e = await c.entry()) {
    const path = prefix === '' ? e.name : `${prefix}/${e.name}`;
    const resume = first !== undefined && e.name === first;
    if (!resume) yield { path, entry: e };
    if (e.kind === 'dir' && !(prune?.(path, e) ?? false)) {
      yield* walkDir(src, e.tree, path, resume ? after.slice(1) : [], prune);
    }
    await c.next();
  }
}
