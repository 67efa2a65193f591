/**
 * A plain in-memory model of a volume, for test/volume-model.test.ts. A
 * version is a map from path to file (bytes and mode); directories are only
 * implied by the paths of files. Each change is a pure function from one
 * version to the next, with the rules README ("CLI reference", "SDK") and
 * src/volume-server/file-ops.ts give:
 *
 * - a volume is a tree: no file where a directory is, no directory under a file;
 * - a put onto an existing file needs force;
 * - a batch applies its removals first, then its puts (uploaded files, then
 *   files put from existing entries), each in the order given;
 * - a removal of a missing path is NOT_FOUND, of a directory without
 *   recursive FAILED_PRECONDITION; removing the root of an empty volume is a no-op;
 * - cp as `modal volume cp`: several sources, a dst ending in '/', the root,
 *   or a dst that is a directory, copy into dst; otherwise the copy is dst.
 *
 * A change that breaks a rule throws Refusal with the code the SDK must fail
 * with, and the version stays as it was. When several puts of one change
 * break rules, the server stops at the first in an order of its own (today
 * the batch's order, or for cp the paths' sorted order), so the model names
 * the codes of all of them and any one is right.
 */
import type { ErrorCode } from '../../src/common/errors.js';

export interface ModelFile {
  readonly data: Buffer;
  readonly mode: number;
}

/** One version: file path (no leading '/', '' is the root) → file. */
export type Tree = ReadonlyMap<string, ModelFile>;

export class Refusal extends Error {
  /** The codes the SDK may fail with (one, unless several puts break rules). */
  readonly codes: readonly ErrorCode[];
  constructor(codes: ErrorCode | ErrorCode[], message: string) {
    super(message);
    this.codes = typeof codes === 'string' ? [codes] : codes;
  }
}

export interface Remove {
  path: string;
  recursive: boolean;
}

export interface Put {
  path: string;
  file: ModelFile;
}

export interface Batch {
  force: boolean;
  removes: Remove[];
  /** Files uploaded with putFile, in order. */
  puts: Put[];
  /** Files put with putExisting (no bytes move), in order; applied after `puts`. */
  existing: Put[];
}


export function parentOf(path: string): string {
  const i = path.lastIndexOf('/');
  return i < 0 ? '' : path.slice(0, i);
}

export function join(dir: string, name: string): string {
  return dir === '' ? name : `${dir}/${name}`;
}

export function basename(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

/** Directories above `path`, nearest first, without the root. */
export function ancestors(path: string): string[] {
  const out: string[] = [];
  for (let p = parentOf(path); p !== ''; p = parentOf(p)) out.push(p);
  return out;
}

/** Paths of the files below directory `dir` ('' is the root: every file). */
export function filesUnder(tree: Tree, dir: string): string[] {
  const prefix = dir === '' ? '' : `${dir}/`;
  return [...tree.keys()].filter((p) => p.startsWith(prefix));
}

/** Every directory the files imply, without the root, sorted. */
export function directories(tree: Tree): string[] {
  const dirs = new Set<string>();
  for (const p of tree.keys()) for (const d of ancestors(p)) dirs.add(d);
  return [...dirs].sort();
}

export function kindOf(tree: Tree, path: string): 'file' | 'directory' | undefined {
  if (path === '') return 'directory';
  if (tree.has(path)) return 'file';
  return filesUnder(tree, path).length > 0 ? 'directory' : undefined;
}

function remove(files: Map<string, ModelFile>, { path, recursive }: Remove): void {
  if (path !== '' && files.delete(path)) return;
  const inside = filesUnder(files, path);
  if (inside.length === 0) {
    if (path === '') return;
    throw new Refusal('NOT_FOUND', `remove "${path}": not found`);
  }
  if (!recursive) throw new Refusal('FAILED_PRECONDITION', `remove "${path}": a directory, without recursive`);
  for (const p of inside) files.delete(p);
}

function put(files: Map<string, ModelFile>, { path, file }: Put, force: boolean): void {
  if (filesUnder(files, path).length > 0) {
    throw new Refusal('FAILED_PRECONDITION', `put "${path}": a directory of that name exists`);
  }
  const fileAbove = ancestors(path).find((d) => files.has(d));
  if (fileAbove !== undefined) throw new Refusal('FAILED_PRECONDITION', `put "${path}": "${fileAbove}" is a file`);
  if (files.has(path) && !force) throw new Refusal('ALREADY_EXISTS', `put "${path}": exists, without force`);
  files.set(path, file);
}

/** The puts of one change, in order; past a broken rule, to collect every code the change may fail with. */
function putAll(files: Map<string, ModelFile>, puts: Put[], force: boolean): void {
  const broken: Refusal[] = [];
  for (const p of puts) {
    try {
      put(files, p, force);
    } catch (err) {
      if (!(err instanceof Refusal)) throw err;
      broken.push(err);
    }
  }
  if (broken.length > 0) {
    throw new Refusal([...new Set(broken.flatMap((b) => b.codes))], broken.map((b) => b.message).join('; '));
  }
}

/** BatchUpload.commit(): removals, then puts. */
export function commitBatch(tree: Tree, batch: Batch): Tree {
  const targets = [...batch.puts, ...batch.existing];
  if (!batch.force) {
    // The SDK checks before anything moves: an existing file that none of the
    // batch's removals names (the server applies them first) is ALREADY_EXISTS.
    const named = (p: string): boolean => batch.removes.some((r) => r.path === p || (r.recursive && (r.path === '' || p.startsWith(`${r.path}/`))));
    const clash = targets.find((t) => tree.has(t.path) && !named(t.path));
    if (clash) throw new Refusal('ALREADY_EXISTS', `put "${clash.path}": exists, without force`);
  }
  const files = new Map(tree);
  for (const r of batch.removes) remove(files, r);
  putAll(files, targets, batch.force);
  return files;
}

/** Volume.removeFile(): one removal as its own version. */
export function removePath(tree: Tree, r: Remove): Tree {
  const files = new Map(tree);
  remove(files, r);
  return files;
}

/**
 * Volume.copyFiles(srcs, dst): `dst` is the path as given, where a trailing
 * '/' means "into"; `srcs` and `dst` otherwise without leading or trailing '/'.
 */
export function copy(tree: Tree, srcs: string[], dstRaw: string, force: boolean): Tree {
  const dst = dstRaw.replace(/\/+$/, '');
  const dstIsDir = dstRaw.endsWith('/') || dst === '' || srcs.length > 1 || kindOf(tree, dst) === 'directory';
  const added: Put[] = [];
  for (const src of srcs) {
    const file = src === '' ? undefined : tree.get(src);
    if (file) {
      added.push({ path: dstIsDir ? join(dst, basename(src)) : dst, file });
      continue;
    }
    const inside = filesUnder(tree, src);
    if (inside.length === 0) throw new Refusal('NOT_FOUND', `copy "${src}": not found`);
    const target = dstIsDir && src !== '' ? join(dst, basename(src)) : dst;
    const cut = src === '' ? 0 : src.length + 1;
    for (const p of inside) added.push({ path: join(target, p.slice(cut)), file: tree.get(p)! });
  }
  const files = new Map(tree);
  putAll(files, added, force);
  return files;
}

/** What listing shows of a file or a directory, as one comparable line. */
export function line(type: 'file' | 'directory', path: string, size = 0, mode = 0): string {
  return type === 'file' ? `file ${path} (${size} bytes, mode ${mode.toString(8)})` : `dir  ${path}`;
}

/** listdir('/', { recursive: true }): every directory and file, sorted. */
export function listAll(tree: Tree): string[] {
  const out = directories(tree).map((d) => line('directory', d));
  for (const [p, f] of tree) out.push(line('file', p, f.data.length, f.mode));
  return out.sort();
}

/** listdir(path): a directory's entries, or the file itself; NOT_FOUND when neither. */
export function listDir(tree: Tree, path: string): string[] {
  const file = path === '' ? undefined : tree.get(path);
  if (file) return [line('file', path, file.data.length, file.mode)];
  const inside = filesUnder(tree, path);
  if (inside.length === 0 && path !== '') throw new Refusal('NOT_FOUND', `list "${path}": not found`);
  const cut = path === '' ? 0 : path.length + 1;
  const out = new Set<string>();
  for (const p of inside) {
    const rest = p.slice(cut);
    const slash = rest.indexOf('/');
    if (slash < 0) out.add(line('file', p, tree.get(p)!.data.length, tree.get(p)!.mode));
    else out.add(line('directory', p.slice(0, cut + slash)));
  }
  return [...out].sort();
}

/** stat(path). */
export function statPath(tree: Tree, path: string): string {
  const kind = kindOf(tree, path);
  if (kind === undefined) throw new Refusal('NOT_FOUND', `stat "${path}": not found`);
  const file = tree.get(path);
  return file ? line('file', path, file.data.length, file.mode) : line('directory', path);
}

/** readBytes(path). */
export function readPath(tree: Tree, path: string): Buffer {
  const file = path === '' ? undefined : tree.get(path);
  if (file) return file.data;
  if (kindOf(tree, path) === 'directory') throw new Refusal('FAILED_PRECONDITION', `read "${path}": a directory`);
  throw new Refusal('NOT_FOUND', `read "${path}": not found`);
}
