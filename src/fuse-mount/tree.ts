/**
 * VersionTree: the file tree of one version of a volume, held in memory for
 * the life of a mount. A version never changes, so the tree is built once from
 * the recursive listing and never invalidated.
 *
 * Inode numbers are the position in the listing sorted by path, plus 2 (the
 * root is 1): the same version mounted again gets the same numbers, and they
 * fit the 32 bits fuse-native passes to the kernel.
 *
 * A tree built on reload from the mount's previous tree (`previous`) keeps
 * the number of every path whose node is the same in both (a directory, or a
 * file with the same size, mode, mtime and extents); every other path gets a
 * number above any the mount has used (`nextIno` only grows), so a number
 * never names two different files in one mount. Same number, same content:
 * changedPaths() compares numbers.
 */
import { FileType, type FileEntry } from '../gen/stowage/v1/volume.js';
import { FailedPreconditionError } from '../common/errors.js';
import { ENOENT, ENOTDIR, FsError } from './errno.js';

export const ROOT_INO = 1;
/** fuse-native passes st_ino as a uint32 (and fh as an int32): more nodes cannot be numbered. */
const MAX_NODES = 0x7fff_fff0;
/** Inode numbers stay below this across reloads. */
const MAX_INO = 0xffff_fff0;

export interface FileNode {
  kind: 'file';
  ino: number;
  /** '/'-prefixed, as FUSE names it. */
  path: string;
  size: number;
  mode: number;
  mtimeMs: number;
  /** The file's entry as listed: its extents, in order. */
  entry: FileEntry;
}

export interface DirNode {
  kind: 'dir';
  ino: number;
  path: string;
  mtimeMs: number;
  parent: DirNode | undefined;
  /** Names of the entries directly inside, sorted. */
  names: string[];
  /** How many of them are directories (for st_nlink). */
  subdirs: number;
}

export type Node = FileNode | DirNode;

/** What a stat says, in the units of struct stat (times in ms). */
export interface NodeAttr {
  ino: number;
  mode: number;
  nlink: number;
  size: number;
  blocks: number;
  mtimeMs: number;
}


export class VersionTree {
  private readonly byPath = new Map<string, Node>();
  private readonly byIno = new Map<number, Node>();
  readonly root: DirNode;
  readonly files: number;
  readonly bytes: number;
  /** The first inode number this mount has not used yet. */
  readonly nextIno: number;

  constructor(
    readonly version: number,
    entries: FileEntry[],
    createdAtMs: number,
    /** The tree this one replaces in a running mount: unchanged paths keep their numbers. */
    previous?: VersionTree,
  ) {
    if (entries.length > MAX_NODES) throw new FailedPreconditionError(`version ${version} has ${entries.length} entries, more than a mount can number`);
    this.root = { kind: 'dir', ino: ROOT_INO, path: '/', mtimeMs: createdAtMs, parent: undefined, names: [], subdirs: 0 };
    this.add(this.root);
    const sorted = [...entries].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    let files = 0;
    let bytes = 0;
    let next = previous ? previous.nextIno : ROOT_INO + 1 + sorted.length;
    sorted.forEach((e, i) => {
      const path = `/${e.path}`;
      const before = previous?.find(path);
      const ino = !previous ? ROOT_INO + 1 + i : before && sameNode(before, e) ? before.ino : next++;
      if (e.type === FileType.FILE_TYPE_DIRECTORY) {
        this.add({ kind: 'dir', ino, path, mtimeMs: e.mtimeMs || createdAtMs, parent: undefined, names: [], subdirs: 0 });
      } else {
        this.add({ kind: 'file', ino, path, size: e.size, mode: e.mode, mtimeMs: e.mtimeMs, entry: e });
        files++;
        bytes += e.size;
      }
    });
    this.files = files;
    this.bytes = bytes;
    this.nextIno = this.link(next, previous);
    if (this.nextIno > MAX_INO) {
      throw new FailedPreconditionError(`the mount has used up its inode numbers; mount version ${version} afresh instead of reloading`);
    }
  }

  /** The node at a FUSE path, or undefined. */
  find(path: string): Node | undefined {
    return this.byPath.get(path);
  }

  /** The node at a FUSE path; ENOENT when there is none. */
  lookup(path: string): Node {
    const n = this.byPath.get(path);
    if (!n) throw new FsError(ENOENT, `no such file in version ${this.version}: ${path}`);
    return n;
  }

  dir(path: string): DirNode {
    const n = this.lookup(path);
    if (n.kind !== 'dir') throw new FsError(ENOTDIR, `not a directory: ${path}`);
    return n;
  }

  byInode(ino: number): Node | undefined {
    return this.byIno.get(ino);
  }

  get size(): number {
    return this.byPath.size;
  }

  private add(n: Node): void {
    this.byPath.set(n.path, n);
    this.byIno.set(n.ino, n);
  }

  /**
   * Hangs every node under its parent. A listing names every directory between
   * the root and a file; a parent it leaves out is made up (numbered after the
   * listed nodes, so the listed ones keep their numbers; or with its number in
   * `previous`). Returns the next unused number.
   */
  private link(nextIno: number, previous: VersionTree | undefined): number {
    let next = nextIno;
    const pending = [...this.byPath.values()].filter((n) => n !== this.root);
    for (const n of pending) {
      let child: Node = n;
      for (;;) {
        const cut = child.path.lastIndexOf('/');
        const parentPath = cut === 0 ? '/' : child.path.slice(0, cut);
        let parent = this.byPath.get(parentPath);
        let made = false;
        if (!parent) {
          const before = previous?.find(parentPath);
          const ino = before?.kind === 'dir' ? before.ino : next++;
          parent = { kind: 'dir', ino, path: parentPath, mtimeMs: this.root.mtimeMs, parent: undefined, names: [], subdirs: 0 };
          this.add(parent);
          made = true;
        }
        if (parent.kind !== 'dir') break; // a file that is also a prefix: the listing never does this
        parent.names.push(child.path.slice(cut + 1));
        if (child.kind === 'dir') {
          child.parent = parent;
          parent.subdirs++;
        }
        if (!made) break;
        child = parent;
      }
    }
    for (const n of this.byPath.values()) if (n.kind === 'dir') n.names.sort();
    return next;
  }

  /** Every node, in no particular order. */
  nodes(): IterableIterator<Node> {
    return this.byPath.values();
  }
}

/** What a reload changed, by path: `changed` exist in both trees as different nodes (new content or type). */
export interface TreeChanges {
  added: Node[];
  changed: { before: Node; after: Node }[];
  removed: Node[];
}

/** The paths of `after` (built with `before` as its previous tree) that differ from `before`. */
export function changedPaths(before: VersionTree, after: VersionTree): TreeChanges {
  const out: TreeChanges = { added: [], changed: [], removed: [] };
  for (const b of before.nodes()) {
    const a = after.find(b.path);
    if (!a) out.removed.push(b);
    else if (a.ino !== b.ino) out.changed.push({ before: b, after: a });
  }
  for (const a of after.nodes()) if (!before.find(a.path)) out.added.push(a);
  return out;
}

/** Whether a listed entry is the same node as `n` of the previous tree (same number, same bytes). */
function sameNode(n: Node, e: FileEntry): boolean {
  if (e.type === FileType.FILE_TYPE_DIRECTORY) return n.kind === 'dir';
  if (n.kind !== 'file') return false;
  const a = n.entry;
  return (
    a.size === e.size &&
    a.mode === e.mode &&
    a.mtimeMs === e.mtimeMs &&
    a.extents.length === e.extents.length &&
    a.extents.every((x, i) => x.hash === e.extents[i]!.hash && x.length === e.extents[i]!.length)
  );
}
