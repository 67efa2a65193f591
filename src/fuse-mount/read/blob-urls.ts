/**
 * BlobUrls: presigned GET URLs for the blobs a mount reads, asked for lazily.
 *
 * A mount can live for days and a version can hold many thousands of blobs,
 * so URLs are not fetched up front: the first miss on a file asks the server
 * (PresignBlobs) for the blobs of a window of that file's extents at once, as
 * GetFile does for a whole file. URLs are reused for `refreshMs`, well inside
 * the server's expiry (1 h by default), and then asked for again. A store that
 * cannot presign answers with no URL: that answer is remembered the same way,
 * and BlobTransport streams through the server.
 */
import { LRUCache } from 'lru-cache';
import type { BlobTransport } from '../../client/blob-transport.js';
import type { Connection } from '../../client/connection.js';
import type { FileEntry } from '../../gen/stowage/v1/volume.js';
import { Singleflight } from '../cache/singleflight.js';

/** Extents of one file presigned by one request. */
const WINDOW = 256;
const DEFAULT_REFRESH_MS = 10 * 60 * 1000;
const MAX_REMEMBERED = 100_000;

export class BlobUrls {
  /** blob → URL, or '' for "the server gave none". */
  private readonly urls: LRUCache<string, string>;
  private readonly flights = new Singleflight<void>();

  constructor(
    private readonly conn: Connection,
    private readonly transport: BlobTransport,
    refreshMs = DEFAULT_REFRESH_MS,
  ) {
    this.urls = new LRUCache<string, string>({ max: MAX_REMEMBERED, ttl: refreshMs });
  }

  /** A URL for extent `index` of `entry`'s blob, or undefined (then read through the server). */
  async forExtent(entry: FileEntry, index: number): Promise<string | undefined> {
    if (!this.transport.wantsPresign) return undefined;
    const blob = entry.extents[index]!.blob;
    let url = this.urls.get(blob);
    if (url === undefined) {
      const start = index - (index % WINDOW);
      await this.flights.do(`${entry.path}#${start}`, () => this.presign(entry, start));
      url = this.urls.get(blob);
    }
    return url || undefined;
  }

  private async presign(entry: FileEntry, start: number): Promise<void> {
    const blobs = [...new Set(entry.extents.slice(start, start + WINDOW).map((e) => e.blob))];
    const res = await this.conn.unary(this.conn.volumes.presignBlobs.bind(this.conn.volumes), { blobs });
    for (const b of blobs) this.urls.set(b, res.getUrls[b] ?? '');
  }
}
