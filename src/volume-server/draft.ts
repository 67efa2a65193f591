/**
 * Draft: what one commit does to a version's tree, before it is written.
 *
 * The directories a commit touches are opened as drafts (DraftDir): the
 * directory as the version has it (its root page, read through the tree
 * source when an entry is looked up), plus the entries changed under it by
 * name. Everything else stays as it was and is never loaded. Removals, then
 * copies, then puts are applied in that order, with the rules that keep a
 * volume a tree (no file where a directory is, no directory under a file, no
 * overwrite without force); a rule broken fails the whole commit, and no
 * version is written (pages a huge commit stored as it went are then
 * referenced by nothing, for garbage collection). finish() turns the drafts into pages bottom-up (tree/edit.ts):
 * only the pages on the changed paths are new.
 *
 * Directories are implied by files, as they always were: a directory left
 * without entries by a commit is removed from its parent.
 *
 * Inode ids: an entry a commit adds or changes gets the volume's next id; a
 * put of a file identical to the one it replaces keeps that file's id, and a
 * directory keeps its id however its contents change.
 */
import { AlreadyExistsError, FailedPreconditionError, InvalidArgumentError, NotFoundError } from '../common/errors.js';
import { normalizeFilePath, normalizePath } from '../common/validate.js';
import { PageSink, buildDirectory, editDirectory } from '../tree/edit.js';
import { sameFile, type DirItem, type DirRoot, type Entry, type FileItem } from '../tree/format.js';
import { EntryCursor, findEntry, walk } from '../tree/read.js';
import { ROOT_ID } from './versions.js';

export interface RemoveChange {
  path: string;
  recursive: boolean;
}

export interface CopyChange {
  srcs: string[];
  dst: string;
  /** Refuse a directory source (`cp` without -r); otherwise a directory is copied with everything in it. */
  filesOnly?: boolean;
}

/** A file to put: its path and what to store (its id is given here). */
export interface PutChange {
  path: string;
  file: Omit<FileItem, 'name' | 'id'>;
}

type Node = DraftDir | Entry;

class DraftDir {
  /** Entries changed under this directory, by name; null: removed. */
  readonly changes = new Map<string, Node | null>();
  /** What the base directory has under names looked up (undefined: nothing). */
  readonly seen = new Map<string, Entry | undefined>();

  constructor(
    readonly id: number,
    /** The directory's root page as the version has it (or as spill() built it); undefined for a new directory. */
    public baseTree: string | undefined,
    public baseEntries: number,
    public baseMtimeMs: number,
  ) {}
}

export const parentOf = (path: string): string => path.slice(0, Math.max(0, path.lastIndexOf('/')));
const nameOf = (path: string): string => path.slice(path.lastIndexOf('/') + 1);
const join = (dir: string, name: string): string => (dir === '' ? name : `${dir}/${name}`);

export class Draft {
  private root: DraftDir;
  private nextId: number;
  /** Parent directories of recent puts, by path: a batch of puts into one directory walks to it once. */
  private readonly dirs = new Map<string, DraftDir>();
  /** Directories this commit made, not yet built by spill(). */
  private readonly fresh = new Set<DraftDir>();
  /** Directories puts went into since the last spill(). */
  private readonly touched = new Set<DraftDir>();

  constructor(
    private readonly sink: PageSink,
    base: DirRoot,
    nextId: number,
    private readonly volume: string,
    private readonly now: number,
    private readonly force: boolean,
    /** A directory's changes past which spill() builds them into pages. */
    private readonly foldEntries = FOLD_ENTRIES,
  ) {
    this.root = new DraftDir(ROOT_ID, base.hash, base.totals.entries, now);
    this.nextId = nextId;
  }

  /** The next id the volume gives after this commit. */
  get idsUsedUpTo(): number {
    return this.nextId;
  }

  async remove(op: RemoveChange): Promise<void> {
    this.dirs.clear();
    const p = normalizePath(op.path);
    if (p === '') {
      if (!(await this.hasContent(this.root))) return; // removing everything from an empty volume
      if (!op.recursive) {
        throw new FailedPreconditionError(`cannot remove "/" from volume "${this.volume}": it is a directory (use: stowage volume rm -r ${this.volume} /)`);
      }
      this.root = new DraftDir(ROOT_ID, undefined, 0, this.now);
      return;
    }
    const notFound = (): NotFoundError =>
      new NotFoundError(`cannot remove "${p}": not found in volume "${this.volume}" (list it with: stowage volume ls ${this.volume} ${parentOf(p) || '/'})`);
    const parent = await this.existingDir(parentOf(p));
    if (!parent) throw notFound();
    const node = await this.child(parent, nameOf(p));
    if (!node || !(await this.present(node))) throw notFound();
    if (!isFile(node) && !op.recursive) {
      throw new FailedPreconditionError(`cannot remove "${p}" from volume "${this.volume}": it is a directory (use: stowage volume rm -r ${this.volume} ${p})`);
    }
    parent.changes.set(nameOf(p), null);
  }

  /** `cp` as `modal volume cp`: several sources, or a dst that is a directory, copy into it. */
  async copy(op: CopyChange): Promise<void> {
    if (op.srcs.length === 0) throw new InvalidArgumentError('copy needs at least one source');
    const dst = normalizePath(op.dst);
    const dstNode = dst === '' ? this.root : await this.resolve(dst);
    const dstIsDir =
      op.dst.endsWith('/') || dst === '' || op.srcs.length > 1 || (dstNode !== undefined && !isFile(dstNode) && (await this.present(dstNode)));
    const added: PutChange[] = [];
    for (const srcRaw of op.srcs) {
      const src = normalizePath(srcRaw);
      const node = src === '' ? this.root : await this.resolve(src);
      if (node && isFile(node)) {
        added.push({ path: normalizeFilePath(dstIsDir ? join(dst, nameOf(src)) : dst), file: node });
        continue;
      }
      if (!node || !(await this.present(node))) {
        throw new NotFoundError(`cannot copy "${src}": not found in volume "${this.volume}" (list it with: stowage volume ls ${this.volume} ${parentOf(src) || '/'})`);
      }
      if (op.filesOnly) {
        throw new FailedPreconditionError(
          `cannot copy "${src || '/'}" in volume "${this.volume}": it is a directory (use: stowage volume cp -r ${this.volume} ${src || '/'} DST)`,
        );
      }
      const target = dstIsDir && src !== '' ? join(dst, nameOf(src)) : dst;
      // Joined paths can outgrow the limits that each part kept.
      for await (const { path, file } of this.filesBelow(node, '')) added.push({ path: normalizeFilePath(join(target, path)), file });
    }
    for (const a of added) await this.put(a);
  }

  async put(change: PutChange): Promise<void> {
    const path = change.path;
    const cut = path.lastIndexOf('/');
    const parentPath = cut < 0 ? '' : path.slice(0, cut);
    const name = path.slice(cut + 1);
    let dir = this.dirs.get(parentPath);
    if (!dir) {
      dir = this.root;
      const parts = parentPath === '' ? [] : parentPath.split('/');
      for (let i = 0; i < parts.length; i++) {
        const part = parts[i]!;
        const node = await this.child(dir, part);
        if (node && isFile(node)) {
          throw new FailedPreconditionError(`cannot write "${path}" in volume "${this.volume}": "${parts.slice(0, i + 1).join('/')}" is a file`);
        }
        dir = node ? this.open(dir, part, node) : this.makeDir(dir, part);
      }
      this.dirs.set(parentPath, dir);
    }
    this.touched.add(dir);
    const existing = await this.child(dir, name);
    let id: number;
    if (existing && !isFile(existing) && (await this.present(existing))) {
      throw new FailedPreconditionError(`cannot write "${path}" in volume "${this.volume}": a directory of that name exists`);
    }
    if (existing && isFile(existing)) {
      if (!this.force) {
        throw new AlreadyExistsError(`"${path}" already exists in volume "${this.volume}" (overwrite it with: stowage volume put -f, or force: true)`);
      }
      id = sameFile(existing, change.file) ? existing.id : this.nextId++;
    } else {
      id = this.nextId++;
    }
    // A directory left empty and now replaced by this file may be a cached parent.
    if (existing && !isFile(existing)) this.dirs.clear();
    const { kind: _k, ...file } = change.file as FileItem;
    dir.changes.set(name, { kind: 'file', ...file, name, id });
  }

  /**
   * Builds now what a commit of millions of files need not hold: the
   * directories this commit made that the puts since the last spill() did not
   * go into, and any directory that has gathered more than FOLD_ENTRIES
   * changes (a flat directory of a million). Their pages go to the sink, their
   * entries are dropped from memory, and what the directory gets afterwards
   * is an edit of what was built. Puts arrive in path order, so such an edit
   * touches the last pages only. Only directories holding no other draft are
   * built (a draft below one stays where puts find it).
   */
  async spill(): Promise<void> {
    for (const d of this.touched) if (d.changes.size > this.foldEntries && isLeaf(d)) await this.fold(d);
    for (const d of this.fresh) if (!this.touched.has(d) && d.changes.size > 0 && isLeaf(d)) await this.fold(d);
    this.touched.clear();
  }

  /** Builds a draft's changes into its base: the draft stays, as a directory with nothing changed yet. */
  private async fold(d: DraftDir): Promise<void> {
    const built = await this.finishDir(d, true);
    d.baseTree = built!.hash;
    d.baseEntries = built!.totals.entries;
    d.baseMtimeMs = this.now;
    d.changes.clear();
    d.seen.clear();
    this.fresh.delete(d);
  }

  /** Writes the drafts as pages (to the sink) and returns the new root. */
  async finish(): Promise<DirRoot> {
    return (await this.finishDir(this.root, true))!;
  }

  // ---- helpers ---------------------------------------------------------------

  /** The entry or draft under `name` in `dir`, as this commit has it so far. */
  private async child(dir: DraftDir, name: string): Promise<Node | undefined> {
    if (dir.changes.has(name)) return dir.changes.get(name) ?? undefined;
    if (dir.seen.has(name)) return dir.seen.get(name);
    const e = dir.baseTree ? await findEntry(this.sink, dir.baseTree, name) : undefined;
    dir.seen.set(name, e);
    return e;
  }

  /** `node` (a directory under `name` in `dir`) as a draft this commit may change. */
  private open(dir: DraftDir, name: string, node: DraftDir | DirItem): DraftDir {
    if (node instanceof DraftDir) return node;
    const d = new DraftDir(node.id, node.tree, node.totals.entries, node.mtimeMs);
    dir.changes.set(name, d);
    return d;
  }

  private makeDir(dir: DraftDir, name: string): DraftDir {
    const d = new DraftDir(this.nextId++, undefined, 0, this.now);
    dir.changes.set(name, d);
    this.fresh.add(d);
    return d;
  }

  /** The directory at `path` as a draft, when there is one (no file in the way). */
  private async existingDir(path: string): Promise<DraftDir | undefined> {
    let dir = this.root;
    if (path === '') return dir;
    for (const part of path.split('/')) {
      const node = await this.child(dir, part);
      if (!node || isFile(node)) return undefined;
      dir = this.open(dir, part, node);
    }
    return dir;
  }

  /** The node at `path` as this commit has it so far, without opening drafts. */
  private async resolve(path: string): Promise<Node | undefined> {
    let node: Node = this.root;
    for (const part of path.split('/')) {
      if (isFile(node)) return undefined;
      const next: Node | undefined = node instanceof DraftDir ? await this.child(node, part) : await findEntry(this.sink, node.tree, part);
      if (!next) return undefined;
      node = next;
    }
    return node;
  }

  /** Whether a node holds anything: a file, or a directory with a file somewhere below. */
  private async present(node: Node): Promise<boolean> {
    return !(node instanceof DraftDir) || (await this.hasContent(node));
  }

  private async hasContent(d: DraftDir): Promise<boolean> {
    let fromBase = d.baseEntries;
    for (const [name, v] of d.changes) {
      if (d.seen.get(name)) fromBase--;
      else if (!d.seen.has(name) && d.baseTree && (await findEntry(this.sink, d.baseTree, name))) fromBase--;
      if (v && (await this.present(v))) return true;
    }
    return fromBase > 0;
  }

  /** Every file below a directory node, with its path relative to it. */
  private async *filesBelow(node: DraftDir | DirItem, prefix: string): AsyncGenerator<{ path: string; file: FileItem }> {
    if (!(node instanceof DraftDir)) {
      for await (const w of walk(this.sink, node.tree, { prefix })) if (w.entry.kind === 'file') yield { path: w.path, file: w.entry };
      return;
    }
    const names = new Set(node.changes.keys());
    const merged: [string, Node][] = [];
    for (const [name, v] of node.changes) if (v) merged.push([name, v]);
    if (node.baseTree) {
      const c = await EntryCursor.open(this.sink, node.baseTree);
      for (let e = await c.entry(); e; e = await c.entry()) {
        if (!names.has(e.name)) merged.push([e.name, e]);
        await c.next();
      }
    }
    merged.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    for (const [name, v] of merged) {
      const path = join(prefix, name);
      if (isFile(v)) yield { path, file: v };
      else yield* this.filesBelow(v, path);
    }
  }

  /** A draft as pages; null for a directory left empty (but the root, which may be empty). */
  private async finishDir(d: DraftDir, isRoot = false): Promise<DirRoot | null> {
    const changes = new Map<string, Entry | null>();
    for (const [name, v] of d.changes) {
      if (v === null) changes.set(name, null);
      else if (v instanceof DraftDir) {
        const sub = await this.finishDir(v);
        changes.set(name, sub === null ? null : dirItem(v, name, sub, this.now));
      } else changes.set(name, v);
    }
    let out: DirRoot;
    if (d.baseTree) out = await editDirectory(this.sink, d.baseTree, changes);
    else {
      const entries = [...changes.values()].filter((e): e is Entry => e !== null);
      entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      out = buildDirectory(this.sink, entries);
    }
    return out.totals.entries === 0 && !isRoot ? null : out;
  }
}

/** A directory's changes past which spill() builds them into pages, by default. */
const FOLD_ENTRIES = 16_384;

function isLeaf(d: DraftDir): boolean {
  for (const v of d.changes.values()) if (v instanceof DraftDir) return false;
  return true;
}

function isFile(n: Node): n is FileItem {
  return !(n instanceof DraftDir) && n.kind === 'file';
}

function dirItem(d: DraftDir, name: string, root: DirRoot, now: number): DirItem {
  // An unchanged subtree keeps its mtime, so that its entry (and the pages above) stay the same.
  const mtimeMs = root.hash === d.baseTree ? d.baseMtimeMs : now;
  return { kind: 'dir', name, id: d.id, mtimeMs, tree: root.hash, totals: root.totals };
}
