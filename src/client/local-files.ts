/**
 * file:// URLs: what a server over a local-directory store hands to clients
 * on its own host instead of presigned S3 URLs. The client reads chunk files
 * itself and writes new ones the way the store does (temporary name, flush,
 * rename), so the bytes never pass through the server.
 *
 * A file:// URL names a path on this machine, and whoever answers in the
 * server's place could name any file (~/.ssh/authorized_keys). So a client
 * uses one only inside the store of a data dir it knows belongs to its server
 * (Connection.dataDir: the token file there holds its token), and only for
 * the one key the blob has there, after resolving symlinks: reads from
 * `chunks/<hh>/<hash>`; writes to `incoming/<hh>/<hash>`, which the server
 * checks against the hash before it moves the file to the chunk's key.
 * LocalStore.chunkPath says which path that is, or undefined.
 */
import { constants } from 'node:fs';
import { lstat, open, realpath } from 'node:fs/promises';
import { basename, dirname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readAt, writeFileAtomic } from '../common/files.js';
import { HASH } from '../common/validate.js';

export function isFileUrl(url: string): boolean {
  return url.startsWith('file:');
}

/** The chunk files of one local-directory store (`<data-dir>/store`), as a client may touch them. */
export class LocalStore {
  readonly dir: string;

  constructor(dataDir: string) {
    this.dir = join(resolve(dataDir), 'store');
  }

  /**
   * The real path of the chunk file of blob `hash` when `url` names exactly
   * that file of this store; undefined for any other URL (then the bytes go
   * through the server). Symlinks on the way are resolved first, so a link
   * planted in the store cannot lead out of its chunks/ (or incoming/) area.
   */
  async chunkPath(url: string, hash: string, area: 'chunks' | 'incoming' = 'chunks'): Promise<string | undefined> {
    if (!HASH.test(hash)) return undefined;
    let named: string;
    try {
      const u = new URL(url);
      if (u.protocol !== 'file:' || (u.host !== '' && u.host !== 'localhost')) return undefined;
      named = fileURLToPath(u);
    } catch {
      return undefined;
    }
    try {
      const [real, expected, chunks] = await Promise.all([
        realPathOf(named),
        realPathOf(join(this.dir, area, hash.slice(0, 2), hash)),
        realPathOf(join(this.dir, area)),
      ]);
      return real === expected && expected.startsWith(chunks + sep) ? expected : undefined;
    } catch {
      return undefined;
    }
  }
}

/**
 * `path` with every symlink resolved; a tail that does not exist yet is
 * appended as it is. A dangling symlink is refused (it would be followed later).
 */
async function realPathOf(path: string): Promise<string> {
  let head = resolve(path);
  const tail: string[] = [];
  for (;;) {
    try {
      return join(await realpath(head), ...tail.reverse());
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT') throw err;
      if ((await lstat(head).catch(() => undefined))?.isSymbolicLink()) throw err;
      const parent = dirname(head);
      if (parent === head) throw err;
      tail.push(basename(head));
      head = parent;
    }
  }
}

/** Reads a chunk file (a path LocalStore.chunkPath gave); a chunk file is never a symlink. */
export async function readChunkFile(path: string, offset: number, length: number, into?: Buffer): Promise<Buffer> {
  const fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    return await readAt(fh, offset, length, into);
  } finally {
    await fh.close();
  }
}

/** Writes a chunk file (a path LocalStore.chunkPath gave) as the store does: whole or not at all. */
export async function writeChunkFile(path: string, data: Buffer): Promise<void> {
  await writeFileAtomic(path, data);
}
