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
