/**
 * What the SDK accepts from a server. gRPC runs in cleartext, so anyone on the
 * network path can answer in the server's place: every path, mode, size,
 * extent and URL map a server sends is checked here, with the rules the
 * server itself applies to what it stores (common/validate.ts), before the
 * client lets it near the local disk or sizes a buffer by it.
 *
 * Invariants of what these functions return (test/client-trust.test.ts):
 * - paths are canonical (normalizePath: NFC, no '..', no NUL, within the
 *   limits) and lie below the directory that was asked for;
 * - modes are permission bits only (fileMode): no setuid, setgid or sticky bit;
 * - a file's extents are well-formed (64-hex hashes, whole non-negative
 *   offsets, lengths up to MAX_BLOB_BYTES) and add up to its size;
 * - URL maps hold only blobs that were asked for.
 * An answer that breaks one is refused whole with an IntegrityError naming
 * (a bounded quote of) what was wrong; nothing of it is used.
 */
import { IntegrityError, StowageError, messageOf } from '../common/errors.js';
import { HASH, MAX_BLOB_BYTES, fileMode, normalizePath } from '../common/validate.js';
import { quote } from '../common/quote.js';
import { FileType, type Extent, type FileEntry, type PlanUploadResponse } from '../gen/stowage/v1/volume.js';

const ADVICE = 'nothing of that answer was used; check that the server address names a stowage server you trust (traffic to it is not encrypted)';

function refused(what: string, why: string): IntegrityError {
  return new IntegrityError(`refused the server's answer to ${what}: ${why}; ${ADVICE}`);
}

/** A path as the server sent it, canonical; refused when the server itself would refuse it. */
function checkedPath(path: string, what: string): string {
  try {
    return normalizePath(path);
  } catch (err) {
    const why = (err instanceof StowageError ? err.message : messageOf(err)).replace(/^invalid path( "(?:[^"\\]|\\.)*"…?)?: /, '');
    throw refused(what, `it names ${quote(String(path))}, not a valid volume path (${why})`);
  }
}

function wholeBytes(n: number, max = Number.MAX_SAFE_INTEGER): boolean {
  return Number.isSafeInteger(n) && n >= 0 && n <= max;
}

function checkedExtent(x: Extent, path: string, what: string): Extent {
  for (const [name, hash] of [['blob', x.blob], ['hash', x.hash]] as const) {
    if (typeof hash !== 'string' || !HASH.test(hash)) {
      throw refused(what, `file ${quote(path)} has an extent whose ${name} ${quote(String(hash))} is not a SHA-256 (64 lowercase hex digits)`);
    }
  }
  if (!wholeBytes(x.offset, MAX_BLOB_BYTES) || !wholeBytes(x.length, MAX_BLOB_BYTES) || x.offset + x.length > MAX_BLOB_BYTES) {
    throw refused(
      what,
      `file ${quote(path)} has an extent at offset ${x.offset} of ${x.length} bytes, outside any blob (blobs hold at most ${MAX_BLOB_BYTES} bytes)`,
    );
  }
  return { blob: x.blob, offset: x.offset, length: x.length, hash: x.hash };
}

/**
 * One entry, checked: canonical path, a known type, mode masked, extents that
 * add up to the size (or none at all, when they were not asked for).
 */
export function checkedEntry(e: FileEntry | undefined, what: string, withExtents = true): FileEntry {
  if (!e) throw refused(what, 'it holds no file entry');
  const path = checkedPath(e.path, what);
  if (e.type !== FileType.FILE_TYPE_FILE && e.type !== FileType.FILE_TYPE_DIRECTORY) {
    throw refused(what, `${quote(path)} has an unknown file type ${String(e.type)}`);
  }
  if (e.type === FileType.FILE_TYPE_FILE && path === '') throw refused(what, 'it holds a file without a name');
  if (!wholeBytes(e.size)) throw refused(what, `${quote(path)} has a size of ${e.size} bytes`);
  // Extents that were not asked for are dropped, unread.
  const extents = withExtents ? e.extents.map((x) => checkedExtent(x, path, what)) : [];
  if (e.type === FileType.FILE_TYPE_FILE && withExtents) {
    const total = extents.reduce((n, x) => n + x.length, 0);
    if (total !== e.size) throw refused(what, `file ${quote(path)} is ${e.size} bytes but its extents hold ${total}`);
  }
  if (!wholeBytes(e.id)) throw refused(what, `${quote(path)} has an invalid inode id`);
  if (e.tree !== '' && (e.type !== FileType.FILE_TYPE_DIRECTORY || !/^[0-9a-f]{64}$/.test(e.tree))) {
    throw refused(what, `${quote(path)} names an invalid tree object`);
  }
  return { path, type: e.type, size: e.size, mode: fileMode(e.mode), mtimeMs: Number.isSafeInteger(e.mtimeMs) ? e.mtimeMs : 0, extents, id: e.id, tree: e.tree };
}

/** The entry a Stat or GetFile answered for `path` (already normalised): it must be that path. */
export function checkedEntryAt(e: FileEntry | undefined, path: string, what: string, type?: FileType): FileEntry {
  const entry = checkedEntry(e, what);
  if (entry.path !== path) throw refused(what, `it describes ${quote(entry.path)} instead of ${quote(path)}`);
  if (type !== undefined && entry.type !== type) throw refused(what, `${quote(path)} is not a file`);
  return entry;
}

/**
 * A ListFiles answer for `dir` (already normalised): every entry strictly
 * below it (directly in it unless `recursive`), each path once. A listing of a
 * file is that one file.
 */
export function checkedListing(entries: FileEntry[], dir: string, recursive: boolean, what: string): FileEntry[] {
  return new ListingCheck(dir, recursive, what).batch(entries);
}

/**
 * checkedListing over a listing that streams in batches. The server lists in
 * depth-first name order (a directory before what is in it), so each path must
 * come after the one before it in that order: that catches a path listed twice
 * without remembering every path of a listing of millions.
 */
export class ListingCheck {
  private readonly prefix: string;
  private last: string[] | undefined;
  private fileOnly = false;

  constructor(
    private readonly dir: string,
    private readonly recursive: boolean,
    private readonly what: string,
    /** false: the listing was asked for without files' extents. */
    private readonly withExtents = true,
  ) {
    this.prefix = dir === '' ? '' : `${dir}/`;
  }

  batch(entries: FileEntry[]): FileEntry[] {
    const { dir, prefix, what } = this;
    return entries.map((raw) => {
      const e = checkedEntry(raw, what, this.withExtents);
      if (this.fileOnly) throw refused(what, `it lists ${quote(raw.path)} after the file ${quote(dir)} itself`);
      const onlyTheFile = e.path === dir && dir !== '' && e.type === FileType.FILE_TYPE_FILE && this.last === undefined;
      if (onlyTheFile) {
        this.fileOnly = true;
        return e;
      }
      if (!e.path.startsWith(prefix) || e.path === dir) {
        throw refused(what, `it lists ${quote(raw.path)}, which is not below ${quote(dir || '/')}`);
      }
      if (!this.recursive && e.path.slice(prefix.length).includes('/')) {
        throw refused(what, `it lists ${quote(raw.path)}, which is not directly in ${quote(dir || '/')}`);
      }
      const parts = e.path.split('/');
      if (this.last && !after(parts, this.last)) throw refused(what, `it lists ${quote(raw.path)} twice, or out of order`);
      this.last = parts;
      return e;
    });
  }
}

/** Whether path `a` comes after `b` depth first in name order (a directory before what is in it). */
function after(a: string[], b: string[]): boolean {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    if (a[i] !== b[i]) return a[i]! > b[i]!;
  }
  return a.length > b.length;
}

/**
 * URLs by blob, as GetFile, PresignBlobs and PlanUpload answer them: only
 * blobs that were asked for (whether a URL may be used at all is
 * BlobTransport's decision).
 */
export function checkedUrls(urls: Record<string, string>, asked: Iterable<string>, what: string): Record<string, string> {
  const wanted = new Set(asked);
  const out: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const [blob, url] of Object.entries(urls)) {
    if (!wanted.has(blob)) throw refused(what, `it holds a URL for ${quote(blob)}, which was not asked for`);
    if (typeof url !== 'string') throw refused(what, `the URL for blob ${blob.slice(0, 16)}… is not a string`);
    out[blob] = url;
  }
  return out;
}

/**
 * A PlanUpload answer: missing blobs and URLs only among those asked for; a
 * known content only as an extent of exactly that content (its hash and its
 * length; `contents` maps each content hash asked about to its length).
 */
export function checkedPlan(plan: PlanUploadResponse, blobs: string[], contents: Map<string, number>, what: string): PlanUploadResponse {
  const askedBlobs = new Set(blobs);
  for (const b of plan.missingBlobs) {
    if (!askedBlobs.has(b)) throw refused(what, `it says ${quote(b)} is missing, which was not asked about`);
  }
  const putUrls = checkedUrls(plan.putUrls, plan.missingBlobs, what);
  const knownContents: Record<string, Extent> = Object.create(null) as Record<string, Extent>;
  for (const [hash, x] of Object.entries(plan.knownContents)) {
    const length = contents.get(hash);
    if (length === undefined) throw refused(what, `it knows content ${quote(hash)}, which was not asked about`);
    const extent = checkedExtent(x, `content ${hash.slice(0, 16)}…`, what);
    if (extent.hash !== hash || extent.length !== length) {
      throw refused(what, `it places content ${hash.slice(0, 16)}… (${length} bytes) at an extent of other bytes (${extent.hash.slice(0, 16)}…, ${extent.length} bytes)`);
    }
    knownContents[hash] = extent;
  }
  return { missingBlobs: plan.missingBlobs, putUrls, knownContents };
}
