/**
 * The read side: a file's extents are fetched `parallel` at a time, verified
 * against their hashes, and handed out in order. Downloading a tree groups
 * small files by the pack that holds them, so that each pack is read once.
 *
 * A big file's chunks fetched by a presigned URL (or from the local
 * store's chunk file) go through the fetch threads when there are any
 * (fetch-pool.ts): the thread fetches, checks the hash and writes the chunk
 * at its place in the temporary file, and this thread only plans. A chunk
 * that fails there (unreachable store, mismatching bytes, a thread that died)
 * is read again here, the way a download without threads reads it
 * (BlobTransport.readExtent: the fallback to the server's stream, the damage
 * report), so the threads change where the work runs, never the outcome.
 *
 * Where files land is the client's decision, not the server's: a tree's
 * files go only below the target directory (downloadTargets), directories
 * below it are created one at a time and never followed when they are
 * symlinks, each file is written to a new temporary file in its directory
 * (O_EXCL | O_NOFOLLOW) and renamed over its name, and its mode is
 * permission bits only (fileMode).
 */
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, mkdir, open, realpath, rename, rm, type FileHandle } from 'node:fs/promises';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import pLimit from 'p-limit';
import { FailedPreconditionError, IntegrityError } from '../common/errors.js';
import { fileMode } from '../common/validate.js';
import { quote } from '../common/quote.js';
import { FileType, type Extent, type FileEntry } from '../gen/stowage/v1/volume.js';
import { type BlobTransport, type FileRef } from './blob-transport.js';
import type { BufferPool } from './buffer-pool.js';
import { sourceOf } from './fetch-job.js';
import { FetchPool } from './fetch-pool.js';
import type { TransferProgress } from './upload.js';

/** A request for part of a file: the extents that overlap it, trimmed. */
interface Piece {
  extent: Extent;
  /** Where in the verified extent the wanted bytes start and end. */
  from: number;
  to: number;
}

export function piecesFor(entry: FileEntry, offset: number, length: number): Piece[] {
  const end = Math.min(entry.size, offset + length);
  const out: Piece[] = [];
  let pos = 0;
  for (const e of entry.extents) {
    const eEnd = pos + e.length;
    if (eEnd > offset && pos < end) {
      out.push({ extent: e, from: Math.max(0, offset - pos), to: Math.min(e.length, end - pos) });
    }
    pos = eEnd;
    if (pos >= end) break;
  }
  return out;
}

/**
 * Yields the bytes of [offset, offset+length) of a file, in order, verified.
 * With a pool, pieces are read into pooled buffers: the consumer must release
 * each yielded buffer's extent buffer (pool.release) once done with it.
 */
export async function* readPieces(
  transport: BlobTransport,
  pieces: Piece[],
  getUrls: Record<string, string>,
  parallel: number,
  what: string,
  pool?: BufferPool,
  file?: FileRef,
): AsyncIterable<Buffer> {
  const window: Promise<Buffer>[] = [];
  let next = 0;
  const fill = () => {
    while (window.length < parallel && next < pieces.length) {
      const p = pieces[next++]!;
      const fetched = transport.readExtent(p.extent, getUrls[p.extent.blob], what, pool?.acquire(p.extent.length), file);
      fetched.catch(() => undefined); // surfaced when awaited in order
      window.push(fetched);
    }
  };
  fill();
  let i = 0;
  while (window.length > 0) {
    const data = await window.shift()!;
    const p = pieces[i++]!;
    fill();
    yield p.from === 0 && p.to === data.length ? data : data.subarray(p.from, p.to);
  }
}

export interface DownloadTarget {
  entry: FileEntry;
  /** Absolute. */
  localPath: string;
  /** The directory the file must stay inside; directories between it and the file are created, never followed as symlinks. */
  within: string;
}

/**
 * Where the files of `remoteRoot` (a file, or a directory whose recursive
 * listing is `entries`, both checked by server-answers.ts) land below
 * `localPath`: a file at localPath itself, a directory's files at their
 * relative paths below it. A path that would resolve outside is refused.
 */
export function downloadTargets(remoteRoot: string, rootEntry: FileEntry, entries: FileEntry[], localPath: string): DownloadTarget[] {
  const base = resolve(localPath);
  if (rootEntry.type === FileType.FILE_TYPE_FILE) return [{ entry: rootEntry, localPath: base, within: dirname(base) }];
  const prefix = remoteRoot === '' ? '' : `${remoteRoot}/`;
  return entries
    .filter((e) => e.type === FileType.FILE_TYPE_FILE)
    .map((entry) => {
      const rel = entry.path.startsWith(prefix) ? entry.path.slice(prefix.length) : '';
      const local = resolve(base, ...rel.split('/'));
      if (rel === '' || !local.startsWith(base + sep)) {
        throw new IntegrityError(
          `refused to download ${quote(entry.path)}: it would land outside ${JSON.stringify(base)}, and nothing is written outside the target directory`,
        );
      }
      return { entry, localPath: local, within: base };
    });
}

/**
 * Writes files to local paths. Each file is written to a temporary name and
 * renamed when whole, so an interrupted download leaves no partial file.
 * Extents that share a blob (small files in one pack) are fetched with one
 * ranged read of the blob.
 */
export async function downloadFiles(
  transport: BlobTransport,
  volume: string,
  version: number,
  targets: DownloadTarget[],
  getUrls: Record<string, string>,
  parallel: number,
  pool: BufferPool,
  onProgress?: (p: TransferProgress) => void,
  fetchThreads = 0,
): Promise<{ bytesTransferred: number; chunksTransferred: number }> {
  const progress: TransferProgress = {
    filesDone: 0,
    filesTotal: targets.length,
    bytesDone: 0,
    bytesTotal: targets.reduce((n, t) => n + t.entry.size, 0),
    bytesTransferred: 0,
  };
  let chunksTransferred = 0;
  const report = () => onProgress?.({ ...progress });
  const label = (path: string) => `"${path}" in volume "${volume}"`;
  const dirs = new LocalDirs();

  // Group the extents of single-extent files by blob; big files go alone.
  const byBlob = new Map<string, DownloadTarget[]>();
  const large: DownloadTarget[] = [];
  for (const t of targets) {
    const first = t.entry.extents[0];
    if (t.entry.extents.length === 1 && first && first.blob !== first.hash) {
      const g = byBlob.get(first.blob) ?? [];
      g.push(t);
      byBlob.set(first.blob, g);
    } else {
      large.push(t);
    }
  }
  const limit = pLimit(parallel);
  const tasks: Promise<void>[] = [];
  for (const [blob, group] of byBlob) {
    tasks.push(
      limit(async () => {
        // A loop, not Math.min(...group): a blob may be shared by more files than a call takes arguments.
        let start = Infinity;
        let end = 0;
        for (const t of group) {
          const e = t.entry.extents[0]!;
          start = Math.min(start, e.offset);
          end = Math.max(end, e.offset + e.length);
        }
        const url = getUrls[blob];
        const fileOf = (t: DownloadTarget): FileRef => ({ volume, path: t.entry.path, version });
        let span: Buffer;
        try {
          span = await transport.read(blob, start, end - start, url);
        } catch (err) {
          // The blob holds every file of the group: the first one names it.
          const first = group[0]!;
          throw await transport.readFailure(err, first.entry.extents[0]!, label(first.entry.path), fileOf(first));
        }
        chunksTransferred++;
        progress.bytesTransferred += span.length;
        for (const t of group) {
          const e = t.entry.extents[0]!;
          const data = await transport.verified(span.subarray(e.offset - start, e.offset - start + e.length), e, url, label(t.entry.path), fileOf(t));
          await writeWhole(dirs, t, [data]);
          progress.bytesDone += data.length;
          progress.filesDone++;
        }
        report();
      }),
    );
  }
  await settle(tasks);
  // Each large file already reads `parallel` extents ahead; a few files at a
  // time keep many medium-sized files from going one by one. The fetch
  // threads live as long as this download (jobs across them add up to
  // `parallel` transfers in flight).
  const fileLimit = pLimit(Math.max(1, Math.ceil(parallel / 4)));
  const fetches = large.length > 0 && fetchThreads > 0 ? new FetchPool(fetchThreads, Math.ceil(parallel / fetchThreads)) : undefined;
  try {
    await settle(large.map((t) => fileLimit(() => downloadLarge(t))));
  } finally {
    await fetches?.close();
  }
  return { bytesTransferred: progress.bytesTransferred, chunksTransferred };

  async function downloadLarge(t: DownloadTarget): Promise<void> {
    const { fh, tmp } = await createTemp(dirs, t);
    try {
      if (fetches) await fetchLarge(t, fh);
      else await readLarge(t, fh);
      await fh.close();
      await rename(tmp, t.localPath);
    } catch (err) {
      await fh.close().catch(() => undefined);
      await rm(tmp, { force: true });
      throw err;
    }
    progress.filesDone++;
    report();
  }

  /** The file's extents read in order here, `parallel` ahead, each written as it comes. */
  async function readLarge(t: DownloadTarget, fh: FileHandle): Promise<void> {
    let pos = 0;
    for await (const data of readPieces(
      transport,
      piecesFor(t.entry, 0, t.entry.size),
      getUrls,
      parallel,
      label(t.entry.path),
      pool,
      { volume, path: t.entry.path, version },
    )) {
      await fh.write(data, 0, data.length, pos);
      pool.release(data);
      pos += data.length;
      chunked(data.length);
    }
  }

  /** The file's extents fetched, checked and written in place by the fetch threads, `parallel` at once. */
  async function fetchLarge(t: DownloadTarget, fh: FileHandle): Promise<void> {
    const limit = pLimit(parallel);
    const file: FileRef = { volume, path: t.entry.path, version };
    let pos = 0;
    const jobs = t.entry.extents.map((e) => {
      const at = pos;
      pos += e.length;
      return limit(async () => {
        if (e.length > 0 && !(await fetchInPlace(e, fh.fd, at))) {
          const data = await transport.readExtent(e, getUrls[e.blob], label(t.entry.path), pool.acquire(e.length), file);
          await fh.write(data, 0, data.length, at);
          pool.release(data);
        }
        chunked(e.length);
      });
    });
    await settle(jobs);
  }

  /** Whether a fetch thread put extent `e` at `position` of the open file `fd` (false: read it here instead). */
  async function fetchInPlace(e: Extent, fd: number, position: number): Promise<boolean> {
    const route = await transport.direct(getUrls[e.blob], e.blob, 'chunks').catch(() => undefined);
    if (!route) return false;
    try {
      const r = await fetches!.run({
        source: sourceOf(route),
        offset: e.offset,
        length: e.length,
        chunks: [{ hash: e.hash, length: e.length, at: 0, write: { fd, position } }],
        fileMode: 0,
        dirMode: 0,
      });
      return r.ok && r.chunks[0]?.status === 'stored';
    } catch {
      return false;
    }
  }

  function chunked(bytes: number): void {
    chunksTransferred++;
    progress.bytesDone += bytes;
    progress.bytesTransferred += bytes;
    report();
  }
}

/** Waits for every task (none keeps writing after a failure), then throws the first error. */
async function settle(tasks: Promise<void>[]): Promise<void> {
  const results = await Promise.allSettled(tasks);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

/**
 * The directories of one download, each made and checked once: every one
 * between a target's `within` and its file is a real directory (created when
 * missing, refused when a symlink or anything else), and resolves inside
 * `within`.
 */
class LocalDirs {
  private readonly ready = new Map<string, Promise<void>>();

  /** Resolves once `dir` (`within`, or a directory below it) exists and is safe to write into. */
  prepare(dir: string, within: string): Promise<void> {
    const key = `${within}\0${dir}`;
    let p = this.ready.get(key);
    if (!p) {
      p = this.make(dir, within);
      this.ready.set(key, p);
    }
    return p;
  }

  private async make(dir: string, within: string): Promise<void> {
    if (dir === within) {
      // The user's choice: created as asked, followed if it is a link.
      await mkdir(within, { recursive: true });
      return;
    }
    const rel = relative(within, dir);
    if (rel === '' || rel === '..' || rel.startsWith(`..${sep}`) || isAbsolute(rel)) {
      throw new IntegrityError(`refused to write into ${JSON.stringify(dir)}: it is outside the target directory ${JSON.stringify(within)}`);
    }
    await this.prepare(dirname(dir), within);
    await oneDirectory(dir, within);
    const [realWithin, realDir] = await Promise.all([realpath(within), realpath(dir)]);
    if (!realDir.startsWith(realWithin + sep)) {
      throw new IntegrityError(`refused to write into ${JSON.stringify(dir)}: it resolves to ${JSON.stringify(realDir)}, outside the target directory ${JSON.stringify(realWithin)}`);
    }
  }
}

/** Makes one directory level below `within`, or checks that the one there is a real directory (not a symlink). */
async function oneDirectory(dir: string, within: string): Promise<void> {
  try {
    await mkdir(dir);
    return;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  const st = await lstat(dir);
  if (!st.isDirectory()) {
    throw new FailedPreconditionError(
      `cannot download into ${JSON.stringify(within)}: ${quote(relative(within, dir))} in it is ${st.isSymbolicLink() ? 'a symbolic link, and a download never follows one below its target' : 'not a directory'} (remove it, or download somewhere else)`,
    );
  }
}

/** A new temporary file beside the target, never an existing file or a link: renamed over the target once whole. */
async function createTemp(dirs: LocalDirs, t: DownloadTarget) {
  const dir = dirname(t.localPath);
  await dirs.prepare(dir, t.within);
  const tmp = join(dir, `.stowage-partial-${process.pid}-${randomBytes(6).toString('hex')}`);
  const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
  return { fh: await open(tmp, flags, fileMode(t.entry.mode)), tmp };
}

async function writeWhole(dirs: LocalDirs, t: DownloadTarget, parts: Buffer[]): Promise<void> {
  const { fh, tmp } = await createTemp(dirs, t);
  try {
    try {
      for (const p of parts) await fh.write(p);
    } finally {
      await fh.close();
    }
    await rename(tmp, t.localPath);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}
