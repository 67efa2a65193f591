/**
 * The tree every contender holds: `files` files of about 13 bytes, each with
 * its own content (`file-0000123\n`, so nothing deduplicates), either in
 * directories of `dirSize` (`/d0000/f0000000`, `/d0000/f0000001`, …) or all in
 * the root (`/f0000000`, …). File i's path and bytes are computed, never
 * stored, so a tree of millions costs no memory until something lists it.
 *
 * Files added later (the 1-file commits, the reload probe) are remembered as
 * extras, so that the expected size of a listing stays exact.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { mulberry32 } from '../volume-transfer/setup.js';

export type Layout = 'dirs' | 'flat';
export const LAYOUTS: readonly Layout[] = ['dirs', 'flat'];

export interface TreeShape {
  files: number;
  layout: Layout;
  /** Files per directory in the dirs layout. */
  dirSize: number;
}

export class Tree {
  readonly files: number;
  readonly layout: Layout;
  readonly dirSize: number;
  /** Directories below the root: 0 in the flat layout. */
  readonly dirs: number;
  private readonly fileDigits: number;
  private readonly dirDigits: number;
  /** Paths of files added after the first put, by their directory ('' for the root). */
  private readonly extras = new Map<string, number>();

  constructor(shape: TreeShape) {
    this.files = shape.files;
    this.layout = shape.layout;
    this.dirSize = shape.dirSize;
    this.dirs = shape.layout === 'dirs' ? Math.ceil(shape.files / shape.dirSize) : 0;
    this.fileDigits = Math.max(7, String(shape.files - 1).length);
    this.dirDigits = Math.max(4, String(Math.max(0, this.dirs - 1)).length);
  }

  /** "100,000 files, dirs of 1,000" */
  get label(): string {
    const n = this.files.toLocaleString('en-US');
    return this.layout === 'dirs' ? `${n} files, dirs of ${this.dirSize.toLocaleString('en-US')}` : `${n} files, flat`;
  }

  /** A short name for file and object names: "100000-dirs". */
  get key(): string {
    return `${this.files}-${this.layout}`;
  }

  /** '/d0012/f0012345', or '/f0012345' in the flat layout. */
  path(i: number): string {
    const name = `f${String(i).padStart(this.fileDigits, '0')}`;
    return this.layout === 'dirs' ? `${this.dirPath(Math.floor(i / this.dirSize))}/${name}` : `/${name}`;
  }

  content(i: number): Buffer {
    return Buffer.from(`file-${String(i).padStart(this.fileDigits, '0')}\n`);
  }

  /** '/d0012'; the root ('/') in the flat layout. */
  dirPath(d: number): string {
    return this.layout === 'dirs' ? `/d${String(d).padStart(this.dirDigits, '0')}` : '/';
  }

  /** Directories that can be listed: every dN, or the root alone in the flat layout. */
  get listable(): number {
    return this.layout === 'dirs' ? this.dirs : 1;
  }

  /** The directory the 1-file commits and the reload probe go into: a full one in the middle, or the root. */
  get commitDir(): string {
    return this.layout === 'dirs' ? this.dirPath(Math.floor(this.dirs / 2)) : '/';
  }

  /** A path for an extra file in commitDir, recorded as added. */
  addExtra(name: string): string {
    const dir = this.commitDir;
    this.extras.set(dir, (this.extras.get(dir) ?? 0) + 1);
    return dir === '/' ? `/${name}` : `${dir}/${name}`;
  }

  /** Entries a listing of directory `dirPath(d)` returns. */
  entriesIn(d: number): number {
    const dir = this.dirPath(d);
    const own = this.layout === 'dirs' ? Math.min(this.dirSize, this.files - d * this.dirSize) : this.files;
    return own + (this.extras.get(dir) ?? 0);
  }

  /** Files and directories below the root, extras included (what `find DIR` prints, less the root itself). */
  get totalEntries(): number {
    let extra = 0;
    for (const n of this.extras.values()) extra += n;
    return this.files + this.dirs + extra;
  }

  /** Writes the tree below `root` (which must not exist). Synchronous calls: for files this small they are the fastest Node has. */
  write(root: string): void {
    mkdirSync(root, { recursive: true });
    for (let d = 0; d < this.dirs; d++) mkdirSync(join(root, this.dirPath(d)));
    for (let i = 0; i < this.files; i++) writeFileSync(join(root, this.path(i)), this.content(i));
  }
}

/**
 * `n` distinct whole numbers below `max`, drawn by a generator seeded with
 * `seed`: the same samples in every run, so that runs before and after a
 * change stat the same files.
 */
export function sample(n: number, max: number, seed: number): number[] {
  const rand = mulberry32(seed);
  const k = Math.min(n, max);
  const picked = new Set<number>();
  while (picked.size < k) picked.add(Math.floor(rand() * max));
  return [...picked];
}
