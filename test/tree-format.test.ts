// Unit tests of the tree format (src/tree): pages, building, editing, reading
// and diffing directories, against a plain sorted model of their entries.
import { describe, expect, it } from 'vitest';
import { IntegrityError, NotFoundError } from '../src/common/errors.js';
import { sha256 } from '../src/common/hash.js';
import { diffDirectory } from '../src/tree/diff.js';
import { PageSink, buildDirectory, editDirectory } from '../src/tree/edit.js';
import { decodePage, encodePage, hashPage, type Entry, type FileItem, type Page } from '../src/tree/format.js';
import { EntryCursor, findEntry, listEntries, lookupPath, walk, type TreeSource } from '../src/tree/read.js';

/** Pages as a store holds them: bytes by hash, checked on every read, loads counted. */
class MemoryStore implements TreeSource {
  readonly objects = new Map<string, Buffer>();
  loads = 0;
  page(hash: string): Promise<Page> {
    this.loads++;
    const bytes = this.objects.get(hash);
    if (!bytes) return Promise.reject(new NotFoundError(`tree object ${hash} not found`));
    return Promise.resolve(decodePage(hash, bytes));
  }
  keep(sink: PageSink): number {
    let added = 0;
    for (const [h, p] of sink.pages) {
      if (!this.objects.has(h)) added++;
      this.objects.set(h, p.bytes);
    }
    return added;
  }
}

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const hashOf = (s: string): string => sha256(Buffer.from(s));

function file(name: string, size = 12, id = 7): FileItem {
  const h = hashOf(`${name}:${size}`);
  return { kind: 'file', name, id, size, mode: 0o644, mtimeMs: 1_700_000_000_000, extents: size ? [{ blob: h, offset: 0, length: size, hash: h }] : [] };
}

const byName = (a: Entry, b: Entry): number => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

function built(store: MemoryStore, entries: Entry[]): string {
  const sink = new PageSink(store);
  const root = buildDirectory(sink, [...entries].sort(byName));
  store.keep(sink);
  return root.hash;
}

async function edited(store: MemoryStore, root: string, changes: Map<string, Entry | null>): Promise<string> {
  const sink = new PageSink(store);
  const out = await editDirectory(sink, root, changes);
  store.keep(sink);
  return out.hash;
}

describe('tree pages', () => {
  it('round-trips every kind of entry and page through bytes, and names a page by its hash', () => {
    const dir: Entry = {
      kind: 'dir',
      name: 'café',
      id: 9,
      mtimeMs: -5,
      tree: hashOf('t'),
      totals: { entries: 3, subdirs: 1, files: 10, dirs: 2, bytes: 12345 },
    };
    const packed: FileItem = {
      kind: 'file',
      name: 'packed',
      id: 3,
      size: 5,
      mode: 0o600,
      mtimeMs: 1,
      extents: [{ blob: hashOf('pack'), offset: 100, length: 5, hash: hashOf('x') }],
    };
    const leaf: Page = { kind: 'leaf', entries: [dir, packed, file('plain', 20)] };
    const { hash, bytes } = hashPage(leaf);
    expect(hash).toBe(sha256(bytes));
    expect(decodePage(hash, bytes)).toEqual(leaf);
    const inner: Page = { kind: 'inner', level: 2, refs: [{ first: 'a', hash, totals: { entries: 3, subdirs: 1, files: 12, dirs: 2, bytes: 12370 } }] };
    const enc = hashPage(inner);
    expect(decodePage(enc.hash, enc.bytes)).toEqual(inner);
  });

  it('refuses damaged and malformed pages with an IntegrityError naming the object', () => {
    const good = encodePage({ kind: 'leaf', entries: [file('a'), file('b')] });
    const h = sha256(good);
    const flipped = Buffer.from(good);
    flipped[flipped.length - 1]! ^= 1;
    expect(() => decodePage(h, flipped)).toThrow(IntegrityError);
    expect(() => decodePage(h, flipped)).toThrow(h);
    const bad = (entries: Entry[]): void => {
      const b = encodePage({ kind: 'leaf', entries });
      expect(() => decodePage(sha256(b), b)).toThrow(/malformed/);
    };
    bad([file('b'), file('a')]); // out of order
    bad([file('a'), file('a')]); // twice
    bad([file('..')]);
    bad([file('x/y')]);
    bad([file('nul\0')]);
    bad([{ ...file('a', 10), size: 11 }]); // extents do not cover the size
    bad([{ ...file('a'), id: -1 }]);
  });
});

describe('directories', () => {
  it('builds directories of every size that list, find and total what they hold', async () => {
    for (const n of [0, 1, 63, 64, 1000, 20_000]) {
      const store = new MemoryStore();
      const entries = Array.from({ length: n }, (_, i) => file(`f${String(i).padStart(6, '0')}`, i % 50));
      const sink = new PageSink(store);
      const root = buildDirectory(sink, entries);
      store.keep(sink);
      expect(root.totals).toEqual({ entries: n, subdirs: 0, files: n, dirs: 0, bytes: entries.reduce((s, e) => s + (e as FileItem).size, 0) });
      const listed = await listEntries(store, root.hash);
      expect(listed.map((e) => e.name)).toEqual(entries.map((e) => e.name));
      if (n > 0) {
        const pick = entries[Math.floor(n / 2)]!;
        store.loads = 0;
        expect(await findEntry(store, root.hash, pick.name)).toEqual(pick);
        // A lookup loads one page per level, about four for 20,000 entries.
        expect(store.loads).toBeLessThanOrEqual(4);
        expect(await findEntry(store, root.hash, `${pick.name}x`)).toBeUndefined();
        const page = await listEntries(store, root.hash, entries[n - 3]?.name, 10);
        expect(page.map((e) => e.name)).toEqual(entries.slice(n - 2).map((e) => e.name));
      }
    }
  });

  it('edits to a directory give the same tree as building it at once, and write only the pages on their way', async () => {
    const r = rng(42);
    const store = new MemoryStore();
    const model = new Map<string, Entry>();
    for (let i = 0; i < 5000; i++) model.set(`n${Math.floor(r() * 1e6)}`, file(`x`));
    const fix = (m: Map<string, Entry>): Entry[] => [...m].map(([name, e]) => ({ ...e, name })).sort(byName);
    let root = built(store, fix(model));
    for (let round = 0; round < 60; round++) {
      const changes = new Map<string, Entry | null>();
      const count = round % 10 === 0 ? 400 : 1 + Math.floor(r() * 5);
      const names = [...model.keys()];
      for (let k = 0; k < count; k++) {
        const roll = r();
        if (roll < 0.4 && names.length) {
          const name = names[Math.floor(r() * names.length)]!;
          changes.set(name, null);
          model.delete(name);
        } else if (roll < 0.6 && names.length) {
          const name = names[Math.floor(r() * names.length)]!;
          const e = file(name, Math.floor(r() * 100), round);
          changes.set(name, e);
          model.set(name, e);
        } else {
          const name = `n${Math.floor(r() * 1e6)}`;
          const e = file(name, Math.floor(r() * 100), round);
          changes.set(name, e);
          model.set(name, e);
        }
      }
      changes.set('not-there-at-all', null); // removing a missing name is a no-op
      root = await edited(store, root, changes);
      const fresh = new MemoryStore();
      expect(root).toBe(built(fresh, fix(model)));
    }
    expect((await listEntries(store, root)).map((e) => e.name)).toEqual(fix(model).map((e) => e.name));
    // Emptied completely, then filled again.
    root = await edited(store, root, new Map([...model.keys()].map((k) => [k, null])));
    expect(await listEntries(store, root)).toEqual([]);
    root = await edited(store, root, new Map([['only', file('only')]]));
    expect((await listEntries(store, root)).map((e) => e.name)).toEqual(['only']);
  });

  it('a one-entry change in a directory of 100,000 writes a few pages, not the directory', async () => {
    const store = new MemoryStore();
    const entries = Array.from({ length: 100_000 }, (_, i) => file(`file-${String(i).padStart(7, '0')}`));
    const root = built(store, entries);
    for (const name of ['file-0050000', 'file-0050000a', 'file-0000000', 'zzz']) {
      const sink = new PageSink(store);
      await editDirectory(sink, root, new Map([[name, file(name, 99)]]));
      expect(sink.pages.size).toBeLessThanOrEqual(8);
      expect(sink.bytes).toBeLessThan(64 * 1024);
    }
  });
});

describe('walks, lookups and diffs', () => {
  async function tree(store: MemoryStore, paths: string[]): Promise<string> {
    // Builds nested directories bottom-up from file paths.
    const build = (prefix: string, ps: string[]): Entry[] => {
      const files: Entry[] = [];
      const dirs = new Map<string, string[]>();
      for (const p of ps) {
        const cut = p.indexOf('/');
        if (cut < 0) files.push(file(p));
        else dirs.set(p.slice(0, cut), [...(dirs.get(p.slice(0, cut)) ?? []), p.slice(cut + 1)]);
      }
      for (const [name, rest] of dirs) {
        const sink = new PageSink(store);
        const d = buildDirectory(sink, build(`${prefix}${name}/`, rest).sort(byName));
        store.keep(sink);
        files.push({ kind: 'dir', name, id: 1, mtimeMs: 0, tree: d.hash, totals: d.totals });
      }
      return files.sort(byName);
    };
    return built(store, build('', paths));
  }

  it('walks depth first in name order, resumes after any path, and prunes', async () => {
    const store = new MemoryStore();
    const paths = ['a/b/c', 'a/b/d', 'a/e', 'b', 'c/d/e/f', 'c/x'];
    const root = await tree(store, paths);
    const all: string[] = [];
    for await (const w of walk(store, root)) all.push(w.path);
    expect(all).toEqual(['a', 'a/b', 'a/b/c', 'a/b/d', 'a/e', 'b', 'c', 'c/d', 'c/d/e', 'c/d/e/f', 'c/x']);
    for (let i = 0; i < all.length; i++) {
      const rest: string[] = [];
      for await (const w of walk(store, root, { after: all[i] })) rest.push(w.path);
      expect(rest).toEqual(all.slice(i + 1));
    }
    const pruned: string[] = [];
    for await (const w of walk(store, root, { prune: (p) => p === 'c' })) pruned.push(w.path);
    expect(pruned).toEqual(['a', 'a/b', 'a/b/c', 'a/b/d', 'a/e', 'b', 'c']);
    expect(await lookupPath(store, root, ['a', 'b', 'd'])).toMatchObject({ found: { name: 'd' } });
    expect(await lookupPath(store, root, ['a', 'q'])).toEqual({ missing: 'a/q' });
    expect(await lookupPath(store, root, ['b', 'q'])).toMatchObject({ missing: 'b/q', below: { name: 'b' } });
  });

  it('diffs two versions of a big directory by loading only the pages that differ', async () => {
    const store = new MemoryStore();
    const entries = Array.from({ length: 100_000 }, (_, i) => file(`k${String(i).padStart(6, '0')}`));
    const a = built(store, entries);
    const changed = file('k050000', 1, 99);
    const b = await edited(store, a, new Map<string, Entry | null>([
      ['k050000', changed],
      ['k070000', null],
      ['k070000b', file('k070000b')],
    ]));
    store.loads = 0;
    const changes = [];
    for await (const c of diffDirectory(store, a, b)) changes.push(c);
    expect(changes.map((c) => [c.name, c.before?.kind, c.after?.kind])).toEqual([
      ['k050000', 'file', 'file'],
      ['k070000', 'file', undefined],
      ['k070000b', undefined, 'file'],
    ]);
    expect(store.loads).toBeLessThan(40);
    // The diff of random versions agrees with the model's.
    const r = rng(7);
    for (let round = 0; round < 20; round++) {
      const edits = new Map<string, Entry | null>();
      for (let i = 0; i < 30; i++) {
        const name = `k${String(Math.floor(r() * 100_000)).padStart(6, '0')}${r() < 0.3 ? 'z' : ''}`;
        edits.set(name, r() < 0.5 ? null : file(name, Math.floor(r() * 9), round));
      }
      const c = await edited(store, a, edits);
      const got: string[] = [];
      for await (const d of diffDirectory(store, a, c)) got.push(`${d.name}:${d.before ? 1 : 0}${d.after ? 1 : 0}`);
      const want: string[] = [];
      for (const [name, e] of [...edits].sort((x, y) => (x[0] < y[0] ? -1 : 1))) {
        const had = !name.endsWith('z');
        if (!had && !e) continue;
        if (had && e && e.kind === 'file' && e.size === 12 && e.id === 7) continue;
        want.push(`${name}:${had ? 1 : 0}${e ? 1 : 0}`);
      }
      expect(got).toEqual(want);
    }
  });

  it('a cursor opened after a name starts at the next entry, inclusive at the name itself', async () => {
    const store = new MemoryStore();
    const root = built(store, Array.from({ length: 300 }, (_, i) => file(`e${String(i).padStart(3, '0')}`)));
    expect((await (await EntryCursor.open(store, root, 'e100')).entry())?.name).toBe('e101');
    expect((await (await EntryCursor.open(store, root, 'e100', true)).entry())?.name).toBe('e100');
    expect((await (await EntryCursor.open(store, root, 'e1000')).entry())?.name).toBe('e101');
    expect(await (await EntryCursor.open(store, root, 'zzz')).entry()).toBeUndefined();
  });
});
