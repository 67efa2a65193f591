/**
 * DiskChunkCache: the host's chunk cache on local disk.
 *
 * Layout. `<dir>/chunks/<hash[0..2]>/<hash>` holds the bytes of one chunk and
 * nothing else, so every mount on the host that points at the same directory
 * shares one copy of a chunk, whichever volume it came from. A file is written
 * under a temporary name beside it (`<hash>.tmp-<random>`) and renamed into
 * place, so a reader sees a whole file or none. Writes are not fsynced: a file
 * torn by a crash fails its hash check on the next read and is loaded again,
 * which is cheaper than an fsync per chunk.
 *
 * Index and bound. Each process keeps its own LRU index (lru-cache, sized in
 * bytes) of the files it knows; evicting an entry removes its file. At open the
 * directory is scanned and the index seeded oldest mtime first, and a hit
 * bumps the file's mtime at most once per `touchIntervalMs`, so recency
 * survives a restart (to that resolution). A file found on disk that the index
 * does not know (another process wrote it) is verified, served and adopted.
 * With several processes on one directory each one's bound covers only its
 * own view: files the others wrote and this one never read do not count, so
 * the directory can hold up to the sum of the bounds. That is accepted for
 * now; one process per host owning the cache would make it exact.
 *
 * Trust. Bytes read back from disk are hashed on every hit (the memory layer
 * above spares the hot ones). A file that does not match is counted as a
 * corruption, removed, and the chunk loaded again.
 *
 * Modes. The cache holds volume bytes: its directories are 0700 and its files
 * 0600, or 0750 and 0640 when opened `shared` with the owner's group
 * (`--cache-mode shared`), set with chmod whatever the umask. Files and
 * directories found with other modes are set right by the scan at open.
 *
 * Faults never fail a get: a vanished directory is recreated by the next
 * write and a vanished file is a miss; a write failing for lack of space
 * (ENOSPC, EDQUOT) evicts at least the chunk's size and retries once, and
 * otherwise the chunk is returned uncached. Each kind of fault is logged once.
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, readdir, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { LRUCache } from 'lru-cache';
import { FailedPreconditionError, IntegrityError, messageOf } from '../../common/errors.js';
import { PRIVATE, ensureDir, type FileModes } from '../../common/file-modes.js';
import { sha256 } from '../../common/hash.js';
import { createLogger, type Logger } from '../../common/logger.js';
import { checkChunkKey, checkMaxBytes, chunkSize, isChunk, loadedMismatch } from './chunk-checks.js';
import { Singleflight } from './singleflight.js';
import type { ChunkCache, ChunkCacheStats } from './types.js';

export interface DiskChunkCacheOptions {
  /** The cache directory; created if missing. Chunks live under `<dir>/chunks/`. */
  dir: string;
  /** Bound on the bytes of chunks this process keeps in the directory. */
  maxBytes: number;
  /** Least time between two mtime bumps of one file on hits (default 10 minutes; 0 = every hit). */
  touchIntervalMs?: number;
  /** Modes of the cache's directories and files (default PRIVATE: 0700, 0600). */
  modes?: Readonly<FileModes>;
  logger?: Logger;
}

interface Entry {
  size: number;
  /** When this process last set (or saw) the file's mtime, in ms since the epoch. */
  touchedMs: number;
}

interface Found {
  data: Buffer;
  hit: boolean;
}

const HASH_FILE = /^[0-9a-f]{64}$/;
const SHARD = /^[0-9a-f]{2}$/;
const NO_SPACE = new Set(['ENOSPC', 'EDQUOT']);
/** Temporary files older than this are leftovers of a crash, not writes in progress. */
const STALE_TEMP_MS = 60 * 60 * 1000;
/** Files stat'ed at once while scanning. */
const SCAN_BATCH = 64;

const errnoOf = (err: unknown): string | undefined => (err as NodeJS.ErrnoException | undefined)?.code;
const octal = (mode: number): string => `0${mode.toString(8)}`;

export class DiskChunkCache implements ChunkCache {
  private readonly root: string;
  private readonly maxBytes: number;
  private readonly touchIntervalMs: number;
  private readonly modes: Readonly<FileModes>;
  private readonly log: Logger;
  private readonly index: LRUCache<string, Entry>;
  private readonly flights = new Singleflight<Found>();
  /** File removals in progress, by hash: a write or read of the same chunk waits for them. */
  private readonly removals = new Map<string, Promise<void>>();
  /** mtime bumps in progress, awaited by close. */
  private readonly touches = new Set<Promise<void>>();
  private readonly warned = new Set<string>();
  private readonly counts = { hits: 0, misses: 0, loads: 0, evictions: 0, corruptions: 0 };
  private closed = false;

  private constructor(opts: DiskChunkCacheOptions) {
    checkMaxBytes(opts.maxBytes);
    this.root = join(opts.dir, 'chunks');
    this.maxBytes = opts.maxBytes;
    this.touchIntervalMs = opts.touchIntervalMs ?? 10 * 60 * 1000;
    this.modes = opts.modes ?? PRIVATE;
    this.log = opts.logger ?? createLogger('chunk-cache');
    this.index = new LRUCache<string, Entry>({
      maxSize: opts.maxBytes,
      sizeCalculation: (e) => e.size,
      // 'set' replaces an entry by one for the same file: keep the file.
      dispose: (_e, hash, reason) => {
        if (reason === 'set') return;
        if (reason === 'evict') this.counts.evictions++;
        this.removeFile(hash);
      },
    });
  }

  /** Opens (creating if needed) the cache in `opts.dir` and indexes the chunks already there. */
  static async open(opts: DiskChunkCacheOptions): Promise<DiskChunkCache> {
    const cache = new DiskChunkCache(opts);
    let changed: number;
    try {
      changed = Number(ensureDir(opts.dir, cache.modes)) + Number(ensureDir(cache.root, cache.modes));
    } catch (err) {
      throw new FailedPreconditionError(`cannot use ${opts.dir} as the chunk cache directory: ${messageOf(err)}`);
    }
    changed += await cache.scan();
    if (changed > 0) {
      cache.log.info(
        { dir: opts.dir, changed },
        `set the modes of ${changed} files and directories in the chunk cache ${opts.dir} to ${octal(cache.modes.dir)} (directories) and ${octal(cache.modes.file)} (files)`,
      );
    }
    return cache;
  }

  async get(hash: string, length: number, load: () => Promise<Buffer>): Promise<Buffer> {
    checkChunkKey(hash, length, this.closed);
    let found: Found;
    try {
      found = await this.flights.do(hash, () => this.lookup(hash, length, load));
    } catch (err) {
      this.counts.misses++;
      throw err;
    }
    if (found.hit) this.counts.hits++;
    else this.counts.misses++;
    // A caller that joined another's get with a different length asked for other bytes.
    if (found.data.length !== length) {
      throw new IntegrityError(`chunk ${hash.slice(0, 16)}… is ${found.data.length} bytes, not ${length}`);
    }
    return found.data;
  }

  has(hash: string): boolean {
    return this.index.has(hash);
  }

  /** Every hit reads the disk. */
  isHot(_hash: string): boolean {
    return false;
  }

  stats(): ChunkCacheStats {
    return { bytes: this.index.calculatedSize, entries: this.index.size, ...this.counts };
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.flights.settled();
    await Promise.allSettled([...this.removals.values(), ...this.touches]);
  }

  private path(hash: string): string {
    return join(this.root, hash.slice(0, 2), hash);
  }

  private async lookup(hash: string, length: number, load: () => Promise<Buffer>): Promise<Found> {
    const stored = await this.readStored(hash);
    if (stored) return { data: stored, hit: true };
    this.counts.loads++;
    const data = await load();
    if (!isChunk(data, hash, length)) throw loadedMismatch(hash, length, data);
    await this.store(hash, data);
    return { data, hit: false };
  }

  /** The verified bytes of the chunk's file, or undefined when there is no good file. */
  private async readStored(hash: string): Promise<Buffer | undefined> {
    await this.removals.get(hash);
    let data: Buffer;
    try {
      data = await readFile(this.path(hash));
    } catch (err) {
      const code = errnoOf(err);
      if (code !== 'ENOENT') this.warnOnce(`read-${code}`, err, 'cannot read a cached chunk; loading it instead');
      // Gone (another process evicted it, or the directory was deleted) or unreadable.
      this.index.delete(hash);
      return undefined;
    }
    // Only the hash judges the file: a caller asking with a wrong length gets an
    // IntegrityError from get, and the good file stays.
    if (sha256(data) !== hash) {
      this.counts.corruptions++;
      this.log.warn({ hash, bytes: data.length }, 'cached chunk does not match its hash; removing it and loading it again');
      if (this.index.has(hash)) this.index.delete(hash);
      else this.removeFile(hash);
      await this.removals.get(hash);
      return undefined;
    }
    const entry = this.index.get(hash);
    if (entry) this.touch(hash, entry);
    else if (!this.removals.has(hash)) {
      // Written by another process (or dropped from our index while we read it): adopt it.
      const adopted = { size: chunkSize(data.length), touchedMs: 0 };
      this.index.set(hash, adopted);
      this.touch(hash, adopted);
    }
    return data;
  }

  /** Stores verified bytes; never throws (an unstored chunk is only a future miss). */
  private async store(hash: string, data: Buffer): Promise<void> {
    const size = chunkSize(data.length);
    if (size > this.maxBytes) return;
    await this.removals.get(hash);
    try {
      await this.writeFile(hash, data);
    } catch (err) {
      if (!NO_SPACE.has(errnoOf(err) ?? '')) {
        this.warnOnce(`write-${errnoOf(err)}`, err, 'cannot write to the chunk cache; serving chunks without caching them');
        return;
      }
      this.evict(size);
      await Promise.allSettled([...this.removals.values()]);
      try {
        await this.writeFile(hash, data);
      } catch (again) {
        this.warnOnce(`write-${errnoOf(again)}`, again, 'chunk cache disk is full even after evicting; serving chunks without caching them');
        return;
      }
    }
    this.index.set(hash, { size, touchedMs: Date.now() });
  }

  /** Writes the chunk's file whole or not at all, recreating its directory if it vanished. */
  private async writeFile(hash: string, data: Buffer): Promise<void> {
    const path = this.path(hash);
    const tmp = `${path}.tmp-${randomBytes(6).toString('hex')}`;
    try {
      const mode = this.modes.file;
      try {
        await writeFile(tmp, data, { flag: 'wx', mode });
      } catch (err) {
        if (errnoOf(err) !== 'ENOENT') throw err;
        const shard = join(this.root, hash.slice(0, 2));
        await mkdir(shard, { recursive: true, mode: this.modes.dir });
        await chmod(shard, this.modes.dir);
        await writeFile(tmp, data, { flag: 'wx', mode });
      }
      // The umask only takes bits away: a group-readable mode it would cut is set again.
      if (mode !== PRIVATE.file) await chmod(tmp, mode);
      await rename(tmp, path);
    } catch (err) {
      await rm(tmp, { force: true }).catch(() => undefined);
      throw err;
    }
  }

  /** Drops least recently used entries until at least `bytes` are freed or none are left. */
  private evict(bytes: number): void {
    let freed = 0;
    while (freed < bytes && this.index.size > 0) {
      const e = this.index.pop();
      if (e) freed += e.size;
    }
  }

  private removeFile(hash: string): void {
    const removal = rm(this.path(hash), { force: true })
      .catch((err: unknown) => this.warnOnce(`remove-${errnoOf(err)}`, err, 'cannot remove a chunk from the cache'))
      .finally(() => {
        if (this.removals.get(hash) === removal) this.removals.delete(hash);
      });
    this.removals.set(hash, removal);
  }

  /** Bumps the file's mtime if it was last set long enough ago, in the background. */
  private touch(hash: string, entry: Entry): void {
    const now = Date.now();
    if (now - entry.touchedMs < this.touchIntervalMs) return;
    entry.touchedMs = now;
    const at = new Date(now);
    // A file removed meanwhile has nothing to bump.
    const bump = utimes(this.path(hash), at, at)
      .catch(() => undefined)
      .finally(() => this.touches.delete(bump));
    this.touches.add(bump);
  }

  /**
   * Seeds the index from the files on disk, oldest mtime first; drops crash
   * leftovers; sets modes that differ from the cache's. Returns how many
   * modes it set.
   */
  private async scan(): Promise<number> {
    const files: { hash: string; size: number; mtimeMs: number }[] = [];
    const temps: string[] = [];
    const names: { hash: string; path: string }[] = [];
    let changed = 0;
    const setMode = async (path: string, mode: number, want: number): Promise<void> => {
      if ((mode & 0o7777) === want) return;
      await chmod(path, want).then(
        () => changed++,
        (err: unknown) => this.warnOnce(`chmod-${errnoOf(err)}`, err, 'cannot set the mode of part of the chunk cache directory'),
      );
    };
    for (const shard of await this.list(this.root)) {
      if (!SHARD.test(shard)) continue;
      const st = await stat(join(this.root, shard)).catch(() => undefined);
      if (st?.isDirectory()) await setMode(join(this.root, shard), st.mode, this.modes.dir);
      for (const name of await this.list(join(this.root, shard))) {
        const path = join(this.root, shard, name);
        if (HASH_FILE.test(name) && name.startsWith(shard)) names.push({ hash: name, path });
        else if (name.includes('.tmp-')) temps.push(path);
      }
    }
    for (let i = 0; i < names.length; i += SCAN_BATCH) {
      await Promise.all(
        names.slice(i, i + SCAN_BATCH).map(async ({ hash, path }) => {
          const st = await stat(path).catch(() => undefined);
          if (!st?.isFile()) return;
          files.push({ hash, size: st.size, mtimeMs: st.mtimeMs });
          await setMode(path, st.mode, this.modes.file);
        }),
      );
    }
    const now = Date.now();
    await Promise.all(
      temps.map(async (path) => {
        const st = await stat(path).catch(() => undefined);
        if (st && now - st.mtimeMs > STALE_TEMP_MS) await rm(path, { force: true }).catch(() => undefined);
      }),
    );
    files.sort((a, b) => a.mtimeMs - b.mtimeMs);
    // Setting newest last makes it the most recently used; beyond the bound the oldest go (and their files).
    for (const f of files) {
      // A chunk larger than the bound (left by a run with a larger one) can never be indexed.
      if (chunkSize(f.size) > this.maxBytes) this.removeFile(f.hash);
      else this.index.set(f.hash, { size: chunkSize(f.size), touchedMs: f.mtimeMs });
    }
    await Promise.allSettled([...this.removals.values()]);
    return changed;
  }

  private async list(dir: string): Promise<string[]> {
    try {
      return await readdir(dir);
    } catch (err) {
      if (errnoOf(err) !== 'ENOENT') this.warnOnce(`scan-${errnoOf(err)}`, err, 'cannot list part of the chunk cache directory');
      return [];
    }
  }

  private warnOnce(kind: string, err: unknown, msg: string): void {
    if (this.warned.has(kind)) return;
    this.warned.add(kind);
    this.log.warn({ dir: this.root, err: messageOf(err) }, msg);
  }
}
