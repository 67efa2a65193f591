/**
 * One fetch job: the work of bringing chunks down, done off the caller's
 * thread (fetch-pool.ts runs it on a worker thread; with no threads it runs
 * inline). The mount's chunk cache uses it for every miss, `volume get` for
 * the chunks of a big file.
 *
 * A job reads one range of a blob (by a presigned URL, or from the local
 * store's chunk file, or takes bytes the caller already fetched), then for
 * each chunk that lies in the range checks its SHA-256 and lands it where
 * the chunk says: a cache file (`path`; block-file.ts: bytes, CRC table,
 * trailer) written under a temporary name and renamed into place, so that a
 * reader sees a whole file or none; or a place in a file being downloaded
 * (`write`: a descriptor the caller holds open, and renames the file when whole). The bytes
 * never travel back to the caller, except those of a chunk whose file could
 * not be written (full disk, vanished directory): the cache then keeps them
 * in memory (fuse-mount/cache/disk-cache.ts).
 *
 * File calls are synchronous: on a worker thread they block only that thread
 * and keep libuv's pool (four threads, shared with the FUSE reads of the
 * main thread) free. The range lands in a buffer reused across jobs, so a
 * GiB read cold allocates a few buffers, not a GiB of them.
 *
 * A job never throws: a fetch that fails is `{ ok: false }` with its reason
 * (the caller retries through the stowage server, which knows the store's
 * errors); a chunk whose bytes do not match is `mismatch`.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, closeSync, constants, mkdirSync, openSync, readSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { BufferPool } from './buffer-pool.js';
import { httpGetRange } from './http.js';
import { messageOf } from '../common/errors.js';
import { sha256 } from '../common/hash.js';
import { MAX_BLOB_BYTES } from '../common/validate.js';
import { tailOf } from '../common/block-file.js';

/** Where a job's bytes come from. */
export type FetchSource = { url: string } | { file: string } | { bytes: Uint8Array };

/** The source a fetch thread reads for a route BlobTransport.direct allowed. */
export function sourceOf(route: { file: string } | { http: string }): FetchSource {
  return 'file' in route ? { file: route.file } : { url: route.http };
}

export interface JobChunk {
  hash: string;
  length: number;
  /** Where the chunk starts in the fetched range. */
  at: number;
  /** Its cache file. */
  path?: string;
  /**
   * Or where in a file the caller has open its bytes go (descriptors are the
   * process's, so a worker thread writes through the caller's; the caller
   * keeps it open until the job ends). Neither: verify it and hand its bytes
   * back (E2BIG: too big for the cache's bound).
   */
  write?: { fd: number; position: number };
}

export interface FetchJob {
  source: FetchSource;
  /** The range of the blob: used for a URL or file source; bytes are the range itself. */
  offset: number;
  length: number;
  chunks: JobChunk[];
  fileMode: number;
  dirMode: number;
}

export type ChunkOutcome =
  | { hash: string; status: 'stored' }
  | { hash: string; status: 'mismatch' }
  /** Verified, but its file could not be written (`code`: the errno name): here are its bytes. */
  | { hash: string; status: 'unstored'; code: string; bytes: Uint8Array };

export type JobResult = { ok: true; chunks: ChunkOutcome[] } | { ok: false; error: string };

const POOL_BUFFER = 8 * 1024 * 1024;
/** As many kept as a thread runs jobs at once (fetch-pool.ts JOBS_PER_THREAD): a steady stream of misses allocates nothing. */
const pool = new BufferPool(POOL_BUFFER, 4);
/** The file mode the umask cannot cut: a group-readable mode is set again with chmod. */
const PRIVATE_FILE = 0o600;

export async function runFetchJob(job: FetchJob): Promise<JobResult> {
  let data: Buffer;
  let pooled: Buffer | undefined;
  try {
    if ('bytes' in job.source) {
      const b = job.source.bytes;
      data = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
    } else {
      pooled = pool.acquire(job.length);
      data = 'url' in job.source ? await fetchRange(job.source.url, job.offset, job.length, pooled) : readRange(job.source.file, job.offset, job.length, pooled);
    }
  } catch (err) {
    if (pooled) pool.release(pooled);
    return { ok: false, error: messageOf(err) };
  }
  try {
    const chunks = job.chunks.map((c) => storeChunk(job, c, data));
    return { ok: true, chunks };
  } finally {
    if (pooled) pool.release(pooled);
  }
}

function storeChunk(job: FetchJob, c: JobChunk, data: Buffer): ChunkOutcome {
  const bytes = c.at + c.length <= data.length ? data.subarray(c.at, c.at + c.length) : undefined;
  if (!bytes || sha256(bytes) !== c.hash) return { hash: c.hash, status: 'mismatch' };
  if (c.path === undefined && c.write === undefined) return { hash: c.hash, status: 'unstored', code: 'E2BIG', bytes: new Uint8Array(bytes) };
  try {
    if (c.write) writeAll(c.write.fd, bytes, c.write.position);
    else writeChunkFile(c.path!, bytes, job.fileMode, job.dirMode);
    return { hash: c.hash, status: 'stored' };
  } catch (err) {
    // A copy: the range's buffer goes back to the pool.
    return { hash: c.hash, status: 'unstored', code: (err as NodeJS.ErrnoException).code ?? 'EIO', bytes: new Uint8Array(bytes) };
  }
}

/** Writes the chunk's cache file whole or not at all, making its shard directory if it vanished. */
function writeChunkFile(path: string, bytes: Buffer, fileMode: number, dirMode: number): void {
  const tmp = `${path}.tmp-${randomBytes(6).toString('hex')}`;
  try {
    let fd: number;
    try {
      fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, fileMode);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      mkdirSync(dirname(path), { recursive: true, mode: dirMode });
      chmodSync(dirname(path), dirMode);
      fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, fileMode);
    }
    try {
      writeAll(fd, bytes);
      writeAll(fd, tailOf(bytes));
    } finally {
      closeSync(fd);
    }
    if (fileMode !== PRIVATE_FILE) chmodSync(tmp, fileMode);
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}

function writeAll(fd: number, data: Uint8Array, position?: number): void {
  for (let done = 0; done < data.length; ) done += writeSync(fd, data, done, data.length - done, position === undefined ? null : position + done);
}

/** A range of a chunk file of the local store (a path LocalStore.chunkPath vouched for; never a symlink). */
function readRange(path: string, offset: number, length: number, into: Buffer): Buffer {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    let done = 0;
    while (done < length) {
      const n = readSync(fd, into, done, length - done, offset + done);
      if (n === 0) break;
      done += n;
    }
    return into.subarray(0, done);
  } finally {
    closeSync(fd);
  }
}

/** A range of a blob by its presigned URL; a body longer than asked for is refused unread. */
async function fetchRange(url: string, offset: number, length: number, into: Buffer): Promise<Buffer> {
  if (length === 0) return into.subarray(0, 0);
  const res = await httpGetRange(url, offset, length, MAX_BLOB_BYTES, into);
  if (res.status < 200 || res.status >= 300) throw new Error(`HTTP ${res.status} from ${new URL(url).origin}`);
  return res.body;
}
