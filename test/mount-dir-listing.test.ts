/**
 * DirListing (src/fuse-mount/dir-listing.ts) packs a readdir's attributes
 * and lays them out as fuse-native's native readdir reads them. The layout
 * is checked against fuse-native itself: the same attributes handed to
 * fuse-native's own _op_readdir as stat objects (which packs each with its
 * getStatArray) must give the same 18 uint32 per entry. No mount is made.
 */
import Fuse, { type FuseStat } from 'fuse-native';
import { describe, expect, it } from 'vitest';
import { DirListing } from '../src/fuse-mount/dir-listing.js';
import type { NodeAttr } from '../src/fuse-mount/tree.js';

const owner = { uid: 1234, gid: 5678, blksize: 131072 };

/** What fuse-native's own readdir hands its native side for these stat objects. */
function fuseNativeStats(names: string[], stats: FuseStat[]): Promise<Uint32Array[]> {
  const fuse = new Fuse('/nonexistent-mountpoint', { readdir: (_path, cb) => cb(0, names, stats) }) as unknown as {
    _op_readdir(signal: (err: number, names: string[], stats: Uint32Array[]) => void, path: string): void;
  };
  return new Promise((resolve) => fuse._op_readdir((_err, _names, out) => resolve(out), '/'));
}

describe('DirListing', () => {
  const attrs: NodeAttr[] = [
    { ino: 1, mode: 0o40555, nlink: 7, size: 4096, blocks: 8, mtimeMs: 1_765_000_000_123 },
    { ino: 2, mode: 0o100444, nlink: 1, size: 0, blocks: 0, mtimeMs: 0 },
    // Sizes past 32 bits and ids near the top of what a mount numbers.
    { ino: 0xefff_fffe, mode: 0o100555, nlink: 1, size: 5 * 2 ** 40 + 17, blocks: Math.ceil((5 * 2 ** 40 + 17) / 512), mtimeMs: 4_102_444_800_000 },
    { ino: 99, mode: 0o100444, nlink: 1, size: 2 ** 32, blocks: 2 ** 23, mtimeMs: 1 },
    // A time before 1970.
    { ino: 100, mode: 0o100444, nlink: 1, size: 3, blocks: 1, mtimeMs: -315_360_000_123 },
  ];

  it('lays out each entry as fuse-native does for the same stat object', async () => {
    const listing = new DirListing();
    attrs.forEach((a, i) => listing.add(`n${i}`, a));
    const ours = listing.fuseStats(owner);
    const theirs = await fuseNativeStats(
      listing.names,
      attrs.map((a) => ({ ...a, uid: owner.uid, gid: owner.gid, blksize: owner.blksize, atime: a.mtimeMs, mtime: a.mtimeMs, ctime: a.mtimeMs })),
    );
    expect(theirs).toHaveLength(attrs.length);
    expect(ours.map((v) => [...v])).toEqual(theirs.map((v) => [...v]));
    // Views of one block of stats, not an array each.
    expect(new Set(ours.map((v) => v.buffer)).size).toBe(1);
    attrs.forEach((a, i) => expect(listing.attr(i)).toEqual(a));
  });

  it('keeps every entry in order as it grows, and reads each back', () => {
    const listing = new DirListing();
    const n = 100_003;
    for (let i = 0; i < n; i++) listing.add(`f${i}`, { ino: i + 2, mode: 0o100444, nlink: 1, size: i * 3, blocks: i, mtimeMs: 1000 + i });
    expect(listing.size).toBe(n);
    expect(listing.names[n - 1]).toBe(`f${n - 1}`);
    for (const i of [0, 1, 63, 64, 65, 50_000, n - 1]) {
      expect(listing.attr(i)).toEqual({ ino: i + 2, mode: 0o100444, nlink: 1, size: i * 3, blocks: i, mtimeMs: 1000 + i });
    }
    expect(() => listing.attr(n)).toThrow(RangeError);
    const stats = listing.fuseStats(owner);
    expect(stats).toHaveLength(n);
    expect(stats[n - 1]![7]).toBe(n + 1); // ino
    expect(stats[n - 1]![3]).toBe((n - 1) * 3); // size, low word
    expect(new Set(stats.map((v) => v.buffer)).size).toBe(Math.ceil(n / 1024));
  });
});
