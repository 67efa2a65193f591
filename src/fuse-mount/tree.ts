/**
 * VersionTree: one version of a volume as the mount sees it, loaded lazily.
 * A version is the hash of its root directory page (tree/format.ts); a path
 * is resolved by walking from the root one name at a time through the
 * mount's MountTreeSource, which loads (and keeps, within its bound) only the
 * pages on the way. Nothing here holds the whole version: a VersionTree is a
 * root hash, the version's totals and the root's attributes.
 *
 * Inode numbers are the entries' ids (the root is 1): a commit gives an id to
 * each entry it creates or changes and later versions keep it while the entry
 * is unchanged, so numbers are stable across reloads and remounts, and a
 * changed file gets a new one, with no table here. Ids must stay below
 * STAGED_INO_FLOOR, where the staging of a writable mount numbers its own
 * inodes (counting down from the top of the 32 bits fuse-native passes): an
 * entry whose id reaches it is refused (EIO with the reason) rather than
 * shown under a number that could name another file.
 *
 * A VersionTree never changes: a reload makes a new one, and a FUSE callback
 * that captured one at its start sees that version throughout.
 */
import { FailedPreconditionError } from '../common/errors.js';
import { FileType, type FileEntry } from '../gen/stowage/v1/volume.js';
import type { DirItem, Entry, FileItem, LeafPage } from '../tree/format.js';
import { atPath } from '../tree/read.js';
import { ENOENT, ENOTDIR, FsError } from './errno.js';
import type { MountTreeSource } from './tree-source.js';

export const ROOT_INO = 1;
/** Inode numbers from here up belong to the staging of a writable mount (staging.ts); the tree's ids stay below. */
export const STAGED_INO_FLOOR = 0xf000_0000;

export interface FileNode {
  kind: 'file';
  ino: number;
  /** '/'-prefixed, as FUSE names it. */
  path: string;
  size: number;
  mode: number;
  mtimeMs: number;
  /** The file's entry: its extents, in order (shared with the page it was read from). */
  entry: FileEntry;
  /** The leaf page it was found in (its neighbours there are read ahead of it: pack-reads.ts). */
  leaf: string | undefined;
}

export interface DirNode {
  kind: 'dir';
  ino: number;
  path: string;
  mtimeMs: number;
  /** Its root page ('' for the root of a version without files). */
  tree: string;
  /** How many of its entries are directories (for st_nlink). */
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

/** A version as GetVersion tells it. */
export interface VersionHead {
  version: number;
  /** '' when the volume has no files. */
  root: string;
  createdAtMs: number;
  files: number;
  bytes: number;
  dirs: number;
}

export const parentOf = (path: string): string => path.slice(0, Math.max(1, path.lastIndexOf('/')));
export const childPath = (dir: string, name: string): string => (dir === '/' ? `/${name}` : `${dir}/${name}`);

export class VersionTree {
  readonly version: number;
  readonly root: DirNode;
  readonly files: number;
  readonly bytes: number;
  /** Every node: files, directories and the root. */
  readonly size: number;

  private constructor(
    readonly src: MountTreeSource,
    readonly volume: string,
    head: VersionHead,
    rootSubdirs: number,
  ) {
    this.version = head.version;
    this.files = head.files;
    this.bytes = head.bytes;
    this.size = head.files + head.dirs + 1;
    this.root = { kind: 'dir', ino: ROOT_INO, path: '/', mtimeMs: head.createdAtMs, tree: head.root, subdirs: rootSubdirs };
  }

  /** The tree of `head`, with its root page loaded (for the root's link count; a damaged root fails here). */
  static async open(src: MountTreeSource, volume: string, head: VersionHead): Promise<VersionTree> {
    let subdirs = 0;
    if (head.root) {
      const page = await atPath(`reading the root of volume "${volume}" at version ${head.version}`, () => src.page(head.root));
      subdirs = page.kind === 'leaf' ? page.entries.filter((e) => e.kind === 'dir').length : page.refs.reduce((n, r) => n + r.totals.subdirs, 0);
    }
    return new VersionTree(src, volume, head, subdirs);
  }

  /**
   * The node at a FUSE path, or undefined. A name that is not there but whose
   * NFC form is (volume paths are stored in NFC) resolves to that entry.
   * A damaged or missing tree object on the way is an IntegrityError naming the path.
   */
  async find(path: string): Promise<Node | undefined> {
    if (path === '/') return this.root;
    return atPath(this.reading(path), async () => {
      let dir: DirNode = this.root;
      const parts = path.split('/');
      for (let i = 1; i < parts.length; i++) {
        const part = parts[i]!;
        if (part === '' || !dir.tree) return undefined;
        let hit = await this.src.find(dir.tree, part);
        const nfc = part.normalize('NFC');
        if (!hit && nfc !== part) hit = await this.src.find(dir.tree, nfc);
        if (!hit) return undefined;
        const node = this.node(childPath(dir.path, part), hit.entry, hit.leaf);
        if (i === parts.length - 1) return node;
        if (node.kind !== 'dir') return undefined;
        dir = node;
      }
      return dir;
    });
  }

  /** The node at a FUSE path; ENOENT when there is none. */
  async lookup(path: string): Promise<Node> {
    const n = await this.find(path);
    if (!n) throw new FsError(ENOENT, `no such file in version ${this.version}: ${path}`);
    return n;
  }

  async dir(path: string): Promise<DirNode> {
    const n = await this.lookup(path);
    if (n.kind !== 'dir') throw new FsError(ENOTDIR, `not a directory: ${path}`);
    return n;
  }

  /**
   * Calls `fn` with each leaf page of a directory, in name order, as it loads
   * (nothing of the directory is held here: a listing of a huge directory
   * keeps what it needs of each page and lets the page go).
   */
  async eachLeaf(dir: DirNode, fn: (hash: string, page: LeafPage) => void): Promise<void> {
    if (!dir.tree) return;
    await atPath(this.reading(dir.path), async () => {
      for await (const { hash, page } of this.src.leaves(dir.tree)) fn(hash, page);
    });
  }

  /** The entries of a directory in name order. */
  async list(dir: DirNode): Promise<Entry[]> {
    const out: Entry[] = [];
    await this.eachLeaf(dir, (_hash, page) => {
      for (const e of page.entries) out.push(e);
    });
    return out;
  }

  /** The children of a directory as nodes. */
  async children(dir: DirNode): Promise<Node[]> {
    return (await this.list(dir)).map((e) => this.node(childPath(dir.path, e.name), e, undefined));
  }

  /** The node for an entry found at `path`. */
  node(path: string, e: Entry, leaf: string | undefined): Node {
    checkIno(path, e.id);
    return e.kind === 'dir' ? dirNode(path, e) : fileNode(path, e, leaf);
  }

  private reading(path: string): string {
    return `looking up ${path} in volume "${this.volume}" at version ${this.version}`;
  }
}

/** Refuses an entry whose id cannot be its inode number (the root's, or in the staging's range). */
export function checkIno(path: string, id: number): void {
  if (id >= STAGED_INO_FLOOR || id <= ROOT_INO) {
    throw new FailedPreconditionError(
      `${path} has inode id ${id}, outside what a mount can number (2 to ${STAGED_INO_FLOOR - 1}); read it with stowage volume get instead`,
    );
  }
}

function dirNode(path: string, e: DirItem): DirNode {
  return { kind: 'dir', ino: e.id, path, mtimeMs: e.mtimeMs, tree: e.tree, subdirs: e.totals.subdirs };
}

function fileNode(path: string, e: FileItem, leaf: string | undefined): FileNode {
  const entry: FileEntry = {
    path: path.slice(1),
    type: FileType.FILE_TYPE_FILE,
    size: e.size,
    mode: e.mode,
    mtimeMs: e.mtimeMs,
    extents: e.extents,
    id: e.id,
    tree: '',
  };
  return { kind: 'file', ino: e.id, path, size: e.size, mode: e.mode, mtimeMs: e.mtimeMs, entry, leaf };
}
