/**
 * Moves blob bytes between the client and the store: straight to S3 with the
 * presigned URLs the server hands out, or streamed through the server (the
 * fallback, and the only path for the local-directory store). Every download
 * is verified against its hash before anyone sees it.
 *
 * A URL is the server's word, and the server may be an impostor: only http(s)
 * URLs, and file:// URLs naming the blob's own chunk file in the store of the
 * local server this client knows (local-files.ts), are used. Any other URL is
 * ignored and the bytes go through the server's stream, so no answer can make
 * the client read or write another local file.
 */
import { dirname } from 'node:path';
import { IntegrityError, NotFoundError, StowageError, UnavailableError, messageOf } from '../common/errors.js';
import { sha256 } from '../common/hash.js';
import { MAX_BLOB_BYTES } from '../common/validate.js';
import type { Extent } from '../gen/stowage/v1/volume.js';
import type { Connection } from './connection.js';
import { BodyTooLongError, HTTP_ANSWER_BYTES, httpCall, httpGetRange } from './http.js';
import { LocalStore, isFileUrl, readChunkFile, writeChunkFile } from './local-files.js';

const FRAME = 1024 * 1024;

/**
 * Reads refused for sending more bytes than asked for. They are
 * IntegrityErrors (bytes that cannot be the blob's), but not a missing chunk:
 * readExtent passes them on as they are instead of reporting damage.
 */
const oversized = new WeakSet<Error>();

function tooManyBytes(blob: string, offset: number, length: number, from: string, why: string): IntegrityError {
  const err = new IntegrityError(
    `refused a read of chunk ${blob.slice(0, 16)}… (${length} bytes at offset ${offset}) from ${from}: ${why}; nothing of it was used: check that the server address names a stowage server you trust (traffic to it is not encrypted)`,
  );
  oversized.add(err);
  return err;
}

/** How blob bytes travel: 'auto' uses presigned URLs when granted and reachable. */
export type TransferMode = 'auto' | 'direct' | 'proxy';

/** How long transfers go through the server after a direct one failed to connect. */
const DIRECT_RETRY_MS = 30_000;

export function transferModeFromEnv(): TransferMode {
  const v = process.env.STOWAGE_TRANSFER;
  return v === 'direct' || v === 'proxy' ? v : 'auto';
}

export class BlobTransport {
  /**
   * After a direct transfer failed to connect, transfers go through the server
   * until this time (ms since the epoch); then direct ones are tried again, so
   * a long-lived client (a mount) gets its fast path back after an outage.
   */
  private directBrokenUntil = 0;
  /** The chunk files this client may touch itself: undefined unless it knows its server's data dir. */
  private readonly localStore: LocalStore | undefined;

  constructor(
    private readonly conn: Connection,
    readonly mode: TransferMode = transferModeFromEnv(),
  ) {
    this.localStore = conn.dataDir === undefined ? undefined : new LocalStore(conn.dataDir);
  }

  /** Whether to ask the server for presigned URLs at all. */
  get wantsPresign(): boolean {
    return this.mode !== 'proxy' && Date.now() >= this.directBrokenUntil;
  }

  /**
   * Where a URL from the server may take this client: an http(s) URL, the
   * local chunk file of `hash`, or nowhere (undefined: use the server's stream).
   * With STOWAGE_TRANSFER=direct a URL that cannot be used is an error.
   * (The mount's fetch threads take the same route: fuse-mount/read/extent-reader.ts.)
   */
  async direct(url: string | undefined, hash: string, area: 'chunks' | 'incoming'): Promise<{ file: string } | { http: string } | undefined> {
    if (!url || !this.wantsPresign) return undefined;
    if (isFileUrl(url)) {
      const file = await this.localStore?.chunkPath(url, hash, area);
      if (file !== undefined) return { file };
    } else if (/^https?:\/\//i.test(url)) {
      return { http: url };
    }
    if (this.mode === 'direct') {
      throw new UnavailableError(
        `the server offered a URL for chunk ${hash.slice(0, 16)}… that this client does not use (${isFileUrl(url) ? (this.localStore ? `not the chunk's file in ${this.localStore.dir}` : 'a local file, and the local server\'s data dir is not known: set STOWAGE_DATA_DIR to it') : 'not http(s)'}); set STOWAGE_TRANSFER=auto to stream through the stowage server`,
      );
    }
    return undefined;
  }

  async upload(hash: string, data: Buffer, putUrl: string | undefined): Promise<void> {
    const to = await this.direct(putUrl, hash, 'incoming');
    if (to) {
      try {
        if ('file' in to) return await writeChunkFile(to.file, data);
        const res = await httpCall(to.http, 'PUT', {}, data, { maxBody: () => HTTP_ANSWER_BYTES });
        if (res.status >= 200 && res.status < 300) return;
        throw new UnavailableError(`direct upload of chunk ${hash} failed: HTTP ${res.status} ${res.body.toString('utf8', 0, 500)}`);
      } catch (err) {
        this.fellBack(err, to);
      }
    }
    const frames: { hash: string; size: number; data: Buffer }[] = [{ hash, size: data.length, data: Buffer.alloc(0) }];
    for (let i = 0; i < data.length; i += FRAME) frames.push({ hash: '', size: 0, data: data.subarray(i, i + FRAME) });
    await this.conn.clientStream((cb) => this.conn.volumes.putBlob(cb), frames);
  }

  /** Reads `length` bytes of a blob at `offset` (into `into` when it fits). */
  async read(blob: string, offset: number, length: number, getUrl: string | undefined, into?: Buffer): Promise<Buffer> {
    const from = await this.direct(getUrl, blob, 'chunks');
    if (from) {
      try {
        if ('file' in from) return await readChunkFile(from.file, offset, length, into);
        const res = await httpGetRange(from.http, offset, length, MAX_BLOB_BYTES, into);
        if (res.status >= 200 && res.status < 300) return res.body;
        if (res.status === 404) throw new IntegrityError(`chunk ${blob} is missing from the store`);
        throw new UnavailableError(`direct read of chunk ${blob} failed: HTTP ${res.status}`);
      } catch (err) {
        if (err instanceof IntegrityError) throw err;
        if (err instanceof BodyTooLongError) {
          throw tooManyBytes(blob, offset, length, `the object store at ${err.origin}`, `it answered (HTTP ${err.status}) with more than the ${err.maxBytes} bytes expected`);
        }
        this.fellBack(err, from);
      }
    }
    const most = length === 0 ? MAX_BLOB_BYTES : length;
    const parts: Buffer[] = [];
    let got = 0;
    for await (const m of this.conn.stream(this.conn.volumes.readBlob({ hash: blob, offset, length }))) {
      got += m.data.length;
      // Leaving the stream cancels the call (Connection.stream): the rest is never buffered.
      if (got > most) throw tooManyBytes(blob, offset, length, `stowage server at ${this.conn.server}`, `it sent more than the ${most} bytes asked for`);
      parts.push(m.data);
    }
    return Buffer.concat(parts);
  }

  /**
   * Reads one extent and checks its hash; `what` names the file for the
   * error. Damaged or missing bytes are reported to the server, which
   * re-checks the stored blob (with `file`: every blob of that file) and marks
   * what is damaged, so that the next upload of the file repairs it all.
   */
  async readExtent(e: Extent, getUrl: string | undefined, what: string, into?: Buffer, file?: FileRef): Promise<Buffer> {
    let data: Buffer;
    try {
      data = await this.read(e.blob, e.offset, e.length, getUrl, into);
    } catch (err) {
      throw await this.readFailure(err, e, what, file);
    }
    return this.verified(data, e, getUrl, what, file);
  }

  /**
   * The error to throw for a failed read of (a span holding) extent `e`: a
   * missing chunk is reported to the server and named as damage of `what`;
   * any other error is itself.
   */
  async readFailure(err: unknown, e: Extent, what: string, file?: FileRef): Promise<unknown> {
    if (!(err instanceof NotFoundError) && !(err instanceof IntegrityError)) return err;
    if (oversized.has(err)) return err;
    return this.damaged(e, what, 'is missing from the store', file);
  }

  /**
   * `data`, read for extent `e` from `getUrl` (or the server), when it matches
   * the extent's hash; otherwise the damage is reported and thrown (readExtent).
   */
  async verified(data: Buffer, e: Extent, getUrl: string | undefined, what: string, file?: FileRef): Promise<Buffer> {
    if (data.length === e.length && sha256(data) === e.hash) return data;
    // A file:// URL names a path on the server's host; should this client
    // see another file there, the server's own copy decides.
    if (getUrl && isFileUrl(getUrl)) {
      const viaServer = await this.read(e.blob, e.offset, e.length, undefined).catch(() => undefined);
      if (viaServer && viaServer.length === e.length && sha256(viaServer) === e.hash) return viaServer;
    }
    throw await this.damaged(e, what, 'does not match its hash', file);
  }

  /** Reports a damaged extent and makes the error that says how many chunks of the file are damaged and how to repair them. */
  async damaged(e: Extent, what: string, how: string, file?: FileRef): Promise<IntegrityError> {
    const blobs = await this.reportDamaged(e.blob, file);
    return damageError(e, what, how, blobs.length);
  }

  /**
   * Tells the server a blob failed its check (with `file`: the file it was
   * found in, whose blobs are then all checked); returns the blobs the server
   * found damaged. Never throws (the read error matters more).
   *
   * It waits the metadata deadline (STOWAGE_TIMEOUT), not the transfer one:
   * the caller's read has already failed, and its error should not wait ten
   * minutes on a report that only adds a count to it.
   */
  async reportDamaged(blob: string, file?: FileRef): Promise<string[]> {
    const res = await this.conn
      .unary(
        this.conn.volumes.reportDamagedBlob.bind(this.conn.volumes),
        { hash: blob, volume: file?.volume ?? '', path: file?.path ?? '', version: file?.version ?? 0 },
        { timeoutMs: this.conn.timeouts.timeoutMs },
      )
      .catch(() => undefined);
    return res?.damagedBlobs.filter((b) => /^[0-9a-f]{64}$/.test(b)) ?? [];
  }

  private fellBack(err: unknown, to: { file: string } | { http: string }): void {
    if (this.mode === 'direct') {
      if (err instanceof StowageError) throw err;
      // A refused connection is a bare system error: say which store, and what to do.
      throw new UnavailableError(
        `object store at ${'file' in to ? dirname(to.file) : new URL(to.http).origin} is unreachable (${messageOf(err)}); check that this machine can reach it, or set STOWAGE_TRANSFER=proxy to stream through the stowage server`,
        { cause: err },
      );
    }
    if (this.directBrokenUntil === 0) {
      process.emitWarning(
        `stowage: direct transfer to the object store failed (${messageOf(err)}); streaming through the server instead (direct transfers are tried again every ${DIRECT_RETRY_MS / 1000} s)`,
      );
    }
    this.directBrokenUntil = Date.now() + DIRECT_RETRY_MS;
  }
}

/** The file a read is for, so that a damage report can check the whole file. */
export interface FileRef {
  volume: string;
  path: string;
  version: number;
}

/** The error of a read that met damaged bytes: never the bytes, and what repairs them. */
export function damageError(e: Extent, what: string, how: string, damagedChunks: number): IntegrityError {
  const all = damagedChunks > 1 ? ` (the server found ${damagedChunks} chunks of it damaged or missing; one put of the file repairs them all)` : '';
  return new IntegrityError(
    `integrity check failed for ${what}: chunk ${e.blob.slice(0, 16)}… (bytes ${e.offset}-${e.offset + e.length - 1}) ${how}, so it was not returned; the stored copy is damaged: put the same file again (stowage volume put -f) to store a good copy${all}`,
  );
}
