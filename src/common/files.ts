/** Local file writes shared by the local blob store and same-host clients. */
import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, rm, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { PRIVATE, type FileModes } from './file-modes.js';

/**
 * Writes `data` to `path` so that readers see the whole file or none: written
 * to a temporary name beside it, flushed, then renamed. A crash leaves no torn
 * file behind, and the temporary file is removed on failure (a full disk
 * included). Directories it makes, and the file, are private by default.
 */
export async function writeFileAtomic(path: string, data: Uint8Array, modes: Readonly<FileModes> = PRIVATE, opts: { dirExists?: boolean } = {}): Promise<void> {
  const tmp = `${path}.tmp-${randomBytes(6).toString('hex')}`;
  try {
    if (!opts.dirExists) await mkdir(dirname(path), { recursive: true, mode: modes.dir });
    const fh = await open(tmp, 'w', modes.file);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
}

/**
 * Reads up to `length` bytes at `offset` (fewer at the end of the file), into
 * `into` when it is large enough.
 */
export async function readAt(fh: FileHandle, offset: number, length: number, into?: Buffer): Promise<Buffer> {
  const buf = into && into.length >= length ? into.subarray(0, length) : Buffer.allocUnsafe(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, offset + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return buf.subarray(0, done);
}

/** Files up to this size are read (and stat-ed) on the calling thread; above it, through the thread pool. */
export const SMALL_READ_MAX = 64 * 1024;
/** Synchronous file calls made between two turns of the event loop. */
const SYNC_RUN = 256;

/**
 * Calls `fn` on each item, SYNC_RUN at a time on this thread, yielding to the
 * event loop between runs. For the stat and read of files of a few KiB, a
 * thread-pool round trip each (four at a time) costs far more than the system
 * call: 100,000 small files stat-ed and read this way take about a second.
 */
export async function eachInRuns<T, R>(items: readonly T[], fn: (item: T) => R): Promise<R[]> {
  const out: R[] = new Array(items.length);
  for (let i = 0; i < items.length; i += SYNC_RUN) {
    const end = Math.min(items.length, i + SYNC_RUN);
    for (let j = i; j < end; j++) out[j] = fn(items[j]!);
    if (end < items.length) await new Promise<void>((r) => setImmediate(r));
  }
  return out;
}
