/**
 * DirListing: what a readdir answers, the names of a directory and their
 * attributes, with the attributes written straight into the layout
 * fuse-native's native readdir reads (18 uint32 per entry, its getStatArray
 * order) in blocks of BLOCK entries, instead of an object per entry. A
 * directory of 1,000,000 files is listed with its names, 72 MB of stats and
 * a view of them per entry; as attribute objects, stat objects and a typed
 * array each it took a mount past 1.3 GiB.
 *
 * The owner (uid, gid) and the block size are the mount's, not the
 * directory's: fuseStats() fills them in when the listing is handed over.
 */
import type { NodeAttr } from './tree.js';

/** uint32 per stat in fuse-native's layout. */
const STAT_INTS = 18;
/** Entries per block of stats (72 KiB). */
const BLOCK = 1024;
const TWO_32 = 4294967296;

// Offsets in a stat, as fuse-native's populate_stat reads them; 64-bit fields are low word first.
const MODE = 0;
const UID = 1;
const GID = 2;
const SIZE = 3;
const NLINK = 6;
const INO = 7;
const BLKSIZE = 9;
const BLOCKS = 10;
const ATIME = 12;
const MTIME = 14;
const CTIME = 16;

export class DirListing {
  readonly names: string[] = [];
  private readonly blocks: Uint32Array[] = [];

  get size(): number {
    return this.names.length;
  }

  add(name: string, a: NodeAttr): void {
    const i = this.names.length;
    if (i % BLOCK === 0) this.blocks.push(new Uint32Array(BLOCK * STAT_INTS));
    const s = this.blocks[this.blocks.length - 1]!;
    const o = (i % BLOCK) * STAT_INTS;
    this.names.push(name);
    s[o + MODE] = a.mode;
    setDouble(s, o + SIZE, a.size);
    s[o + NLINK] = a.nlink;
    s[o + INO] = a.ino;
    setDouble(s, o + BLOCKS, a.blocks);
    setDouble(s, o + ATIME, a.mtimeMs);
    setDouble(s, o + MTIME, a.mtimeMs);
    setDouble(s, o + CTIME, a.mtimeMs);
  }

  attr(i: number): NodeAttr {
    if (!Number.isInteger(i) || i < 0 || i >= this.names.length) throw new RangeError(`entry ${i} of a listing of ${this.names.length}`);
    const s = this.blocks[Math.floor(i / BLOCK)]!;
    const o = (i % BLOCK) * STAT_INTS;
    return { ino: s[o + INO]!, mode: s[o + MODE]!, nlink: s[o + NLINK]!, size: getDouble(s, o + SIZE), blocks: getDouble(s, o + BLOCKS), mtimeMs: getDouble(s, o + MTIME) };
  }

  /** The stats as fuse-native's readdir takes them, owned by `owner`: for each entry a view of its 18 uint32. */
  fuseStats(owner: { uid: number; gid: number; blksize: number }): Uint32Array[] {
    const n = this.names.length;
    const views: Uint32Array[] = new Array(n);
    for (let i = 0; i < n; i++) {
      const s = this.blocks[Math.floor(i / BLOCK)]!;
      const o = (i % BLOCK) * STAT_INTS;
      s[o + UID] = owner.uid;
      s[o + GID] = owner.gid;
      s[o + BLKSIZE] = owner.blksize;
      views[i] = s.subarray(o, o + STAT_INTS);
    }
    return views;
  }
}

/**
 * An integer of magnitude below 2^53 as two uint32, low first, as
 * fuse-native's setDoubleInt stores it (a time before 1970 is negative: its
 * words wrap as in two's complement).
 */
function setDouble(s: Uint32Array, o: number, v: number): void {
  s[o] = v % TWO_32; // the array wraps a negative remainder to its uint32
  s[o + 1] = Math.floor(v / TWO_32);
}

function getDouble(s: Uint32Array, o: number): number {
  const high = s[o + 1]!;
  return s[o]! + (high >= 0x8000_0000 ? high - TWO_32 : high) * TWO_32;
}
