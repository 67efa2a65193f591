/**
 * DiskChunkCache: the host's chunk cache on local disk.
 *
 * Layout. `<dir>/chunks/<hash[0..2]>/<hash>` holds one chunk: its bytes, a
 * CRC32C per 32 KiB block and a trailer (block-file.ts). Every mount on the
 * host that points at the same directory shares one copy of a chunk,
 * whichever volume it came from. A file is written under a temporary name
 * beside it (`<hash>.tmp-<random>`) and renamed into place, so a reader sees
 * a whole file or none. Writes are not fsynced: a block torn by a crash fails
 * its CRC on the next read and the chunk is loaded again, which is cheaper
 * than an fsync per chunk.
 *
 * Reads. A hit reads only the blocks a read touches, with pread on a file
 * descriptor kept open (an LRU of them), straight into the caller's buffer
 * when the read is block-aligned (FUSE's 128 KiB reads are), and checks each
 * block's CRC against the table read once at open. The kernel's page cache
 * over these files is the memory tier: a chunk read twice is read from
 * memory, and none of it is counted against this process.
 *
 * Misses. The caller's ChunkLoad hands plans to `fetch`, which runs them on
 * the fetch threads (fetch-pool.ts, fetch-job.ts): fetch, SHA-256 check and
 * file write happen there, and only the outcome comes back. Concurrent misses
 * of one chunk are merged (Singleflight).
 *
 * Index and bound. Each process keeps its own LRU index (lru-cache, sized in
 * bytes of chunk data) of the files it knows; evicting an entry removes its
 * file. At open the directory is scanned and the index seeded oldest mtime
 * first, and a hit bumps the file's mtime at most once per
 * `touchIntervalMs`, so recency survives a restart (to that resolution). A
 * file found on disk that the index does not know (another process wrote it)
 * is checked as it is read, and adopted. With several processes on one
 * directory each one's bound covers only its own view: files the others
 * wrote and this one never read do not count, so the directory can hold up
 * to the sum of the bounds. That is accepted for now; one process per host
 * owning the cache would make it exact.
 *
 * Modes. The cache holds volume bytes: its directories are 0700 and its files
 * 0600, or 0750 and 0640 when opened `shared` with the owner's group
 * (`--cache-mode shared`), set with chmod whatever the umask. Files and
 * directories found with other modes are set right by the scan at open.
 *
 * Faults never fail a read: a vanished file is a miss and a vanished
 * directory is recreated by the next write; a write failing for lack of space
 * (ENOSPC, EDQUOT) evicts at least the chunk's size and retries once; a chunk
 * whose file still cannot be written is kept in memory (within
 * `memoryBytes`, least recently used leaving first) and served from there.
 * Each kind of fault is logged once.
 */
import { close as closeFd, constants, fstat, open as openFd, read as readFd, type Stats } from 'node:fs';
import { chmod, readFile, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { LRUCache } from 'lru-cache';
import { FailedPreconditionError, IntegrityError, InvalidArgumentError, UnavailableError, messageOf } from '../../common/errors.js';
import { PRIVATE, ensureDir, type FileModes } from '../../common/file-modes.js';
import { createLogger, type Logger } from '../../common/logger.js';
import { BLOCK, BLOCK_SHIFT, TRAILER_BYTES, blocksMatch, blocksOf, crcTableOf, fileSizeOf, lengthInTrailer, lengthOfFile } from '../../common/block-file.js';
import { checkChunkKey, checkMaxBytes, chunkSize, loadedMismatch } from './chunk-checks.js';
import type { FetchJob } from '../../client/fetch-job.js';
import { FetchPool } from '../../client/fetch-pool.js';
import { Singleflight } from './singleflight.js';
import type { ChunkCache, ChunkCacheStats, ChunkLoad, FetchOutcome, FetchPlan } from './types.js';

export interface DiskChunkCacheOptions {
  /** The cache directory; created if missing. Chunks live under `<dir>/chunks/`. */
  dir: string;
  /** Bound on the bytes of chunks this process keeps in the directory. */
  maxBytes: number;
  /** Bound on the bytes of chunks kept in memory because their files could not be written (default 64 MiB). */
  memoryBytes?: number;
  /** Threads that fetch, verify and write chunks (default 1; 0: on the calling thread). */
  fetchThreads?: number;
  /** Least time between two mtime bumps of one file on hits (default 10 minutes; 0 = every hit). */
  touchIntervalMs?: number;
  /** Modes of the cache's directories and files (default PRIVATE: 0700, 0600). */
  modes?: Readonly<FileModes>;
  logger?: Logger;
}

/** What a lookup (or load) of a chunk found. */
interface Located {
  /** Whether the chunk was loaded (a miss), not found stored (a hit). */
  loaded: boolean;
  /** Its bytes, when it is small or kept only in memory. */
  bytes?: Buffer;
}

interface Entry {
  /** Bytes of its file (the bound counts these). */
  size: number;
  /** Bytes of the chunk. */
  length: number;
  /** When this process indexed it, in the order of `DiskChunkCache.seq`. */
  seq: number;
  /** When this process last set (or saw) the file's mtime, in ms since the epoch. */
  touchedMs: number;
}

/** An open chunk file: its descriptor and CRC table, shared by the reads in progress. */
interface OpenChunk {
  fd: number;
  length: number;
  table: Buffer;
  users: number;
  /** When the file was last seen linked (fstat), in ms since the epoch. */
  checkedMs: number;
  /** Dropped from the LRU while in use: closed by its last user. */
  dropped: boolean;
}

const HASH_FILE = /^[0-9a-f]{64}$/;
const SHARD = /^[0-9a-f]{2}$/;
const NO_SPACE = new Set(['ENOSPC', 'EDQUOT']);
/** Temporary files older than this are leftovers of a crash, not writes in progress. */
const STALE_TEMP_MS = 60 * 60 * 1000;
/** Files stat'ed at once while scanning. */
const SCAN_BATCH = 64;
/** A file beside `chunks/` naming the layout of the files in it (block-file.ts); a directory without it is checked file by file once. */
const FORMAT_MARKER = 'chunk-format';
const FORMAT_NAME = 'stowage chunk files with CRC32C blocks, format 1\n';
/**
 * Chunk files kept open (with their CRC tables, 1 KiB each): 8 GiB of 8 MiB
 * chunks, so that random reads over a few GiB of shards do not reopen a file
 * per read. Node raises its descriptor limit to the hard limit at start.
 */
const OPEN_FILES = 1024;
/** How often an open chunk file is checked for having been removed. */
const RECHECK_MS = 1000;
/** Chunks up to this size are read whole in one pread, their files not kept open. */
const SMALL_CHUNK = 64 * 1024;
const DEFAULT_MEMORY_BYTES = 64 * 1024 * 1024;

const errnoOf = (err: unknown): string | undefined => (err as NodeJS.ErrnoException | undefined)?.code;
const octal = (mode: number): string => `0${mode.toString(8)}`;

/** A chunk file read back wrong (short, or a block failing its CRC). */
class DamagedFile extends Error {}

export class DiskChunkCache implements ChunkCache {
  private readonly root: string;
  private readonly maxBytes: number;
  private readonly touchIntervalMs: number;
  private readonly modes: Readonly<FileModes>;
  private readonly log: Logger;
  private readonly index: LRUCache<string, Entry>;
  /** Chunks whose files could not be written. */
  private readonly memory: LRUCache<string, Buffer>;
  private readonly files: LRUCache<string, OpenChunk>;
  private readonly flights = new Singleflight<Located>();
  private readonly pool: FetchPool;
  /** File removals in progress, by hash: a write or read of the same chunk waits for them. */
  private readonly removals = new Map<string, Promise<void>>();
  /** mtime bumps in progress, awaited by close. */
  private readonly touches = new Set<Promise<void>>();
  private readonly warned = new Set<string>();
  private readonly counts = { hits: 0, misses: 0, loads: 0, evictions: 0, corruptions: 0 };
  private closed = false;
  /** Bytes of the chunks the index holds (it is bounded by their files' sizes). */
  private dataBytes = 0;
  /** Set while an entry is forgotten without removing its file (forget()). */
  private keepFileOf: string | undefined;
  /** Counts index entries made, so that a miss seen by an open started earlier does not forget a newer entry. */
  private seq = 0;

  private constructor(opts: DiskChunkCacheOptions) {
    checkMaxBytes(opts.maxBytes);
    this.root = join(opts.dir, 'chunks');
    this.maxBytes = opts.maxBytes;
    this.touchIntervalMs = opts.touchIntervalMs ?? 10 * 60 * 1000;
    this.modes = opts.modes ?? PRIVATE;
    this.log = opts.logger ?? createLogger('chunk-cache');
    this.pool = new FetchPool(opts.fetchThreads ?? 1);
    this.index = new LRUCache<string, Entry>({
      maxSize: opts.maxBytes,
      sizeCalculation: (e) => e.size,
      // 'set' replaces an entry by one for the same file: keep the file.
      dispose: (e, hash, reason) => {
        this.dataBytes -= e.length;
        if (reason === 'set') return;
        if (reason === 'evict') this.counts.evictions++;
        if (this.keepFileOf !== hash) this.removeFile(hash);
      },
    });
    const memoryBytes = opts.memoryBytes ?? DEFAULT_MEMORY_BYTES;
    checkMaxBytes(memoryBytes);
    this.memory = new LRUCache<string, Buffer>({
      maxSize: memoryBytes,
      sizeCalculation: (b) => chunkSize(b.length),
      dispose: (_b, _hash, reason) => {
        if (reason === 'evict') this.counts.evictions++;
      },
    });
    this.files = new LRUCache<string, OpenChunk>({
      max: OPEN_FILES,
      dispose: (f) => {
        f.dropped = true;
        if (f.users === 0) closeFd(f.fd, () => undefined);
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
      await cache.pool.close();
      throw new FailedPreconditionError(`cannot use ${opts.dir} as the chunk cache directory: ${messageOf(err)}`);
    }
    // A directory without this format's marker may hold files of an older cache format: each file's trailer is read once.
    const marker = join(opts.dir, FORMAT_MARKER);
    const marked = (await readFile(marker, 'utf8').catch(() => '')) === FORMAT_NAME;
    changed += await cache.scan(!marked);
    if (!marked) await writeFile(marker, FORMAT_NAME, { mode: cache.modes.file }).catch((err: unknown) => cache.warnOnce('marker', err, 'cannot mark the chunk cache directory with its format'));
    // Its mode follows the cache's, like every file in it (the umask may have cut it).
    await chmod(marker, cache.modes.file).catch(() => undefined);
    if (changed > 0) {
      cache.log.info(
        { dir: opts.dir, changed },
        `set the modes of ${changed} files and directories in the chunk cache ${opts.dir} to ${octal(cache.modes.dir)} (directories) and ${octal(cache.modes.file)} (files)`,
      );
    }
    return cache;
  }

  async read(hash: string, length: number, at: number, into: Buffer, load: ChunkLoad): Promise<number> {
    checkChunkKey(hash, length, this.closed, at);
    const out = into.subarray(0, Math.max(0, Math.min(into.length, length - at)));
    // Past the end nothing is copied (the block arithmetic assumes at <= length); the chunk must still be there.
    const from = Math.min(at, length);
    let found: Located = { loaded: false };
    // A file another process removes between our load (or lookup) and our read is looked up, and loaded, again.
    for (let attempt = 0; ; attempt++) {
      const held = this.memory.get(hash) ?? found.bytes;
      if (held) {
        if (held.length !== length) throw new IntegrityError(`chunk ${hash.slice(0, 16)}… is ${held.length} bytes, not ${length}`);
        this.count(found.loaded);
        return held.copy(out, 0, from, from + out.length);
      }
      const f = this.files.get(hash);
      if (f) {
        const n = await this.readOpen(f, hash, length, from, out);
        if (n !== undefined) {
          this.count(found.loaded);
          return n;
        }
      }
      if (attempt === 3) throw new UnavailableError(`chunk ${hash.slice(0, 16)}… left the cache three times right after it was loaded; try the read again`);
      const next = await this.locate(hash, length, load);
      found = { loaded: found.loaded || next.loaded, bytes: next.bytes };
    }
  }

  async fill(hash: string, length: number, load: ChunkLoad): Promise<boolean> {
    checkChunkKey(hash, length, this.closed);
    if (this.has(hash)) {
      this.counts.hits++;
      return false;
    }
    const { loaded } = await this.locate(hash, length, load, false);
    this.count(loaded);
    return loaded;
  }

  has(hash: string): boolean {
    return this.index.has(hash) || this.memory.has(hash);
  }

  stats(): ChunkCacheStats {
    return {
      bytes: this.dataBytes + this.memory.calculatedSize,
      entries: this.index.size + this.memory.size,
      inMemory: this.memory.size,
      ...this.counts,
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.flights.settled();
    await Promise.allSettled([...this.removals.values(), ...this.touches]);
    this.files.clear();
    this.memory.clear();
    await this.pool.close();
  }

  private path(hash: string): string {
    return join(this.root, hash.slice(0, 2), hash);
  }

  private count(loaded: boolean): void {
    if (loaded) this.counts.misses++;
    else this.counts.hits++;
  }

  /**
   * Finds the chunk's file, or loads the chunk when there is none; merged
   * across callers, so that however many read a missing chunk at once (or
   * look for it while it loads) `load` is called once. A small chunk comes
   * back as its bytes (read whole, checked); a large one's file is left open
   * in `files`. Bytes kept only for this load (too big for either bound) come
   * back too. An IntegrityError when the load did not bring the chunk.
   * `open: false` (a fill) leaves a loaded chunk's file closed.
   */
  private locate(hash: string, length: number, load: ChunkLoad, open = true): Promise<Located> {
    return this.flights.do(hash, async () => {
      const stored = await this.findStored(hash, length);
      if (stored) return { loaded: false, bytes: stored === true ? undefined : stored };
      this.counts.loads++;
      let own: Buffer | undefined;
      await load((plan) => this.fetch(plan, (h, bytes) => h === hash && (own = bytes)));
      if (own) return { loaded: true, bytes: own };
      if (!this.has(hash)) throw loadedMismatch(hash);
      if (!open) return { loaded: true };
      const after = await this.findStored(hash, length);
      return { loaded: true, bytes: after === true || after === undefined ? undefined : after };
    });
  }

  /** A small chunk's bytes, or true when a large one's file is open in `files`; undefined when there is no good file. */
  private async findStored(hash: string, length: number): Promise<Buffer | true | undefined> {
    await this.removals.get(hash);
    if (this.memory.has(hash)) return this.memory.get(hash);
    if (length <= SMALL_CHUNK) {
      const got = await this.readSmall(hash, length);
      if (got !== 'other') return got;
    }
    return (await this.openStored(hash, length)) ? true : undefined;
  }

  /** Runs a plan on a fetch thread and records what it stored; `unkept` receives chunks no bound could keep. */
  private async fetch(plan: FetchPlan, unkept: (hash: string, bytes: Buffer) => void): Promise<FetchOutcome> {
    if (this.closed) throw new FailedPreconditionError('the chunk cache is closed');
    for (const c of plan.chunks) {
      checkChunkKey(c.hash, c.length, false, c.at);
      if (c.at + c.length > plan.length) throw new InvalidArgumentError(`chunk ${c.hash.slice(0, 16)}… lies beyond the ${plan.length} bytes fetched`);
    }
    await Promise.all(plan.chunks.map((c) => this.removals.get(c.hash)));
    const job: FetchJob = {
      source: plan.source,
      offset: plan.offset,
      length: plan.length,
      // A chunk larger than the bound comes back in memory instead of being written.
      chunks: plan.chunks.map((c) => ({ ...c, path: fileSizeOf(c.length) > this.maxBytes ? undefined : this.path(c.hash) })),
      fileMode: this.modes.file,
      dirMode: this.modes.dir,
    };
    const result = await this.pool.run(job);
    if (!result.ok) throw new UnavailableError(result.error);
    const outcome: FetchOutcome = new Map();
    for (const c of result.chunks) {
      if (c.status === 'mismatch') {
        outcome.set(c.hash, 'mismatch');
        continue;
      }
      outcome.set(c.hash, 'kept');
      const length = plan.chunks.find((p) => p.hash === c.hash)!.length;
      if (c.status === 'stored') {
        this.remember(c.hash, length, Date.now());
        continue;
      }
      const bytes = Buffer.from(c.bytes.buffer, c.bytes.byteOffset, c.bytes.byteLength);
      if (NO_SPACE.has(c.code)) {
        if (await this.storeAgain(c.hash, bytes, c.code)) continue;
      } else if (c.code !== 'E2BIG') this.warnOnce(`write-${c.code}`, c.code, 'cannot write to the chunk cache; keeping chunks in memory instead');
      this.memory.set(c.hash, bytes);
      if (!this.memory.has(c.hash)) unkept(c.hash, bytes);
    }
    return outcome;
  }

  /** After ENOSPC or EDQUOT: evicts at least `size` bytes and writes the chunk once more; whether that worked. */
  private async storeAgain(hash: string, bytes: Buffer, code: string): Promise<boolean> {
    this.evict(fileSizeOf(bytes.length));
    await Promise.allSettled([...this.removals.values()]);
    const again = await this.pool.run({
      source: { bytes },
      offset: 0,
      length: bytes.length,
      chunks: [{ hash, length: bytes.length, at: 0, path: this.path(hash) }],
      fileMode: this.modes.file,
      dirMode: this.modes.dir,
    });
    if (again.ok && again.chunks[0]?.status === 'stored') {
      this.remember(hash, bytes.length, Date.now());
      return true;
    }
    this.warnOnce(`full-${code}`, code, 'chunk cache disk is full even after evicting; keeping chunks in memory instead');
    return false;
  }

  /**
   * Copies [at, at + out.length) of the chunk's open file into `out`,
   * checking the blocks read; undefined when the file turns out bad (dropped,
   * so that the caller loads the chunk again) or gone.
   */
  private async readOpen(f: OpenChunk, hash: string, length: number, at: number, out: Buffer): Promise<number | undefined> {
    const since = this.seq;
    if (f.length !== length) throw new IntegrityError(`chunk ${hash.slice(0, 16)}… is ${f.length} bytes, not ${length}`);
    if (out.length === 0) return 0;
    f.users++;
    try {
      if (Date.now() - f.checkedMs >= RECHECK_MS) {
        f.checkedMs = Date.now();
        // Removed meanwhile (evicted by another process, the directory deleted): its disk space is held until we let go.
        if ((await fstatOf(f.fd)).nlink === 0) {
          this.files.delete(hash);
          if ((this.index.peek(hash)?.seq ?? 0) <= since) this.forget(hash);
          return undefined;
        }
      }
      const first = at >> BLOCK_SHIFT;
      const start = first * BLOCK;
      const end = at + out.length;
      const aligned = start === at && (end % BLOCK === 0 || end === length);
      const span = aligned ? out : Buffer.allocUnsafe(Math.min(length, blocksOf(end) * BLOCK) - start);
      if ((await preadFull(f.fd, span, start)) !== span.length) throw new DamagedFile('the file is shorter than its trailer says');
      if (!blocksMatch(span, first, f.table)) throw new DamagedFile('a block does not match its CRC32C');
      if (!aligned) span.copy(out, 0, at - start, at - start + out.length);
    } catch (err) {
      if (err instanceof DamagedFile) this.damaged(hash, err.message);
      else this.unreadable(hash, err, since);
      return undefined;
    } finally {
      f.users--;
      if (f.dropped && f.users === 0) closeFd(f.fd, () => undefined);
    }
    this.adopt(hash, length);
    return out.length;
  }

  /**
   * A small chunk's file read whole in one pread and checked, without
   * keeping it open (a walk through small files reads each once); 'other'
   * when the file is not the size this length makes (openStored decides).
   */
  private async readSmall(hash: string, length: number): Promise<Buffer | undefined | 'other'> {
    const since = this.seq;
    const size = fileSizeOf(length);
    const buf = Buffer.allocUnsafe(size + 1);
    const fd = await this.openFile(hash, since);
    if (fd === undefined) return undefined;
    let n: number;
    try {
      n = await preadFull(fd, buf, 0);
    } catch (err) {
      this.unreadable(hash, err, since);
      return undefined;
    } finally {
      closeFd(fd, () => undefined);
    }
    if (n !== size) return 'other';
    const table = crcTableOf(buf.subarray(length, size), length);
    if (!table || !blocksMatch(buf.subarray(0, length), 0, table)) {
      this.damaged(hash, table ? 'a block does not match its CRC32C' : 'its trailer is missing or not this format');
      return undefined;
    }
    this.adopt(hash, length);
    return buf.subarray(0, length);
  }

  private remember(hash: string, length: number, touchedMs: number): Entry {
    const entry: Entry = { size: fileSizeOf(length), length, seq: ++this.seq, touchedMs };
    this.dataBytes += length;
    this.index.set(hash, entry);
    return entry;
  }

  /** Drops the index entry but leaves the file (it is gone already, or is another process's newer one). */
  private forget(hash: string): void {
    this.keepFileOf = hash;
    try {
      this.index.delete(hash);
    } finally {
      this.keepFileOf = undefined;
    }
  }

  /** The chunk's file opened for reading; undefined when it cannot be (unreadable() says why, against entries older than `since`). */
  private async openFile(hash: string, since: number): Promise<number | undefined> {
    try {
      return await openChunkFile(this.path(hash));
    } catch (err) {
      this.unreadable(hash, err, since);
      return undefined;
    }
  }

  /** Indexes a good file this process did not know (another process wrote it), or bumps a known one's mtime. */
  private adopt(hash: string, length: number): void {
    const entry = this.index.get(hash);
    if (entry) return this.touch(hash, entry);
    if (this.removals.has(hash)) return;
    this.touch(hash, this.remember(hash, length, 0));
  }

  /**
   * Opens the chunk's file and reads its CRC table; undefined when there is
   * none (or it is damaged: dropped). A good file of another length is an
   * IntegrityError for this caller, and stays.
   */
  private async openStored(hash: string, length: number): Promise<OpenChunk | undefined> {
    const since = this.seq;
    const fd = await this.openFile(hash, since);
    if (fd === undefined) return undefined;
    let keep = false;
    try {
      const { size } = await fstatOf(fd);
      const stored = lengthOfFile(size);
      const tail = stored === undefined ? undefined : Buffer.allocUnsafe(size - stored);
      const table = tail && (await preadFull(fd, tail, stored!)) === tail.length ? crcTableOf(tail, stored!) : undefined;
      if (!table || size !== fileSizeOf(stored!)) {
        this.damaged(hash, 'its trailer is missing or not this format');
        return undefined;
      }
      if (stored !== length) throw new IntegrityError(`chunk ${hash.slice(0, 16)}… is ${stored} bytes, not ${length}`);
      keep = true;
      const f: OpenChunk = { fd, length, table: Buffer.from(table), users: 0, checkedMs: Date.now(), dropped: false };
      this.files.set(hash, f);
      // Written by another process (or dropped from our index while we read it): adopt it.
      if (!this.index.has(hash)) this.adopt(hash, length);
      return f;
    } catch (err) {
      if (err instanceof IntegrityError) throw err;
      this.unreadable(hash, err, since);
      return undefined;
    } finally {
      if (!keep) closeFd(fd, () => undefined);
    }
  }

  /** A file that fails its checks: counted, logged, dropped (the caller loads the chunk again). */
  private damaged(hash: string, why: string): void {
    this.counts.corruptions++;
    this.log.warn({ hash, why }, `cached chunk is damaged (${why}); removing it and loading it again`);
    this.drop(hash);
  }

  /** A file that cannot be opened or read: gone (another process evicted it, the directory was deleted) or unreadable. */
  private unreadable(hash: string, err: unknown, since: number): void {
    const code = errnoOf(err);
    if (code !== 'ENOENT') this.warnOnce(`read-${code}`, err, 'cannot read a cached chunk; loading it instead');
    // An entry made after the failed call began (a pack range stored the chunk meanwhile) names a good file.
    if ((this.index.peek(hash)?.seq ?? 0) > since) return;
    this.files.delete(hash);
    this.forget(hash);
  }

  /** Forgets the chunk and removes its file. */
  private drop(hash: string): void {
    this.files.delete(hash);
    if (this.index.has(hash)) this.index.delete(hash);
    else this.removeFile(hash);
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
    this.files.delete(hash);
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
  private async scan(checkTrailers: boolean): Promise<number> {
    const files: { hash: string; size: number; mtimeMs: number }[] = [];
    const temps: string[] = [];
    const names: { hash: string; path: string }[] = [];
    const others: string[] = [];
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
          const length = lengthOfFile(st.size);
          // Not this format's size or trailer: a file of an older cache format, or torn by a crash. Loaded again when read.
          if (length === undefined || (checkTrailers && (await lengthInFile(path, st.size)) !== length)) return void others.push(hash);
          files.push({ hash, size: length, mtimeMs: st.mtimeMs });
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
    for (const hash of others) this.removeFile(hash);
    if (others.length > 0) this.log.info({ dir: this.root, files: others.length }, `removed ${others.length} chunk files that are not in this cache format (an older stowage, or torn by a crash); they are loaded again when read`);
    files.sort((a, b) => a.mtimeMs - b.mtimeMs);
    // Setting newest last makes it the most recently used; beyond the bound the oldest go (and their files).
    for (const f of files) {
      // A chunk larger than the bound (left by a run with a larger one) can never be indexed.
      if (fileSizeOf(f.size) > this.maxBytes) this.removeFile(f.hash);
      else this.remember(f.hash, f.size, f.mtimeMs);
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

function fstatOf(fd: number): Promise<Stats> {
  return new Promise((resolve, reject) => fstat(fd, (err, st) => (err ? reject(err) : resolve(st))));
}

function openChunkFile(path: string): Promise<number> {
  return new Promise<number>((resolve, reject) => openFd(path, constants.O_RDONLY | constants.O_NOFOLLOW, (err, n) => (err ? reject(err) : resolve(n))));
}

/** The chunk length the trailer at the end of the file names; undefined when it has none of this format or cannot be read. */
async function lengthInFile(path: string, size: number): Promise<number | undefined> {
  if (size < TRAILER_BYTES) return undefined;
  const fd = await openChunkFile(path).catch(() => undefined);
  if (fd === undefined) return undefined;
  try {
    const trailer = Buffer.alloc(TRAILER_BYTES);
    return (await preadFull(fd, trailer, size - TRAILER_BYTES)) === TRAILER_BYTES ? lengthInTrailer(trailer) : undefined;
  } catch {
    return undefined;
  } finally {
    closeFd(fd, () => undefined);
  }
}

/** Reads into all of `buf` from `position` (fewer bytes only at the end of the file); how many were read. */
function preadFull(fd: number, buf: Buffer, position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let done = 0;
    const step = (): void => {
      if (done === buf.length) return resolve(done);
      readFd(fd, buf, done, buf.length - done, position + done, (err, n) => {
        if (err) return reject(err);
        if (n === 0) return resolve(done);
        done += n;
        step();
      });
    };
    step();
  });
}
