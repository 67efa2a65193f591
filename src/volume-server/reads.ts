/**
 * Reads of one version: stat, listings (paged), a file's entry, and glob
 * matches for the compute bridge. Each walks from the version's root to what
 * it needs, loading only the pages on its way (src/tree/read.ts); none loads a
 * whole version. A damaged or missing tree object fails the read with an
 * IntegrityError that names the path and version being read.
 */
import picomatch from 'picomatch';
import { FailedPreconditionError, InvalidArgumentError, NotFoundError } from '../common/errors.js';
import { normalizePath } from '../common/validate.js';
import { FileType, type FileEntry } from '../gen/stowage/v1/volume.js';
import type { Entry } from '../tree/format.js';
import { atPath, EntryCursor, lookupPath, walk, type TreeSource } from '../tree/read.js';
import { ROOT_ID } from './versions.js';

/** One version of one volume, as reads need it. */
export interface VersionView {
  volume: string;
  /** 0 for a volume without versions (then root is undefined: nothing in it). */
  version: number;
  root: string | undefined;
  createdAtMs: number;
}

/** Entries per message of a listing stream. */
export const LIST_BATCH = 1000;

export function toFileEntry(path: string, e: Entry, withExtents = true): FileEntry {
  if (e.kind === 'dir') {
    return { path, type: FileType.FILE_TYPE_DIRECTORY, size: 0, mode: 0o755, mtimeMs: e.mtimeMs, extents: [], id: e.id, tree: e.tree };
  }
  // Extents are immutable once decoded: shared, not copied.
  return { path, type: FileType.FILE_TYPE_FILE, size: e.size, mode: e.mode, mtimeMs: e.mtimeMs, extents: withExtents ? e.extents : [], id: e.id, tree: '' };
}

function rootEntry(v: VersionView): FileEntry {
  return { path: '', type: FileType.FILE_TYPE_DIRECTORY, size: 0, mode: 0o755, mtimeMs: v.createdAtMs, extents: [], id: ROOT_ID, tree: v.root ?? '' };
}

export function notFoundPath(volume: string, path: string, version: number): NotFoundError {
  const parent = path.includes('/') ? path.slice(0, path.lastIndexOf('/')) : '';
  return new NotFoundError(`"${path}" not found in volume "${volume}" at version ${version} (list it with: stowage volume ls ${volume} ${parent || '/'})`);
}

const what = (v: VersionView, path: string): string => `reading "${path || '/'}" of volume "${v.volume}" at version ${v.version}`;

/** The entry at `path` ('' is the root directory); NOT_FOUND when there is none. */
export async function statPath(src: TreeSource, v: VersionView, rawPath: string): Promise<FileEntry> {
  const path = normalizePath(rawPath);
  if (path === '') return rootEntry(v);
  if (!v.root) throw notFoundPath(v.volume, path, v.version);
  const root = v.root;
  const hit = await atPath(what(v, path), () => lookupPath(src, root, path.split('/')));
  if (!('found' in hit)) throw notFoundPath(v.volume, path, v.version);
  return toFileEntry(path, hit.found);
}

/** The file at `path`; FAILED_PRECONDITION for a directory. */
export async function fileAt(src: TreeSource, v: VersionView, path: string): Promise<FileEntry> {
  const e = await statPath(src, v, path);
  if (e.type !== FileType.FILE_TYPE_FILE) throw new FailedPreconditionError(`"${e.path}" in volume "${v.volume}" is a directory, not a file`);
  return e;
}

interface PageToken {
  /** The version the listing reads (a later page reads the same one). */
  v: number;
  p: string;
  r: boolean;
  /** The last name (or path, recursive) listed. */
  a: string;
}

function encodeToken(t: PageToken): string {
  return Buffer.from(JSON.stringify(t)).toString('base64url');
}

/** The page token of a listing, checked against the request it continues. */
export function decodeToken(token: string, path: string, recursive: boolean): PageToken {
  let t: PageToken;
  try {
    t = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as PageToken;
  } catch {
    throw new InvalidArgumentError('invalid page token: pass back the next_page_token of the listing it continues');
  }
  // The token holds the path as the listing normalised it ('dir' for '/dir/').
  if (typeof t !== 'object' || t === null || typeof t.v !== 'number' || typeof t.a !== 'string' || t.p !== normalizePath(path) || t.r !== recursive) {
    throw new InvalidArgumentError('invalid page token: it belongs to another listing (path or recursion differ)');
  }
  return t;
}

export interface ListBatch {
  entries: FileEntry[];
  /** On the last batch when the page ended before the listing did. */
  nextPageToken?: string;
}

/**
 * The entries at or below `path`: a file lists itself; a directory lists
 * what is in it, or (recursive) everything below it depth first. At most
 * `pageSize` entries (0: all), continuing after `after` (from a page token).
 */
export async function* listPath(
  src: TreeSource,
  v: VersionView,
  rawPath: string,
  recursive: boolean,
  pageSize: number,
  after: string | undefined,
  withExtents = true,
): AsyncGenerator<ListBatch> {
  const path = normalizePath(rawPath);
  const top = await statPath(src, v, path);
  if (top.type === FileType.FILE_TYPE_FILE) {
    if (after === undefined) yield { entries: [withExtents ? top : { ...top, extents: [] }] };
    return;
  }
  if (!v.root) return;
  const tree = top.tree;
  const join = (rel: string): string => (path === '' ? rel : `${path}/${rel}`);
  let batch: FileEntry[] = [];
  let listed = 0;
  let last: string | undefined;
  const items: AsyncIterator<{ rel: string; entry: Entry }[]> = recursive
    ? chunked(walk(src, tree, { after }))[Symbol.asyncIterator]()
    : leafRuns(src, tree, after)[Symbol.asyncIterator]();
  for (;;) {
    const next = await atPath(what(v, path), () => items.next());
    if (next.done) break;
    for (const { rel, entry } of next.value) {
      if (pageSize > 0 && listed === pageSize) {
        // One more exists: the page ends here.
        yield { entries: batch, nextPageToken: encodeToken({ v: v.version, p: path, r: recursive, a: last! }) };
        await items.return?.(undefined);
        return;
      }
      batch.push(toFileEntry(join(rel), entry, withExtents));
      listed++;
      last = rel;
      if (batch.length >= LIST_BATCH) {
        yield { entries: batch };
        batch = [];
      }
    }
  }
  if (batch.length) yield { entries: batch };
}

/** A walk in runs of up to LIST_BATCH items, so that a listing awaits once per run, not once per entry. */
async function* chunked(it: AsyncIterable<{ path: string; entry: Entry }>): AsyncGenerator<{ rel: string; entry: Entry }[]> {
  let run: { rel: string; entry: Entry }[] = [];
  for await (const w of it) {
    run.push({ rel: w.path, entry: w.entry });
    if (run.length >= LIST_BATCH) {
      yield run;
      run = [];
    }
  }
  if (run.length) yield run;
}

/** A directory's entries after `after`, a leaf page's worth at a time. */
async function* leafRuns(src: TreeSource, dir: string, after: string | undefined): AsyncGenerator<{ rel: string; entry: Entry }[]> {
  const c = await EntryCursor.open(src, dir, after);
  for (let run = await c.takeLeaf(); run.length > 0; run = await c.takeLeaf()) yield run.map((e) => ({ rel: e.name, entry: e }));
}

/** A file matched by a glob, with its extents. */
export interface MatchedFile {
  path: string;
  extents: { hash: string; length: number }[];
}

/**
 * Files a glob matches ('' or a path without glob characters: that file, or
 * everything below that directory). The walk starts at the deepest directory
 * the glob names literally and goes no further down than the glob can match.
 */
export async function matchGlob(src: TreeSource, v: VersionView, glob: string): Promise<MatchedFile[]> {
  if (!v.root) return [];
  const scan = picomatch.scan(glob);
  const out: MatchedFile[] = [];
  const add = (path: string, e: Entry): void => {
    if (e.kind === 'file') out.push({ path, extents: e.extents.map((x) => ({ hash: x.hash, length: x.length })) });
  };
  const literal = scan.isGlob ? scan.base : glob;
  let base: FileEntry;
  try {
    base = await statPath(src, v, literal);
  } catch (err) {
    if (err instanceof NotFoundError || err instanceof InvalidArgumentError) return [];
    throw err;
  }
  const basePath = base.path;
  if (base.type === FileType.FILE_TYPE_FILE) {
    if (!scan.isGlob || picomatch(glob, { dot: true })(basePath)) out.push({ path: basePath, extents: base.extents.map((x) => ({ hash: x.hash, length: x.length })) });
    return out;
  }
  const matcher = scan.isGlob ? picomatch(glob, { dot: true }) : () => true;
  // A glob without '**' matches at a fixed depth: nothing below that depth is walked.
  const maxDepth = scan.isGlob && !glob.includes('**') ? glob.split('/').length : Infinity;
  const prefix = basePath;
  await atPath(what(v, glob), async () => {
    for await (const w of walk(src, base.tree, { prefix, prune: (p) => p.split('/').length >= maxDepth })) {
      if (matcher(w.path)) add(w.path, w.entry);
    }
  });
  return out;
}
