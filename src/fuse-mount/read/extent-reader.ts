/**
 * ExtentReader: the one way the mount, its read-ahead and `stowage volume
 * warmup` get the bytes of a file's extents. It holds what that takes: the
 * host's chunk cache, the URLs of blobs (blob-urls.ts), the transport
 * (presigned URL, local chunk file, or the server's stream) and the damage
 * reports.
 *
 * - read() copies a range of one extent into the caller's buffer through the
 *   cache; fill() only makes sure the cache holds it (prefetch, warmup).
 * - A miss is loaded by a ChunkLoad: loader() fetches the extent alone;
 *   pack-reads.ts makes loaders that fetch a run of a pack with it. Either
 *   way fetchRange() plans the transfer: the cache's fetch threads read a
 *   presigned URL or the local store's file themselves, so the bytes never
 *   reach the thread that answers FUSE. When that fails (the store is out of
 *   reach, a thread died), the range is read once more here through
 *   BlobTransport, which falls back to the server's stream and turns a
 *   missing blob into a damage report, and the bytes go to the cache as they
 *   are. Bytes from a local chunk file that do not match are fetched again
 *   through the server, whose own copy decides (as BlobTransport.verified).
 * - An extent whose bytes fail their hash is reported to the server (which
 *   re-checks the blob and marks it damaged) and the read fails with the
 *   IntegrityError (EIO at the FUSE edge).
 */
import { BlobTransport, type TransferMode } from '../../client/blob-transport.js';
import { sourceOf } from '../../client/fetch-job.js';
import type { Connection } from '../../client/connection.js';
import { FailedPreconditionError, IntegrityError } from '../../common/errors.js';
import type { Extent, FileEntry } from '../../gen/stowage/v1/volume.js';
import type { ChunkCache, ChunkLoad, FetchOutcome, FetchPlan } from '../cache/types.js';
import { BlobUrls } from './blob-urls.js';

type Fetch = (plan: FetchPlan) => Promise<FetchOutcome>;

/** Errors whose damage was reported already (each waiter of a merged load gets the same one). */
const reported = new WeakSet<object>();
export type PlannedChunk = FetchPlan['chunks'][number];

export class ExtentReader {
  readonly transport: BlobTransport;
  private readonly urls: BlobUrls;
  /** Bytes fetched from the store or the server into the cache (mount reports). */
  bytesFetched = 0;

  constructor(
    conn: Connection,
    readonly cache: ChunkCache,
    transfer?: TransferMode,
  ) {
    this.transport = new BlobTransport(conn, transfer);
    this.urls = new BlobUrls(conn, this.transport);
  }

  /** Copies bytes [at, at + into.length) of extent `index` of `entry` into `into`; how many (fewer at the extent's end). */
  async read(entry: FileEntry, index: number, at: number, into: Buffer, load: ChunkLoad = this.loader(entry, index)): Promise<number> {
    const e = entry.extents[index]!;
    try {
      return await this.cache.read(e.hash, e.length, at, into, load);
    } catch (err) {
      throw await this.failed(err, e);
    }
  }

  /** Makes sure the cache holds extent `index` of `entry`; whether it was fetched now. */
  async fill(entry: FileEntry, index: number, load: ChunkLoad = this.loader(entry, index)): Promise<boolean> {
    const e = entry.extents[index]!;
    try {
      return await this.cache.fill(e.hash, e.length, load);
    } catch (err) {
      throw await this.failed(err, e);
    }
  }

  /** Loads the extent alone. */
  loader(entry: FileEntry, index: number): ChunkLoad {
    const e = entry.extents[index]!;
    return async (fetch) => {
      await this.fetchRange(entry, index, e.offset, e.length, [{ hash: e.hash, length: e.length, at: 0 }], fetch);
    };
  }

  /**
   * Has the cache fetch [offset, offset + length) of the blob of extent
   * `index` of `entry` and store `chunks` from it, by the route the server's
   * URL allows, falling back as the header says.
   */
  async fetchRange(entry: FileEntry, index: number, offset: number, length: number, chunks: PlannedChunk[], fetch: Fetch): Promise<FetchOutcome> {
    const out = await this.fetchVia(entry, index, offset, length, chunks, fetch);
    this.bytesFetched += length;
    return out;
  }

  private async fetchVia(entry: FileEntry, index: number, offset: number, length: number, chunks: PlannedChunk[], fetch: Fetch): Promise<FetchOutcome> {
    const e = entry.extents[index]!;
    const url = await this.urls.forExtent(entry, index);
    const route = await this.transport.direct(url, e.blob, 'chunks');
    let bytes: Buffer | undefined;
    if (route) {
      try {
        const out = await fetch({ source: sourceOf(route), offset, length, chunks });
        // Another file at the server's path: the server's own copy decides.
        if (!('file' in route) || ![...out.values()].includes('mismatch')) return out;
        bytes = await this.viaTransport(entry, e, offset, length, undefined);
      } catch (err) {
        if (err instanceof FailedPreconditionError) throw err;
        bytes = await this.viaTransport(entry, e, offset, length, url);
      }
    }
    bytes ??= await this.viaTransport(entry, e, offset, length, undefined);
    return fetch({ source: { bytes }, offset, length: bytes.length, chunks });
  }

  /** The range read on this thread by BlobTransport (a missing blob becomes its damage error). */
  private async viaTransport(entry: FileEntry, e: Extent, offset: number, length: number, url: string | undefined): Promise<Buffer> {
    try {
      return await this.transport.read(e.blob, offset, length, url);
    } catch (err) {
      const out = await this.transport.readFailure(err, e, `/${entry.path}`);
      if (out instanceof IntegrityError) reported.add(out);
      throw out;
    }
  }

  /** A failed read or fill: bytes that failed their hash are reported as damage of the blob. */
  private async failed(err: unknown, e: Extent): Promise<unknown> {
    if (err instanceof IntegrityError && !reported.has(err)) {
      reported.add(err);
      await this.transport.reportDamaged(e.blob);
    }
    return err;
  }
}
