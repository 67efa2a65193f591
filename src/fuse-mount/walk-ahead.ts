/**
 * WalkAhead: directory read-ahead for walks. find, du, os.walk and a data
 * loader scanning its class directories list a directory, then the
 * directories in it one at a time, in the order the listing gave (name
 * order here). A listing of a directory the mount has not seen costs two or
 * more round trips to the server (its root page, then the pages below it),
 * one directory after another. So when a directory is listed, the pages of
 * the directories such a walk lists next are fetched in the background: its
 * own first subdirectories, and the directories after it in its parent. The
 * walk's next listings then find their pages in the tree source's cache, or
 * already on the way.
 *
 * Bounded: at most WALK_AHEAD directories per listing, each of at most
 * MAX_ENTRIES entries (a huge directory is listed when asked for, not on a
 * guess), together taking at most a quarter of the tree source's cache (by
 * BYTES_PER_ENTRY: what is fetched ahead must not push out what the walk is
 * using), looking at most SCAN_PAGES leaf pages of the parent for them.
 * A walk names each directory ahead several times: the pages it has are
 * cache hits (which also keep them from being pushed out before the walk
 * gets there), and those on the way are merged. Everything here is
 * a guess: a failure is ignored, and the listing that needs the page asks
 * again (and reports it).
 */
import type { DirItem, Entry } from '../tree/format.js';
import { EntryCursor } from '../tree/read.js';
import { DECODED_FACTOR, type MountTreeSource } from './tree-source.js';
import type { DirNode } from './tree.js';

/** Directories fetched ahead per listing. */
export const WALK_AHEAD = 8;
/** A directory with more entries than this is not fetched ahead. */
const MAX_ENTRIES = 4096;
/** Leaf pages of the parent looked at for the directories after the one listed. */
const SCAN_PAGES = 2;
/** What an entry takes in the tree source's cache, about: DECODED_FACTOR times its encoded bytes (about 100). */
const BYTES_PER_ENTRY = 100 * DECODED_FACTOR;

export class WalkAhead {
  private readonly budget: number;

  constructor(
    private readonly src: MountTreeSource,
    cacheBytes: number,
  ) {
    this.budget = cacheBytes / 4;
  }

  /**
   * `dir` was listed: `firstSubdirs` are the first directories in it (in
   * listing order), `parent` the directory it is in (undefined for the root).
   */
  listed(dir: DirNode, firstSubdirs: readonly DirItem[], parent: DirNode | undefined): void {
    const name = dir.path.slice(dir.path.lastIndexOf('/') + 1);
    void this.fetchAhead(firstSubdirs, parent, name).catch(() => undefined);
  }

  private async fetchAhead(firstSubdirs: readonly DirItem[], parent: DirNode | undefined, name: string): Promise<void> {
    const targets: DirItem[] = [];
    let bytes = 0;
    /** Takes `d` when it fits; false once no more directories do. */
    const take = (d: DirItem): boolean => {
      if (targets.length === WALK_AHEAD) return false;
      if (!d.tree || d.totals.entries > MAX_ENTRIES) return true;
      const cost = d.totals.entries * BYTES_PER_ENTRY;
      if (bytes + cost > this.budget) return false;
      bytes += cost;
      targets.push(d);
      return true;
    };
    let room = firstSubdirs.every(take);
    // Then the rest of the parent: the walk lists them once it is done below this one.
    if (parent?.tree && room) {
      const c = await EntryCursor.open(this.src, parent.tree, name);
      for (let pages = 0; pages < SCAN_PAGES && room; pages++) {
        const run: Entry[] = await c.takeLeaf();
        if (run.length === 0) break;
        for (const e of run) if (e.kind === 'dir' && !(room = take(e))) break;
      }
    }
    await Promise.all(targets.map((d) => this.fetchDir(d.tree)));
  }

  private async fetchDir(tree: string): Promise<void> {
    for await (const _ of this.src.leaves(tree)) {
      // Loading is the point: the pages land in the tree source's cache.
    }
  }
}
