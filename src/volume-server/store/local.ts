/**
 * BlobStore on a local directory: the embedded default. Files are written
 * 0600 in 0700 directories (writeFileAtomic), and never torn: a write that
 * fails (a full disk) leaves neither its file nor its temporary file behind.
 */
import { open, readdir, rm, stat } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import { pathToFileURL } from 'node:url';
import { NotFoundError, ResourceExhaustedError, UnavailableError } from '../../common/errors.js';
import { readAt, writeFileAtomic } from '../../common/files.js';
import type { BlobStore, ByteRange } from './interface.js';

export class LocalBlobStore implements BlobStore {
  readonly description: string;
  /**
   * A client on this host reads and writes chunk files itself (file:// URLs),
   * as S3 clients use presigned URLs; the bytes never pass through the server.
   */
  readonly presignScope = 'local-host' as const;

  constructor(private readonly root: string) {
    this.description = `local directory ${root}`;
  }

  private path(key: string): string {
    return join(this.root, ...key.split('/'));
  }

  async put(key: string, data: Uint8Array): Promise<void> {
    try {
      await writeFileAtomic(this.path(key), data);
    } catch (err) {
      throw this.failure(`write ${key}`, err);
    }
  }

  async get(key: string, range?: ByteRange): Promise<Buffer> {
    let fh;
    try {
      fh = await open(this.path(key), 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new NotFoundError(`object ${key} not found in ${this.description}`);
      }
      throw this.failure(`read ${key}`, err);
    }
    try {
      if (!range) return await fh.readFile();
      const size = (await fh.stat()).size;
      const start = Math.min(range.offset, size);
      const length = Math.min(range.length ?? size - start, size - start);
      return await readAt(fh, start, length);
    } finally {
      await fh.close();
    }
  }

  async head(key: string): Promise<number | undefined> {
    try {
      return (await stat(this.path(key))).size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw this.failure(`stat ${key}`, err);
    }
  }

  async presignGet(key: string): Promise<string> {
    return pathToFileURL(this.path(key)).href;
  }

  async presignPut(key: string): Promise<string> {
    return pathToFileURL(this.path(key)).href;
  }

  async delete(key: string): Promise<void> {
    await rm(this.path(key), { force: true });
  }

  async *list(prefix: string): AsyncIterable<string> {
    const keys: string[] = [];
    const walk = async (dir: string): Promise<void> => {
      let names: string[];
      try {
        names = await readdir(dir);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw err;
      }
      for (const name of names) {
        const full = join(dir, name);
        if ((await stat(full)).isDirectory()) await walk(full);
        else if (!name.includes('.tmp-')) keys.push(relative(this.root, full).split(sep).join('/'));
      }
    };
    // Start from the deepest directory the prefix names, then filter.
    const dirPart = prefix.includes('/') ? prefix.slice(0, prefix.lastIndexOf('/')) : '';
    await walk(this.path(dirPart));
    keys.sort();
    for (const k of keys) if (k.startsWith(prefix)) yield k;
  }

  private failure(what: string, err: unknown): Error {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOSPC' || code === 'EDQUOT') {
      return new ResourceExhaustedError(`no space left to ${what} in ${this.description}: ${code} (free space on that disk, then retry)`, { cause: err });
    }
    return new UnavailableError(
      `cannot ${what} in ${this.description}: ${code ?? (err as Error).message}`,
      { cause: err },
    );
  }
}

