/**
 * What changed between two versions of a directory, at the cost of what
 * changed: both directories are walked side by side, and wherever both
 * positions start a page of the same level with the same hash, that page is
 * stepped over in both without being loaded (equal hashes, equal subtrees).
 * Below a directory entry present in both, the caller decides whether to
 * descend (equal `tree` hashes mean nothing below changed).
 */
import { sameFile, type Entry } from './format.js';
import { EntryCursor, type TreeSource } from './read.js';

export interface EntryChange {
  name: string;
  /** undefined: added. */
  before: Entry | undefined;
  /** undefined: removed. */
  after: Entry | undefined;
}

/** Entries that differ between the directories `a` and `b` (by name, in name order). */
export async function* diffDirectory(src: TreeSource, a: string, b: string): AsyncGenerator<EntryChange> {
  if (a === b) return;
  const ca = await EntryCursor.open(src, a);
  const cb = await EntryCursor.open(src, b);
  for (;;) {
    if (await skipShared(ca, cb)) continue;
    const ea = await ca.entry();
    const eb = await cb.entry();
    if (!ea && !eb) return;
    if (ea && (!eb || ea.name < eb.name)) {
      yield { name: ea.name, before: ea, after: undefined };
      await ca.next();
    } else if (eb && (!ea || eb.name < ea.name)) {
      yield { name: eb.name, before: undefined, after: eb };
      await cb.next();
    } else {
      if (!sameEntry(ea!, eb!)) yield { name: ea!.name, before: ea, after: eb };
      await ca.next();
      await cb.next();
    }
  }
}

/** Steps both cursors over the highest page they both start with the same hash; whether it did. */
async function skipShared(ca: EntryCursor, cb: EntryCursor): Promise<boolean> {
  if (ca.done || cb.done) return false;
  for (let level = Math.min(ca.rootLevel, cb.rootLevel); level >= 0; level--) {
    if (!ca.atPageStart(level) || !cb.atPageStart(level)) continue;
    // Loading the page above `level` tells its hash; both are at its start, so that load is on their way anyway.
    await ca.descend(level + 1);
    await cb.descend(level + 1);
    const ha = ca.pageHash(level);
    if (ha !== undefined && ha === cb.pageHash(level)) {
      ca.skipPage(level);
      cb.skipPage(level);
      return true;
    }
  }
  return false;
}

/** Whether two entries of one name are the same (a directory: the same tree, id and mtime). */
export function sameEntry(a: Entry, b: Entry): boolean {
  if (a.kind !== b.kind || a.id !== b.id) return false;
  if (a.kind === 'dir') return a.mtimeMs === b.mtimeMs && a.tree === (b as typeof a).tree;
  return sameFile(a, b as typeof a);
}
