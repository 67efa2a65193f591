/**
 * The upload engine behind BatchUpload.
 *
 * Large files are cut into fixed-size chunks named by their SHA-256; for each
 * chunk the server is asked whether the store has it, and only missing chunks
 * are sent, `parallel` at a time. Reading waits while that many are in flight,
 * so memory stays near parallel × chunkSize whatever the file size.
 *
 * Small files are packed: their contents are hashed, the server says which it
 * already stores (and where), and the rest are concatenated into packs of up
 * to one chunk, each sent as one blob. 10,000 small files cost a few requests,
 * not 10,000.
 */
import { readFileSync } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import { SMALL_READ_MAX, eachInRuns } from '../common/files.js';
import type { Readable } from 'node:stream';
import { sha256 } from '../common/hash.js';
import { FileType, type Extent, type FileEntry } from '../gen/stowage/v1/volume.js';
import type { BlobTransport } from './blob-transport.js';
import type { BufferPool } from './buffer-pool.js';
import type { Connection } from './connection.js';
import { checkedPlan } from './server-answers.js';

export type UploadSource = string | Buffer | Readable;

export interface PendingFile {
  remotePath: string;
  source: UploadSource;
  /** Known for paths and buffers; undefined for streams. */
  size: number | undefined;
  mode: number;
  mtimeMs: number;
}

export interface TransferProgress {
  filesDone: number;
  filesTotal: number;
  bytesDone: number;
  /** undefined when a stream of unknown length is part of the transfer. */
  bytesTotal: number | undefined;
  /** Chunk bytes actually sent to or read from the store so far. */
  bytesTransferred: number;
}

export interface TransferStats {
  files: number;
  bytes: number;
  /** Blobs (chunks and packs) the files reference. */
  chunks: number;
  /** Blobs actually sent (or fetched); 0 when everything was there already. */
  chunksTransferred: number;
  bytesTransferred: number;
  seconds: number;
}

export interface UploadOptions {
  chunkSize: number;
  parallel: number;
  /** Files up to this size are packed together. */
  smallFileMax: number;
  /** Chunk buffers for reading files; each goes back once its chunk is sent or skipped. */
  pool: BufferPool;
  onProgress?: (p: TransferProgress) => void;
}

const SMALL_BATCH_FILES = 1000;

interface PackSlot {
  extent: Extent;
}

export class Uploader {
  private readonly inflight = new Set<Promise<void>>();
  private failure: unknown;
  private readonly seen = new Set<string>();
  private readonly stats = { chunks: new Set<string>(), chunksTransferred: 0, bytesTransferred: 0 };
  private progress: TransferProgress = { filesDone: 0, filesTotal: 0, bytesDone: 0, bytesTotal: 0, bytesTransferred: 0 };
  private pack: { parts: Buffer[]; size: number; slots: PackSlot[] } = { parts: [], size: 0, slots: [] };

  constructor(
    private readonly conn: Connection,
    private readonly transport: BlobTransport,
    private readonly volume: string,
    private readonly opts: UploadOptions,
  ) {}

  async run(files: PendingFile[]): Promise<{ entries: FileEntry[]; stats: TransferStats }> {
    const started = performance.now();
    const unknown = files.some((f) => f.size === undefined);
    this.progress = {
      filesDone: 0,
      filesTotal: files.length,
      bytesDone: 0,
      bytesTotal: unknown ? undefined : files.reduce((n, f) => n + (f.size ?? 0), 0),
      bytesTransferred: 0,
    };
    const entries = new Map<PendingFile, FileEntry>();
    const small = files.filter((f) => f.size !== undefined && f.size > 0 && f.size <= this.opts.smallFileMax);
    const isSmall = new Set(small);
    const large = files.filter((f) => !isSmall.has(f));
    try {
      await this.uploadSmall(small, entries);
      for (const f of large) entries.set(f, await this.uploadLarge(f));
      await this.drain();
    } catch (err) {
      await Promise.allSettled(this.inflight);
      throw err;
    }
    const ordered = files.map((f) => entries.get(f)!);
    return {
      entries: ordered,
      stats: {
        files: files.length,
        bytes: ordered.reduce((n, e) => n + e.size, 0),
        chunks: this.stats.chunks.size,
        chunksTransferred: this.stats.chunksTransferred,
        bytesTransferred: this.stats.bytesTransferred,
        seconds: (performance.now() - started) / 1000,
      },
    };
  }

  // ---- large files: chunk, hash, send what is missing ------------------------

  private async uploadLarge(f: PendingFile): Promise<FileEntry> {
    const extents: Extent[] = [];
    let size = 0;
    for await (const chunk of readChunks(f.source, this.opts.chunkSize, this.opts.pool)) {
      const hash = sha256(chunk);
      extents.push({ blob: hash, offset: 0, length: chunk.length, hash });
      size += chunk.length;
      await this.send(hash, chunk);
      this.progress.bytesDone += chunk.length;
      this.report();
    }
    this.progress.filesDone++;
    this.report();
    return entry(f, size, extents);
  }

  /** Queues a blob for upload once there is room; returns when it is queued. */
  private async send(hash: string, data: Buffer): Promise<void> {
    this.stats.chunks.add(hash);
    if (this.seen.has(hash)) return this.opts.pool.release(data);
    this.seen.add(hash);
    while (this.inflight.size >= this.opts.parallel) await Promise.race(this.inflight);
    if (this.failure) throw this.failure;
    const task = this.sendNow(hash, data).then(
      () => {
        this.inflight.delete(task);
      },
      (err: unknown) => {
        this.inflight.delete(task);
        this.failure ??= err;
      },
    );
    this.inflight.add(task);
  }

  private async sendNow(hash: string, data: Buffer): Promise<void> {
    try {
      await this.planAndSend(hash, data);
    } finally {
      this.opts.pool.release(data);
    }
  }

  private async planAndSend(hash: string, data: Buffer): Promise<void> {
    const plan = checkedPlan(
      await this.conn.unary(this.conn.volumes.planUpload.bind(this.conn.volumes), {
        volume: this.volume,
        blobs: [hash],
        contents: [],
        presign: this.transport.wantsPresign,
      }),
      [hash],
      new Map(),
      this.planWhat(),
    );
    if (!plan.missingBlobs.includes(hash)) return;
    await this.transport.upload(hash, data, plan.putUrls[hash]);
    this.stats.chunksTransferred++;
    this.stats.bytesTransferred += data.length;
    this.progress.bytesTransferred += data.length;
    this.report();
  }

  private async drain(): Promise<void> {
    await this.sealPack();
    while (this.inflight.size > 0) await Promise.race(this.inflight);
    if (this.failure) throw this.failure;
  }

  // ---- small files: hash, ask what is known, pack the rest --------------------

  private async uploadSmall(files: PendingFile[], entries: Map<PendingFile, FileEntry>): Promise<void> {
    for (let i = 0; i < files.length; i += SMALL_BATCH_FILES) {
      const batch = files.slice(i, i + SMALL_BATCH_FILES);
      // Files of a few KiB are read on this thread (eachInRuns); bigger ones through the thread pool.
      const read = await eachInRuns(batch, (f) => (typeof f.source === 'string' && (f.size ?? Infinity) <= SMALL_READ_MAX ? readFileSync(f.source) : undefined));
      const datas = await Promise.all(batch.map((f, k) => read[k] ?? readWhole(f.source)));
      const hashes = datas.map((d) => sha256(d));
      const contents = new Map(hashes.map((h, j) => [h, datas[j]!.length]));
      const plan = checkedPlan(
        await this.conn.unary(this.conn.volumes.planUpload.bind(this.conn.volumes), {
          volume: this.volume,
          blobs: [],
          contents: [...contents.keys()],
          presign: false,
        }),
        [],
        contents,
        this.planWhat(),
      );
      const inBatch = new Map<string, PackSlot>();
      for (let j = 0; j < batch.length; j++) {
        const f = batch[j]!;
        const data = datas[j]!;
        const hash = hashes[j]!;
        const known = plan.knownContents[hash];
        let extent: Extent;
        if (known) {
          extent = known;
          this.stats.chunks.add(known.blob);
        } else {
          const slot = inBatch.get(hash) ?? (await this.addToPack(data, hash));
          inBatch.set(hash, slot);
          extent = slot.extent;
        }
        // Extents of packed files get their blob when the pack is sealed, so
        // the entry holds the same object.
        entries.set(f, entry(f, data.length, [extent]));
        this.progress.bytesDone += data.length;
        this.progress.filesDone++;
      }
      this.report();
      if (this.failure) throw this.failure;
    }
  }

  private async addToPack(data: Buffer, hash: string): Promise<PackSlot> {
    if (this.pack.size + data.length > this.opts.chunkSize) await this.sealPack();
    const slot: PackSlot = { extent: { blob: '', offset: this.pack.size, length: data.length, hash } };
    this.pack.parts.push(data);
    this.pack.size += data.length;
    this.pack.slots.push(slot);
    return slot;
  }

  private async sealPack(): Promise<void> {
    if (this.pack.slots.length === 0) return;
    const data = Buffer.concat(this.pack.parts, this.pack.size);
    const hash = sha256(data);
    for (const s of this.pack.slots) s.extent.blob = hash;
    this.pack = { parts: [], size: 0, slots: [] };
    await this.send(hash, data);
  }

  private planWhat(): string {
    return `an upload plan for volume "${this.volume}"`;
  }

  private report(): void {
    this.opts.onProgress?.({ ...this.progress });
  }
}

function entry(f: PendingFile, size: number, extents: Extent[]): FileEntry {
  return { path: f.remotePath, type: FileType.FILE_TYPE_FILE, size, mode: f.mode, mtimeMs: f.mtimeMs, extents, id: 0, tree: '' };
}

async function readWhole(source: UploadSource): Promise<Buffer> {
  if (typeof source === 'string') return readFile(source);
  if (Buffer.isBuffer(source)) return source;
  const parts: Buffer[] = [];
  for await (const p of source) parts.push(Buffer.from(p as Uint8Array));
  return Buffer.concat(parts);
}

/** Yields consecutive pieces of exactly `size` bytes (the last may be shorter). */
export async function* readChunks(source: UploadSource, size: number, pool?: BufferPool): AsyncIterable<Buffer> {
  if (Buffer.isBuffer(source)) {
    for (let i = 0; i < source.length; i += size) yield source.subarray(i, i + size);
    return;
  }
  if (typeof source === 'string') {
    const fh = await open(source, 'r');
    try {
      for (;;) {
        const buf = pool ? pool.acquire(size) : Buffer.allocUnsafe(size);
        let filled = 0;
        while (filled < size) {
          const { bytesRead } = await fh.read(buf, filled, size - filled, null);
          if (bytesRead === 0) break;
          filled += bytesRead;
        }
        if (filled > 0) yield buf.subarray(0, filled);
        if (filled < size) return;
      }
    } finally {
      await fh.close();
    }
  }
  let parts: Buffer[] = [];
  let have = 0;
  for await (const raw of source as Readable) {
    let p = Buffer.from(raw as Uint8Array);
    while (p.length > 0) {
      const take = Math.min(size - have, p.length);
      parts.push(p.subarray(0, take));
      have += take;
      p = p.subarray(take);
      if (have === size) {
        yield Buffer.concat(parts, have);
        parts = [];
        have = 0;
      }
    }
  }
  if (have > 0) yield Buffer.concat(parts, have);
}
