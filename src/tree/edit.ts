/**
 * Writing trees: a directory built at once from its entries, or edited.
 *
 * An edit is a sorted batch of changes to a directory's entries (by name: the
 * new entry, or null to remove it). It works a level at a time. At the leaves,
 * each page that a change lands in is loaded, changed and cut into pages again
 * (chunker.ts); when the last new page does not end on a boundary (its old
 * last entry was removed, or an entry was added after it), the next old page
 * is pulled in and cut with it, until a page ends on a boundary again. What a
 * level did becomes the change batch of the level above: each old page it
 * consumed is removed (by its first name), each new page is put. At the root
 * level the new pages become the new root, with levels added on top while
 * there is more than one, and removed while the root has one child. So an
 * edit loads and writes the pages on the paths of its changes, and their
 * neighbours where a boundary moved.
 *
 * New pages go to a PageSink; nothing is written to the store here. The
 * caller stores them (all before anything refers to them) and may read them
 * back through the sink's overlay while it works.
 */
import { chunk } from './chunker.js';
import {
  EMPTY_TOTALS,
  hashPage,
  keyOf,
  pageLevel,
  pageTotals,
  type DirRoot,
  type Entry,
  type InnerPage,
  type Page,
  type PageRef,
} from './format.js';
import { childFor, type TreeSource } from './read.js';

/** New pages, encoded and named, kept until the caller stores them. */
export class PageSink implements TreeSource {
  readonly pages = new Map<string, { page: Page; bytes: Buffer }>();
  /** Every page ever added, taken or not. */
  readonly made = new Set<string>();
  private held = 0;

  constructor(private readonly base: TreeSource) {}

  /** Adds a page; returns its reference. */
  add(page: Page): PageRef {
    const { hash, bytes } = hashPage(page);
    if (!this.pages.has(hash)) {
      this.pages.set(hash, { page, bytes });
      this.held += bytes.length;
    }
    this.made.add(hash);
    const first = page.kind === 'leaf' ? page.entries[0]?.name ?? '' : page.refs[0]!.first;
    return { first, hash, totals: pageTotals(page) };
  }

  /** Reads new pages from here, others from the base. */
  page(hash: string): Promise<Page> {
    const mine = this.pages.get(hash);
    return mine ? Promise.resolve(mine.page) : this.base.page(hash);
  }

  /** Bytes of the pages held now. */
  get bytes(): number {
    return this.held;
  }

  /** Removes every page from the sink and returns them (the caller stores them; reads of them then go to the base). */
  take(): [string, { page: Page; bytes: Buffer }][] {
    const out = [...this.pages];
    this.pages.clear();
    this.held = 0;
    return out;
  }
}

/** The empty directory: one leaf without entries. */
export function emptyDirectory(sink: PageSink): DirRoot {
  const ref = sink.add({ kind: 'leaf', entries: [] });
  return { hash: ref.hash, totals: { ...EMPTY_TOTALS } };
}

/** A directory of these entries (sorted by name, names unique). */
export function buildDirectory(sink: PageSink, entries: Entry[]): DirRoot {
  if (entries.length === 0) return emptyDirectory(sink);
  let refs = chunk(entries, 0).pages.map((p) => sink.add({ kind: 'leaf', entries: p }));
  for (let level = 1; refs.length > 1; level++) {
    refs = chunk(refs, level).pages.map((p) => sink.add({ kind: 'inner', level, refs: p }));
  }
  return { hash: refs[0]!.hash, totals: refs[0]!.totals };
}

/** A change to one item of a level: put `item` under `key`, or remove `key` (item null). */
interface Change<T> {
  key: string;
  item: T | null;
}

/**
 * Applies entry changes (name → entry, or null to remove; names unique) to
 * the directory whose root page is `root`. Removing a name that is not there
 * is a no-op; the caller checks what must exist.
 */
export async function editDirectory(sink: PageSink, root: string, changes: Map<string, Entry | null>): Promise<DirRoot> {
  if (changes.size === 0) {
    const page = await sink.page(root);
    return { hash: root, totals: pageTotals(page) };
  }
  const rootPage = await sink.page(root);
  const height = pageLevel(rootPage);
  let batch: Change<Entry | PageRef>[] = [...changes]
    .map(([key, item]) => ({ key, item }))
    .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  for (let level = 0; level < height; level++) {
    batch = await editLevel(sink, root, level, batch);
    if (batch.length === 0) return { hash: root, totals: pageTotals(rootPage) };
  }
  // The root level: its one page, changed, becomes the new top.
  const items = mergeItems(rootItems(rootPage), batch);
  return finishRoot(sink, items, height);
}

function rootItems(p: Page): (Entry | PageRef)[] {
  return p.kind === 'leaf' ? p.entries : p.refs;
}

/** Items of a root level, cut into pages, with levels added until one page is left and removed while it has one child. */
async function finishRoot(sink: PageSink, items: (Entry | PageRef)[], level: number): Promise<DirRoot> {
  if (items.length === 0) return emptyDirectory(sink);
  let refs = chunk(items, level).pages.map((p) => sink.add(pageOf(p, level)));
  let at = level;
  while (refs.length > 1) {
    at++;
    refs = chunk(refs, at).pages.map((p) => sink.add({ kind: 'inner', level: at, refs: p }));
  }
  let top = refs[0]!;
  let page = await sink.page(top.hash);
  while (page.kind === 'inner' && page.refs.length === 1) {
    top = page.refs[0]!;
    page = await sink.page(top.hash);
  }
  return { hash: top.hash, totals: top.totals };
}

function pageOf(items: (Entry | PageRef)[], level: number): Page {
  return level === 0 ? { kind: 'leaf', entries: items as Entry[] } : { kind: 'inner', level, refs: items as PageRef[] };
}

/** Merges sorted changes into sorted items. */
function mergeItems<T extends Entry | PageRef>(items: T[], changes: Change<T>[]): T[] {
  const out: T[] = [];
  let i = 0;
  for (const c of changes) {
    while (i < items.length && keyOf(items[i]!) < c.key) out.push(items[i++]!);
    if (i < items.length && keyOf(items[i]!) === c.key) i++;
    if (c.item) out.push(c.item);
  }
  while (i < items.length) out.push(items[i++]!);
  return out;
}

/**
 * The pages of one level below the root, in order, reached through the inner
 * pages above them (loaded as needed).
 */
class LevelCursor {
  /** Inner pages from the root down to the level above the cursor's, each with the index taken. */
  private frames: { page: InnerPage; index: number }[] = [];

  constructor(
    private readonly src: TreeSource,
    private readonly root: string,
    private readonly level: number,
  ) {}

  /** Moves to the page of this level where `key` belongs (the last whose first name is at most key). */
  async seek(key: string): Promise<PageRef> {
    this.frames = [];
    let page = (await this.src.page(this.root)) as InnerPage;
    for (;;) {
      const index = childFor(page, key);
      this.frames.push({ page, index });
      if (page.level === this.level + 1) return page.refs[index]!;
      page = (await this.src.page(page.refs[index]!.hash)) as InnerPage;
    }
  }

  /** The first name of the next page of this level, undefined when this is the last. */
  nextFirst(): string | undefined {
    for (let i = this.frames.length - 1; i >= 0; i--) {
      const f = this.frames[i]!;
      if (f.index + 1 < f.page.refs.length) return f.page.refs[f.index + 1]!.first;
    }
    return undefined;
  }

  /** Moves to the next page of this level (there must be one). */
  async next(): Promise<PageRef> {
    let i = this.frames.length - 1;
    while (this.frames[i]!.index + 1 >= this.frames[i]!.page.refs.length) i--;
    this.frames.length = i + 1;
    this.frames[i]!.index++;
    for (;;) {
      const f = this.frames.at(-1)!;
      if (f.page.level === this.level + 1) return f.page.refs[f.index]!;
      const page = (await this.src.page(f.page.refs[f.index]!.hash)) as InnerPage;
      this.frames.push({ page, index: 0 });
    }
  }
}

/** Applies a change batch to the pages of `level` (below the root); returns the batch for the level above. */
async function editLevel(
  sink: PageSink,
  root: string,
  level: number,
  batch: Change<Entry | PageRef>[],
): Promise<Change<Entry | PageRef>[]> {
  const cursor = new LevelCursor(sink, root, level);
  const removed: PageRef[] = [];
  const added: PageRef[] = [];
  let i = 0;
  while (i < batch.length) {
    let ref = await cursor.seek(batch[i]!.key);
    let carry: (Entry | PageRef)[] = [];
    for (;;) {
      removed.push(ref);
      const page = await sink.page(ref.hash);
      const nextFirst = cursor.nextFirst();
      const mine: Change<Entry | PageRef>[] = [];
      while (i < batch.length && (nextFirst === undefined || batch[i]!.key < nextFirst)) mine.push(batch[i++]!);
      const items = mergeItems([...carry, ...rootItems(page)], mine);
      const { pages, open } = chunk(items, level);
      const last = open && nextFirst !== undefined ? pages.pop() : undefined;
      for (const p of pages) added.push(sink.add(pageOf(p, level)));
      if (!last) break;
      carry = last;
      ref = await cursor.next();
    }
  }
  // Pages written again unchanged (same first name, same hash) are no change above.
  const up = new Map<string, PageRef | null>();
  for (const r of removed) up.set(r.first, null);
  for (const r of added) up.set(r.first, r);
  const same = new Set(removed.map((r) => `${r.first}\0${r.hash}`));
  return [...up]
    .filter(([k, r]) => !(r && same.has(`${k}\0${r.hash}`)))
    .map(([key, item]) => ({ key, item }))
    .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}
