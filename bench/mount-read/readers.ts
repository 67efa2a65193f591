/**
 * How every contender is read, the same way for all: the big file
 * sequentially in 1 MiB reads (one at a time, like `dd bs=1M`), the small
 * files by walking the tree with readdir and reading each file whole with a
 * fixed number of readers in flight. Reads are async (libuv's thread pool),
 * so this process's event loop, which also serves stowage's gRPC, is never
 * blocked by a slow mount.
 *
 * Every 16th MiB of the big file, its last MiB, and every 10th small file are
 * compared with the local source as they are read: a mount that returns wrong
 * bytes fails the run. The comparison costs the same for every contender.
 *
 * The parallel-GET ceiling reads the same plain objects straight from
 * s3rver with node:http: presigned URLs (as stowage's mount uses), closed
 * 8 MiB ranges, 8 in flight, each body read into a reused buffer.
 */
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { open, readdir, type FileHandle } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { join } from 'node:path';
import { BUCKET, S3_KEY, S3_SECRET } from '../volume-transfer/setup.js';

export const READ_SIZE = 1024 * 1024;
const CHECK_EVERY_BLOCK = 16;
const CHECK_EVERY_FILE = 10;
export const GET_RANGE = 8 * 1024 * 1024;
export const GETS_IN_FLIGHT = 8;

export interface ReadResult {
  bytes: number;
  files: number;
  /** Blocks or files compared with the source. */
  checked: number;
  /** Seconds spent listing (small files only). */
  listSeconds?: number;
  /** Reads (or GETs) made, where the rate of reads is a figure (loader cases). */
  reads?: number;
}

/** Reads `path` from start to end in READ_SIZE reads; compares samples with `source`. */
export async function readBig(path: string, source: string, expectSize: number): Promise<ReadResult> {
  const buf = Buffer.allocUnsafe(READ_SIZE);
  const want = Buffer.allocUnsafe(READ_SIZE);
  const fh = await open(path, 'r');
  const src = await open(source, 'r');
  let pos = 0;
  let checked = 0;
  try {
    for (let block = 0; ; block++) {
      const { bytesRead } = await fh.read(buf, 0, READ_SIZE, pos);
      if (bytesRead === 0) break;
      if (block % CHECK_EVERY_BLOCK === 0 || pos + bytesRead >= expectSize) {
        await compareWith(src, want, buf.subarray(0, bytesRead), pos, path);
        checked++;
      }
      pos += bytesRead;
    }
  } finally {
    await fh.close();
    await src.close();
  }
  if (pos !== expectSize) throw new Error(`${path}: read ${pos} bytes, expected ${expectSize}`);
  return { bytes: pos, files: 1, checked };
}

async function compareWith(src: FileHandle, want: Buffer, got: Buffer, pos: number, what: string): Promise<void> {
  const { bytesRead } = await src.read(want, 0, got.length, pos);
  if (bytesRead !== got.length || !want.subarray(0, bytesRead).equals(got)) {
    throw new Error(`${what}: bytes at ${pos}..${pos + got.length} differ from the source`);
  }
}

/** Lists `root` (two levels: directories of files), then reads every file with `parallel` readers. */
export async function readSmall(root: string, sourceDir: string, expectFiles: number, parallel: number): Promise<ReadResult> {
  const t0 = performance.now();
  const paths: string[] = [];
  for (const d of (await readdir(root)).sort()) {
    for (const f of (await readdir(join(root, d))).sort()) paths.push(`${d}/${f}`);
  }
  const listSeconds = (performance.now() - t0) / 1000;
  if (paths.length !== expectFiles) throw new Error(`${root}: listed ${paths.length} files, expected ${expectFiles}`);
  let next = 0;
  let bytes = 0;
  let checked = 0;
  const worker = async () => {
    const buf = Buffer.allocUnsafe(64 * 1024);
    const want = Buffer.allocUnsafe(64 * 1024);
    for (;;) {
      const i = next++;
      if (i >= paths.length) return;
      const fh = await open(join(root, paths[i]!), 'r');
      let n = 0;
      try {
        for (;;) {
          const { bytesRead } = await fh.read(buf, n, buf.length - n, n);
          if (bytesRead === 0) break;
          n += bytesRead;
        }
      } finally {
        await fh.close();
      }
      bytes += n;
      if (i % CHECK_EVERY_FILE === 0) {
        const src = await open(join(sourceDir, paths[i]!), 'r');
        try {
          await compareWith(src, want, buf.subarray(0, n), 0, join(root, paths[i]!));
          const rest = await src.read(want, 0, 1, n);
          if (rest.bytesRead !== 0) throw new Error(`${join(root, paths[i]!)}: shorter than the source`);
        } finally {
          await src.close();
        }
        checked++;
      }
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  return { bytes, files: paths.length, checked, listSeconds: Math.round(listSeconds * 1000) / 1000 };
}

/** Presigned GET URLs for plain objects on s3rver (computed before the clock starts). */
export class Presigner {
  private readonly client: S3Client;
  constructor(endpoint: string) {
    this.client = new S3Client({
      region: 'us-east-1',
      endpoint,
      forcePathStyle: true,
      credentials: { accessKeyId: S3_KEY, secretAccessKey: S3_SECRET },
    });
  }
  url(key: string): Promise<string> {
    return getSignedUrl(this.client, new GetObjectCommand({ Bucket: BUCKET, Key: key }), { expiresIn: 3600 });
  }
  close(): void {
    this.client.destroy();
  }
}

/** GETs of `url` (whole, or `range` "bytes=a-b") into `into`; resolves with the byte count. */
export function getInto(agent: Agent, url: string, into: Buffer, range?: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent, headers: range ? { range } : {} }, (res) => {
      if (res.statusCode !== 200 && res.statusCode !== 206) {
        res.resume();
        reject(new Error(`GET ${url.split('?')[0]} ${range ?? ''}: HTTP ${res.statusCode}`));
        return;
      }
      let n = 0;
      res.on('data', (d: Buffer) => {
        if (n + d.length > into.length) {
          req.destroy(new Error(`GET ${url.split('?')[0]}: more bytes than expected`));
          return;
        }
        d.copy(into, n);
        n += d.length;
      });
      res.once('end', () => resolve(n));
      res.once('error', reject);
    });
    req.once('error', reject);
    req.end();
  });
}

/** The big object in GET_RANGE closed ranges, GETS_IN_FLIGHT at a time. */
export async function parallelGetsBig(url: string, size: number): Promise<ReadResult> {
  const agent = new Agent({ keepAlive: true, maxSockets: GETS_IN_FLIGHT });
  let next = 0;
  let bytes = 0;
  try {
    await Promise.all(
      Array.from({ length: GETS_IN_FLIGHT }, async () => {
        const buf = Buffer.allocUnsafe(GET_RANGE);
        for (;;) {
          const pos = next;
          next += GET_RANGE;
          if (pos >= size) return;
          const end = Math.min(size, pos + GET_RANGE) - 1;
          const n = await getInto(agent, url, buf, `bytes=${pos}-${end}`);
          if (n !== end - pos + 1) throw new Error(`range ${pos}-${end} returned ${n} bytes`);
          bytes += n;
        }
      }),
    );
  } finally {
    agent.destroy();
  }
  return { bytes, files: 1, checked: 0 };
}

/** One GET per small object, `parallel` in flight. */
export async function parallelGetsSmall(urls: string[], fileSize: number, parallel: number): Promise<ReadResult> {
  const agent = new Agent({ keepAlive: true, maxSockets: parallel });
  let next = 0;
  let bytes = 0;
  try {
    await Promise.all(
      Array.from({ length: parallel }, async () => {
        const buf = Buffer.allocUnsafe(fileSize + 1);
        for (;;) {
          const i = next++;
          if (i >= urls.length) return;
          const n = await getInto(agent, urls[i]!, buf);
          if (n !== fileSize) throw new Error(`GET ${urls[i]!.split('?')[0]} returned ${n} bytes`);
          bytes += n;
        }
      }),
    );
  } finally {
    agent.destroy();
  }
  return { bytes, files: urls.length, checked: 0 };
}
