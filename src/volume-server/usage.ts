/**
 * What a volume's versions hold against what they store, for the dashboard's
 * dedup ratio:
 * - logical bytes: the sum of the sizes of the versions the index holds (what
 *   they would take as full copies);
 * - stored bytes: the bytes of the distinct extents (by content hash) their
 *   files use, so a chunk shared by files or versions counts once.
 *
 * It walks the tree pages of every version, but a page reached before is not
 * walked again (as garbage collection's mark), so versions sharing subtrees
 * cost their distinct pages, not their files times their versions. A walk
 * that would visit more than `maxPages` pages stops and answers undefined:
 * the dashboard shows no ratio rather than spending minutes on it.
 */
import type { Page } from '../tree/format.js';
import type { VolumeCatalog } from './catalog.js';

export interface VolumeUsage {
  logicalBytes: number;
  storedBytes: number;
  versions: number;
}

export const DEFAULT_MAX_USAGE_PAGES = 100_000;

/** The usage of volume `name` (see the head of this file); undefined when the walk is over `maxPages`. */
export async function volumeUsage(catalog: VolumeCatalog, name: string, maxPages = DEFAULT_MAX_USAGE_PAGES): Promise<VolumeUsage | undefined> {
  const versions = await catalog.listVersions(name);
  const pages = new Set<string>();
  const extents = new Set<string>();
  let storedBytes = 0;
  let logicalBytes = 0;
  for (const v of versions) {
    logicalBytes += v.totalBytes;
    const stack = v.root ? [v.root] : [];
    while (stack.length) {
      const hash = stack.pop()!;
      if (pages.has(hash)) continue;
      if (pages.size >= maxPages) return undefined;
      pages.add(hash);
      const page: Page = await catalog.trees.page(hash);
      if (page.kind === 'inner') {
        for (const r of page.refs) stack.push(r.hash);
        continue;
      }
      for (const e of page.entries) {
        if (e.kind === 'dir') stack.push(e.tree);
        else {
          for (const x of e.extents) {
            if (extents.has(x.hash)) continue;
            extents.add(x.hash);
            storedBytes += x.length;
          }
        }
      }
    }
  }
  return { logicalBytes, storedBytes, versions: versions.length };
}
