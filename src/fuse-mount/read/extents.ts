/**
 * Where a file's extents sit in the file: the byte offset each one starts at,
 * computed once per file (a listed file never changes) and searched by binary
 * search. Used by the read path (filesystem.ts) and the prefetcher.
 */

/** The part of a file that locating its bytes needs (a FileEntry has it). */
export interface ExtentList {
  size: number;
  extents: readonly { hash: string; length: number }[];
}

const startsOf = new WeakMap<ExtentList, number[]>();

/** Where each extent starts in its file, ascending, starts[0] = 0. */
export function extentStarts(file: ExtentList): number[] {
  let starts = startsOf.get(file);
  if (!starts) {
    starts = [];
    let pos = 0;
    for (const e of file.extents) {
      starts.push(pos);
      pos += e.length;
    }
    startsOf.set(file, starts);
  }
  return starts;
}

/** The index of the last start at or before `pos` (starts ascending, starts[0] = 0). */
export function lastAtOrBefore(starts: readonly number[], pos: number): number {
  let lo = 0;
  let hi = starts.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >>> 1;
    if (starts[mid]! <= pos) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}
