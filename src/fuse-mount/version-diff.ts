/**
 * What a reload changed: two versions of a volume compared by hash, from the
 * root down (tree/diff.ts). Identical pages are stepped over without loading
 * them, and a directory is entered only when its root page differs between
 * the versions, so the cost is the pages on the paths of the change, never
 * the size of the volume. A removed directory is not walked (everything below
 * it is gone: its totals say how much); filesBelowRemoved() lists what was
 * below them when the caller needs it.
 */
import { diffDirectory, type EntryChange } from '../tree/diff.js';
import type { Entry } from '../tree/format.js';
import { walk } from '../tree/read.js';
import { childPath, type FileNode, type VersionTree } from './tree.js';

export interface VersionChanges {
  /** Entries added, changed and removed, counting everything below added and removed directories. */
  added: number;
  changed: number;
  removed: number;
  /** Files of the old version whose path now names another entry or nothing (with their old node). */
  files: { path: string; node: FileNode | undefined }[];
  /** Directories of the old version that are gone, or are files now. */
  removedDirs: string[];
  /** Their root pages in the old version, by path. */
  removedTrees: Map<string, string>;
  /** Paths that name nothing in the old version and something in the new, whose parent is in both. */
  addedPaths: string[];
  /** Directories in both whose attributes (inode, link count, mtime) changed. */
  changedDirs: string[];
}

/** The changes from `before` to `after` (two trees over the same source). */
export async function diffVersions(before: VersionTree, after: VersionTree): Promise<VersionChanges> {
  const out: VersionChanges = { added: 0, changed: 0, removed: 0, files: [], removedDirs: [], removedTrees: new Map(), addedPaths: [], changedDirs: [] };
  const below = (e: Entry): number => (e.kind === 'dir' ? e.totals.files + e.totals.dirs : 0);
  const visit = async (dir: string, a: string, b: string): Promise<void> => {
    for await (const c of entryChanges(before, a, b)) {
      const path = childPath(dir, c.name);
      const { before: was, after: now } = c;
      if (was?.kind === 'dir' && now?.kind === 'dir') {
        if (was.id !== now.id || was.totals.subdirs !== now.totals.subdirs || was.mtimeMs !== now.mtimeMs) out.changedDirs.push(path);
        if (was.tree !== now.tree) await visit(path, was.tree, now.tree);
        continue;
      }
      if (was && now) out.changed++;
      else if (was) out.removed++;
      else out.added++;
      out.removed += was ? below(was) : 0;
      out.added += now ? below(now) : 0;
      if (!was) out.addedPaths.push(path);
      if (was?.kind === 'file') out.files.push({ path, node: oldNode(before, path, was) });
      if (was?.kind === 'dir') {
        out.removedDirs.push(path);
        out.removedTrees.set(path, was.tree);
      }
    }
  };
  await visit('/', before.root.tree, after.root.tree);
  return out;
}

/** Adds the files below the removed directories to `changes.files` (at the cost of those directories). */
export async function filesBelowRemoved(before: VersionTree, changes: VersionChanges): Promise<void> {
  for (const [path, tree] of changes.removedTrees) {
    for await (const w of walk(before.src, tree, { prefix: path })) {
      if (w.entry.kind === 'file') changes.files.push({ path: w.path, node: oldNode(before, w.path, w.entry) });
    }
  }
}

function oldNode(before: VersionTree, path: string, e: Entry): FileNode | undefined {
  try {
    const n = before.node(path, e, undefined);
    return n.kind === 'file' ? n : undefined;
  } catch {
    return undefined; // an id the mount could not number: it never showed it
  }
}

/** diffDirectory, where '' is an empty directory (the root of a version without files). */
async function* entryChanges(tree: VersionTree, a: string, b: string): AsyncGenerator<EntryChange> {
  if (a === b) return;
  if (a && b) {
    yield* diffDirectory(tree.src, a, b);
    return;
  }
  const only = await tree.list({ kind: 'dir', ino: 0, path: '/', mtimeMs: 0, tree: a || b, subdirs: 0 });
  for (const e of only) yield a ? { name: e.name, before: e, after: undefined } : { name: e.name, before: undefined, after: e };
}
