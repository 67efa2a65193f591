/**
 * BlobStore on a local directory: the embedded default. Files are written
 * 0600 in 0700 directories (writeFileAtomic), and never torn: a write that
 * fails (a full disk) leaves neither its file nor its temporary file behind.
 */
import { mkdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { link, mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { pathToFileURL } from 'node:url';
import { NotFoundError, ResourceExhaustedError, UnavailableError, messageOf } from '../../common/errors.js';
import { PRIVATE } from '../../common/file-modes.js';
import { readAt, writeFileAtomic } from '../../common/files.js';
import type { BlobStore, ByteRange, StoredObject } from './interface.js';

export class LocalBlobStore implements BlobStore {
  readonly description: string;
  /**
   * A client on this host reads and writes chunk files itself (file:// URLs),
   * as S3 clients use presigned URLs; the bytes never pass through the server.
   */
  readonly presignScope = 'local-host' as const;

  /** Directories known to exist (made or seen): a write into one needs no mkdir. */
  private readonly dirs = new Set<string>();

  constructor(private readonly root: string) {
    this.description = `local directory ${root}`;
    // Made once, here: from now on a missing root means the data dir was removed (UnavailableError), not an empty store.
    mkdirSync(root, { recursive: true, mode: PRIVATE.dir });
  }

  /** The error for an operation that found `path` missing: the whole store gone, or just that object. */
  private async missing(what: string, key: string, err: unknown): Promise<Error> {
    try {
      if ((await stat(this.root)).isDirectory()) return new NotFoundError(`object ${key} not found in ${this.description}`);
    } catch {
      // the root itself is gone
    }
    return new UnavailableError(`cannot ${what} in ${this.description}: the directory is missing (${(err as NodeJS.ErrnoException).code ?? messageOf(err)}); restore it or point --data-dir at the right place`, { cause: err });
  }

  private path(key: string): string {
    return join(this.root, ...key.split('/'));
  }

  async put(key: string, data: Uint8Array): Promise<void> {
    try {
      const path = this.path(key);
      const dir = dirname(path);
      if (!this.dirs.has(dir)) {
        if (!(await stat(this.root).catch(() => undefined))?.isDirectory()) throw Object.assign(new Error('store directory missing'), { code: 'ENOENT' });
        await mkdir(dir, { recursive: true, mode: PRIVATE.dir });
        this.dirs.add(dir);
      }
      await writeFileAtomic(path, data, PRIVATE, { dirExists: true });
    } catch (err) {
      throw this.failure(`write ${key}`, err);
    }
  }

  /** An exclusive create: the bytes go to a temporary file, which is then linked to the key (link fails if the key exists). */
  async putIfAbsent(key: string, data: Uint8Array): Promise<boolean> {
    const path = this.path(key);
    const tmp = `${path}.tmp-${randomBytes(6).toString('hex')}`;
    try {
      await mkdir(dirname(path), { recursive: true, mode: PRIVATE.dir });
      await writeFileAtomic(tmp, data, PRIVATE, { dirExists: true });
      await link(tmp, path);
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw this.failure(`write ${key}`, err);
    } finally {
      await rm(tmp, { force: true }).catch(() => undefined);
    }
  }

  async get(key: string, range?: ByteRange): Promise<Buffer> {
    let fh;
    try {
      fh = await open(this.path(key), 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw await this.missing(`read ${key}`, key, err);
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
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        const why = await this.missing(`stat ${key}`, key, err);
        if (why instanceof NotFoundError) return undefined;
        throw why;
      }
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
    try {
      if (!(await stat(this.root)).isDirectory()) throw Object.assign(new Error('not a directory'), { code: 'ENOTDIR' });
      await rm(this.path(key), { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw await this.missing(`delete ${key}`, key, err);
      throw this.failure(`delete ${key}`, err);
    }
  }

  async move(from: string, to: string): Promise<void> {
    try {
      await mkdir(dirname(this.path(to)), { recursive: true, mode: PRIVATE.dir });
      await rename(this.path(from), this.path(to));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw await this.missing(`move ${from}`, from, err);
      throw this.failure(`move ${from} to ${to}`, err);
    }
  }

  async *list(prefix: string): AsyncIterable<string> {
    for await (const o of this.scan(prefix)) yield o.key;
  }

  async *scan(prefix: string): AsyncIterable<StoredObject> {
    const keys: StoredObject[] = [];
    try {
      if (!(await stat(this.root)).isDirectory()) throw Object.assign(new Error('not a directory'), { code: 'ENOTDIR' });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw await this.missing(`list ${prefix}`, prefix, err);
      throw this.failure(`list ${prefix}`, err);
    }
    const walk = async (dir: string): Promise<void> => {
      let names: string[];
      try {
        names = await readdir(dir);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw this.failure(`list ${prefix}`, err);
      }
      for (const name of names) {
        const full = join(dir, name);
        let st;
        try {
          st = await stat(full);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // removed while listing
          throw err;
        }
        if (st.isDirectory()) await walk(full);
        else if (!name.includes('.tmp-')) keys.push({ key: relative(this.root, full).split(sep).join('/'), size: st.size, modifiedMs: st.mtimeMs });
      }
    };
    // Start from the deepest directory the prefix names, then filter.
    const dirPart = prefix.includes('/') ? prefix.slice(0, prefix.lastIndexOf('/')) : '';
    await walk(this.path(dirPart));
    keys.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    for (const k of keys) if (k.key.startsWith(prefix)) yield k;
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

