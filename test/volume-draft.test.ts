// Unit tests of a commit's drafts (src/volume-server/draft.ts): what spill()
// builds early must make the same tree as building it all at the end.
import { describe, expect, it } from 'vitest';
import { NotFoundError } from '../src/common/errors.js';
import { sha256 } from '../src/common/hash.js';
import { PageSink, emptyDirectory } from '../src/tree/edit.js';
import { decodePage, type Page } from '../src/tree/format.js';
import { walk, type TreeSource } from '../src/tree/read.js';
import { Draft, type PutChange } from '../src/volume-server/draft.js';

class MemoryStore implements TreeSource {
  readonly objects = new Map<string, Buffer>();
  page(hash: string): Promise<Page> {
    const bytes = this.objects.get(hash);
    return bytes ? Promise.resolve(decodePage(hash, bytes)) : Promise.reject(new NotFoundError(`tree object ${hash} not found`));
  }
  keep(sink: PageSink): void {
    for (const [h, p] of sink.take()) this.objects.set(h, p.bytes);
  }
}

function put(path: string, n: number): PutChange {
  const h = sha256(Buffer.from(`${path}:${n}`));
  return { path, file: { kind: 'file', size: 5, mode: 0o644, mtimeMs: 1, extents: [{ blob: h, offset: 0, length: 5, hash: h }] } };
}

/** Commits `puts` (in batches of `batch`, spilling between them, with `foldEntries`) and returns the new root and listing. */
async function commit(puts: PutChange[], batch: number, foldEntries: number): Promise<{ root: string; paths: string[]; store: MemoryStore }> {
  const store = new MemoryStore();
  const sink = new PageSink(store);
  const draft = new Draft(sink, emptyDirectory(sink), 2, 'v', 1000, false, foldEntries);
  for (let i = 0; i < puts.length; i += batch) {
    for (const p of puts.slice(i, i + batch)) await draft.put(p);
    await draft.spill();
    store.keep(sink); // as a commit stores spilled pages: they leave the sink
  }
  const root = await draft.finish();
  store.keep(sink);
  const paths: string[] = [];
  for await (const w of walk(store, root.hash)) if (w.entry.kind === 'file') paths.push(w.path);
  return { root: root.hash, paths, store };
}

describe('a commit built as it streams (Draft.spill)', () => {
  it('gives the same tree as one built at the end: flat directories folded in order, out of order, and directories left behind', async () => {
    const flat = Array.from({ length: 3000 }, (_, i) => put(`big/f${String(i).padStart(5, '0')}`, i));
    const nested = Array.from({ length: 2000 }, (_, i) => put(`d${String(Math.floor(i / 100)).padStart(3, '0')}/f${i}`, i));
    const shuffled = [...flat].sort((a, b) => (sha256(Buffer.from(a.path)) < sha256(Buffer.from(b.path)) ? -1 : 1));
    for (const puts of [flat, nested, shuffled, [...nested, ...flat, put('d005/late', 1)]]) {
      const atOnce = await commit(puts, puts.length, Number.MAX_SAFE_INTEGER);
      const streamed = await commit(puts, 97, 50);
      expect(streamed.root).toBe(atOnce.root);
      expect(streamed.paths).toEqual([...new Set(puts.map((p) => p.path))].sort());
    }
  });

  it('an overwrite without force of a file a spill already built is still refused', async () => {
    const store = new MemoryStore();
    const sink = new PageSink(store);
    const draft = new Draft(sink, emptyDirectory(sink), 2, 'v', 1000, false, 10);
    for (let i = 0; i < 40; i++) await draft.put(put(`a/f${String(i).padStart(2, '0')}`, i));
    await draft.spill();
    await expect(draft.put(put('a/f03', 99))).rejects.toThrow(/already exists/);
    await expect(draft.put(put('a/f03/x', 99))).rejects.toThrow(/"a\/f03" is a file/);
  });
});
