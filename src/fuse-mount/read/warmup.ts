/**
 * warmupVolume: fills the host's chunk cache with the chunks of some files of
 * one version of a volume ahead of a job, so that a later mount of that
 * version with the same cache reads them without going to the store.
 *
 * - One version throughout: the first listing pins it (the latest unless one
 *   is asked for) and every further path is listed at that version, so a
 *   commit landing meanwhile cannot mix two versions.
 * - The unit of work is the cache's key, the extent hash: a chunk shared by
 *   two files (or repeated in one) is fetched once. Chunks the cache says it
 *   holds (`has`) are skipped without reading them; a damaged file among them
 *   is caught, as on any hit, when a read checks it.
 * - Each fetch is the mount's own: ExtentReader.fill (extent-reader.ts), the
 *   cache's fetch threads fetching by a presigned URL when granted, else
 *   through the server's stream, so loaded bytes are verified before they are
 *   stored and a damaged blob is reported to the server. At most
 *   `concurrency` fetches run at once.
 * - The first failure stops new fetches; those in flight finish, then it is
 *   thrown. What was fetched stays cached, so running warmup again resumes.
 * - Whether chunks stay is the cache's business: more bytes than its bound
 *   evict the least recently used. The result counts the chunks the cache no
 *   longer holds at the end, so a caller can say that the bound is too small.
 *
 * The caller owns the cache (warmup neither opens nor closes it).
 */
import pLimit from 'p-limit';
import type { TransferMode } from '../../client/blob-transport.js';
import type { Connection } from '../../client/connection.js';
import type { TransferProgress } from '../../client/index.js';
import { checkedListing } from '../../client/server-answers.js';
import { IntegrityError } from '../../common/errors.js';
import { checkName, normalizePath } from '../../common/validate.js';
import { FileType, type FileEntry } from '../../gen/stowage/v1/volume.js';
import { ExtentReader } from './extent-reader.js';
import type { ChunkCache } from '../cache/types.js';

export interface WarmupOptions {
  connection: Connection;
  volume: string;
  /** Files or directories (recursively) in the volume; none, or only '/', means all of it. */
  paths?: string[];
  /** The version to warm; the latest when left out. */
  version?: number;
  /** The host's chunk cache, as a mount of this host would open it. */
  cache: ChunkCache;
  /** Fetches at once (default 8). */
  concurrency?: number;
  transfer?: TransferMode;
  /** Called once the files are listed and after every chunk; bytes are those fetched from the store. */
  onProgress?: (p: TransferProgress) => void;
}

export interface WarmupResult {
  volume: string;
  version: number;
  /** Files selected by the paths, each counted once; directories are not counted. */
  files: number;
  /** Their total size. */
  bytes: number;
  /** Distinct chunks (extent hashes) of those files. */
  chunks: number;
  /** Chunks read from the store now, and their bytes. */
  chunksFetched: number;
  bytesFetched: number;
  /** Chunks the cache already held (not read from the store), and their bytes. */
  chunksCached: number;
  bytesCached: number;
  /** Chunks the cache does not hold at the end: larger than its bound, or evicted to stay within it. */
  chunksNotKept: number;
  seconds: number;
}

const DEFAULT_CONCURRENCY = 8;

/** One distinct chunk: the first extent that names it, and the files that contain it. */
interface Chunk {
  entry: FileEntry;
  index: number;
  hash: string;
  length: number;
  files: number[];
}

export async function warmupVolume(opts: WarmupOptions): Promise<WarmupResult> {
  const started = performance.now();
  const volume = checkName('volume', opts.volume);
  const { cache } = opts;
  const { version, files } = await listFiles(opts.connection, volume, opts.paths ?? [], opts.version ?? 0);

  const chunks = new Map<string, Chunk>();
  files.forEach((entry, file) => {
    const seen = new Set<string>();
    entry.extents.forEach((e, index) => {
      if (seen.has(e.hash)) return;
      seen.add(e.hash);
      let c = chunks.get(e.hash);
      if (!c) {
        c = { entry, index, hash: e.hash, length: e.length, files: [] };
        chunks.set(e.hash, c);
      }
      c.files.push(file);
    });
  });
  const todo: Chunk[] = [];
  let chunksCached = 0;
  let bytesCached = 0;
  for (const c of chunks.values()) {
    if (cache.has(c.hash)) {
      chunksCached++;
      bytesCached += c.length;
    } else todo.push(c);
  }

  // A file is done once none of its chunks is left to fetch.
  const waitingOn = files.map(() => 0);
  for (const c of todo) for (const f of c.files) waitingOn[f]!++;
  const progress: TransferProgress = {
    filesDone: waitingOn.filter((n) => n === 0).length,
    filesTotal: files.length,
    bytesDone: 0,
    bytesTotal: todo.reduce((n, c) => n + c.length, 0),
    bytesTransferred: 0,
  };
  opts.onProgress?.({ ...progress });

  const extents = new ExtentReader(opts.connection, cache, opts.transfer);
  const limit = pLimit(opts.concurrency ?? DEFAULT_CONCURRENCY);
  let failure: { err: unknown } | undefined;
  let chunksFetched = 0;
  let bytesFetched = 0;
  await Promise.all(
    todo.map((c) =>
      limit(async () => {
        if (failure) return;
        let loaded: boolean;
        try {
          loaded = await extents.fill(c.entry, c.index);
        } catch (err) {
          failure ??= { err: err instanceof IntegrityError ? new IntegrityError(`/${c.entry.path}: ${err.message}`) : err };
          return;
        }
        // Another process (a mount, another warmup) may have stored it meanwhile.
        if (loaded) {
          chunksFetched++;
          bytesFetched += c.length;
        } else {
          chunksCached++;
          bytesCached += c.length;
        }
        progress.bytesDone += c.length;
        if (loaded) progress.bytesTransferred += c.length;
        for (const f of c.files) if (--waitingOn[f]! === 0) progress.filesDone++;
        opts.onProgress?.({ ...progress });
      }),
    ),
  );
  if (failure) throw failure.err;

  let chunksNotKept = 0;
  for (const hash of chunks.keys()) if (!cache.has(hash)) chunksNotKept++;
  return {
    volume,
    version,
    files: files.length,
    bytes: files.reduce((n, f) => n + f.size, 0),
    chunks: chunks.size,
    chunksFetched,
    bytesFetched,
    chunksCached,
    bytesCached,
    chunksNotKept,
    seconds: (performance.now() - started) / 1000,
  };
}

/**
 * The files at or below each path, in one version (the first listing's), each
 * once even when paths overlap. A missing volume, version or path is the
 * server's NotFoundError, which says how to list what there is.
 */
async function listFiles(conn: Connection, volume: string, paths: string[], version: number): Promise<{ version: number; files: FileEntry[] }> {
  const byPath = new Map<string, FileEntry>();
  let at = version;
  for (const path of paths.length > 0 ? paths : ['']) {
    const dir = normalizePath(path);
    const call = conn.volumes.listFiles({ volume, path: dir, recursive: true, version: at, pageSize: 0, pageToken: '', withoutExtents: false });
    const listed: FileEntry[] = [];
    for await (const batch of conn.stream(call)) {
      at = batch.version;
      listed.push(...batch.entries);
    }
    // Extent lengths size the buffers a warmup fetches into: checked like any listing.
    for (const e of checkedListing(listed, dir, true, `the listing of "${dir}" in volume "${volume}"`)) {
      if (e.type !== FileType.FILE_TYPE_DIRECTORY) byPath.set(e.path, e);
    }
  }
  return { version: at, files: [...byPath.values()] };
}
