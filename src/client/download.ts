/**
 * The read side: a file's extents are fetched `parallel` at a time, verified
 * against their hashes, and handed out in order. Downloading a tree groups
 * small files by the pack that holds them, so that each pack is read once.
 */
import { mkdir, open, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import pLimit from 'p-limit';
import type { Extent, FileEntry } from '../gen/stowage/v1/volume.js';
import { verifyExtent, type BlobTransport } from './blob-transport.js';
import type { BufferPool } from './buffer-pool.js';
import type { TransferProgress } from './upload.js';

/** A request for part of a file: the extents that overlap it, trimmed. */
interface Piece {
  extent: Extent;
  /** Where in the verified extent the wanted bytes start and end. */
  from: number;
  to: number;
}

export function piecesFor(entry: FileEntry, offset: number, length: number): Piece[] {
  const end = Math.min(entry.size, offset + length);
  const out: Piece[] = [];
  let pos = 0;
  for (const e of entry.extents) {
    const eEnd = pos + e.length;
    if (eEnd > offset && pos < end) {
      out.push({ extent: e, from: Math.max(0, offset - pos), to: Math.min(e.length, end - pos) });
    }
    pos = eEnd;
    if (pos >= end) break;
  }
  return out;
}

/**
 * Yields the bytes of [offset, offset+length) of a file, in order, verified.
 * With a pool, pieces are read into pooled buffers: the consumer must release
 * each yielded buffer's extent buffer (pool.release) once done with it.
 */
export async function* readPieces(
  transport: BlobTransport,
  pieces: Piece[],
  getUrls: Record<string, string>,
  parallel: number,
  what: string,
  pool?: BufferPool,
): AsyncIterable<Buffer> {
  const window: Promise<Buffer>[] = [];
  let next = 0;
  const fill = () => {
    while (window.length < parallel && next < pieces.length) {
      const p = pieces[next++]!;
      const fetched = transport.readExtent(p.extent, getUrls[p.extent.blob], what, pool?.acquire(p.extent.length));
      fetched.catch(() => undefined); // surfaced when awaited in order
      window.push(fetched);
    }
  };
  fill();
  let i = 0;
  while (window.length > 0) {
    const data = await window.shift()!;
    const p = pieces[i++]!;
    fill();
    yield p.from === 0 && p.to === data.length ? data : data.subarray(p.from, p.to);
  }
}

export interface DownloadTarget {
  entry: FileEntry;
  localPath: string;
}

/**
 * Writes files to local paths. Each file is written to a temporary name and
 * renamed when whole, so an interrupted download leaves no partial file.
 * Extents that share a blob (small files in one pack) are fetched with one
 * ranged read of the blob.
 */
export async function downloadFiles(
  transport: BlobTransport,
  volume: string,
  targets: DownloadTarget[],
  getUrls: Record<string, string>,
  parallel: number,
  pool: BufferPool,
  onProgress?: (p: TransferProgress) => void,
): Promise<{ bytesTransferred: number; chunksTransferred: number }> {
  const progress: TransferProgress = {
    filesDone: 0,
    filesTotal: targets.length,
    bytesDone: 0,
    bytesTotal: targets.reduce((n, t) => n + t.entry.size, 0),
    bytesTransferred: 0,
  };
  let chunksTransferred = 0;
  const report = () => onProgress?.({ ...progress });
  const label = (path: string) => `"${path}" in volume "${volume}"`;

  // Group the extents of single-extent files by blob; big files go alone.
  const byBlob = new Map<string, DownloadTarget[]>();
  const large: DownloadTarget[] = [];
  for (const t of targets) {
    const first = t.entry.extents[0];
    if (t.entry.extents.length === 1 && first && first.blob !== first.hash) {
      const g = byBlob.get(first.blob) ?? [];
      g.push(t);
      byBlob.set(first.blob, g);
    } else {
      large.push(t);
    }
  }
  const limit = pLimit(parallel);
  const tasks: Promise<void>[] = [];
  for (const [blob, group] of byBlob) {
    tasks.push(
      limit(async () => {
        const start = Math.min(...group.map((t) => t.entry.extents[0]!.offset));
        const end = Math.max(...group.map((t) => t.entry.extents[0]!.offset + t.entry.extents[0]!.length));
        const span = await transport.read(blob, start, end - start, getUrls[blob]);
        chunksTransferred++;
        progress.bytesTransferred += span.length;
        for (const t of group) {
          const e = t.entry.extents[0]!;
          let data: Buffer;
          try {
            data = verifyExtent(span.subarray(e.offset - start, e.offset - start + e.length), e, label(t.entry.path));
          } catch (err) {
            await transport.reportDamaged(blob);
            throw err;
          }
          await writeWhole(t.localPath, [data], t.entry.mode);
          progress.bytesDone += data.length;
          progress.filesDone++;
        }
        report();
      }),
    );
  }
  await settle(tasks);
  // Each large file already reads `parallel` extents ahead; a few files at a
  // time keep many medium-sized files from going one by one.
  const fileLimit = pLimit(Math.max(1, Math.ceil(parallel / 4)));
  await settle(large.map((t) => fileLimit(() => downloadLarge(t))));
  return { bytesTransferred: progress.bytesTransferred, chunksTransferred };

  async function downloadLarge(t: DownloadTarget): Promise<void> {
    const tmp = tmpName(t.localPath);
    await mkdir(dirname(t.localPath), { recursive: true });
    const fh = await open(tmp, 'w', t.entry.mode || 0o644);
    try {
      let pos = 0;
      for await (const data of readPieces(
        transport,
        piecesFor(t.entry, 0, t.entry.size),
        getUrls,
        parallel,
        label(t.entry.path),
        pool,
      )) {
        await fh.write(data, 0, data.length, pos);
        pool.release(data);
        pos += data.length;
        chunksTransferred++;
        progress.bytesDone += data.length;
        progress.bytesTransferred += data.length;
        report();
      }
      await fh.close();
      await rename(tmp, t.localPath);
    } catch (err) {
      await fh.close().catch(() => undefined);
      await rm(tmp, { force: true });
      throw err;
    }
    progress.filesDone++;
    report();
  }
}

/** Waits for every task (none keeps writing after a failure), then throws the first error. */
async function settle(tasks: Promise<void>[]): Promise<void> {
  const results = await Promise.allSettled(tasks);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

function tmpName(path: string): string {
  return `${path}.stowage-partial-${process.pid}`;
}

async function writeWhole(path: string, parts: Buffer[], mode: number): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = tmpName(path);
  const fh = await open(tmp, 'w', mode || 0o644);
  try {
    for (const p of parts) await fh.write(p);
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
}
