/**
 * Peer (a): what a careful hand-written client does with the AWS SDK.
 * Big file: lib-storage Upload (multipart), then ranged GETs several at a time
 * written with positional writes. Small files: one PutObject / GetObject each,
 * a fixed number in flight. No checksums beyond what S3 requires: this is the
 * fastest honest way to move the bytes, with no integrity check of its own.
 */
import {
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { createReadStream } from 'node:fs';
import { mkdir, open, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import pLimit from 'p-limit';
import type { Contender, Detail } from './contender.js';
import type { BigFile, SmallFiles } from './dataset.js';
import { BUCKET, s3rverClient } from './setup.js';

export const PART_SIZE = 8 * 1024 * 1024;
export const QUEUE_SIZE = 8;
export const RANGE_SIZE = 8 * 1024 * 1024;
export const RANGES_IN_FLIGHT = 8;
export const SMALL_IN_FLIGHT = 16;

const BIG_KEY = 'peer-aws/big.bin';
const SMALL_PREFIX = 'peer-aws/small/';

export class AwsSdkPeer implements Contender {
  readonly name = 'aws-sdk';
  private readonly client: S3Client;

  constructor(endpoint: string) {
    this.client = s3rverClient(endpoint);
  }

  async putBig(file: BigFile): Promise<Detail> {
    const upload = new Upload({
      client: this.client,
      params: { Bucket: BUCKET, Key: BIG_KEY, Body: createReadStream(file.path, { highWaterMark: 1024 * 1024 }) },
      partSize: PART_SIZE,
      queueSize: QUEUE_SIZE,
    });
    await upload.done();
    return { partSize: PART_SIZE, queueSize: QUEUE_SIZE, parts: Math.ceil(file.size / PART_SIZE) };
  }

  async getBig(dest: string): Promise<Detail> {
    const head = await this.client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: BIG_KEY }));
    const size = head.ContentLength ?? 0;
    const fh = await open(dest, 'w');
    try {
      const limit = pLimit(RANGES_IN_FLIGHT);
      const ranges: Promise<void>[] = [];
      for (let pos = 0; pos < size; pos += RANGE_SIZE) {
        const end = Math.min(size, pos + RANGE_SIZE) - 1;
        ranges.push(
          limit(async () => {
            const data = await this.getObject(BIG_KEY, `bytes=${pos}-${end}`);
            if (data.length !== end - pos + 1) throw new Error(`range ${pos}-${end} returned ${data.length} bytes`);
            await fh.write(data, 0, data.length, pos);
          }),
        );
      }
      await Promise.all(ranges);
    } finally {
      await fh.close();
    }
    return { rangeSize: RANGE_SIZE, inFlight: RANGES_IN_FLIGHT, ranges: Math.ceil(size / RANGE_SIZE) };
  }

  async putSmall(set: SmallFiles): Promise<Detail> {
    const limit = pLimit(SMALL_IN_FLIGHT);
    await Promise.all(
      set.files.map((f) =>
        limit(async () => {
          const body = await readFile(join(set.dir, f));
          await this.client.send(new PutObjectCommand({ Bucket: BUCKET, Key: SMALL_PREFIX + f, Body: body }));
        }),
      ),
    );
    return { inFlight: SMALL_IN_FLIGHT };
  }

  /** Lists the prefix (as any download of a "directory" must), then GETs each object. */
  async getSmall(destDir: string): Promise<Detail> {
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const page = await this.client.send(
        new ListObjectsV2Command({ Bucket: BUCKET, Prefix: SMALL_PREFIX, ContinuationToken: token }),
      );
      for (const o of page.Contents ?? []) if (o.Key) keys.push(o.Key);
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    const rel = keys.map((k) => k.slice(SMALL_PREFIX.length));
    for (const d of new Set(rel.map((r) => dirname(r)))) await mkdir(join(destDir, d), { recursive: true });
    const limit = pLimit(SMALL_IN_FLIGHT);
    await Promise.all(rel.map((r) => limit(async () => writeFile(join(destDir, r), await this.getObject(SMALL_PREFIX + r)))));
    return { inFlight: SMALL_IN_FLIGHT, listed: keys.length };
  }

  close(): void {
    this.client.destroy();
  }

  private async getObject(key: string, range?: string): Promise<Buffer> {
    const out = await this.client.send(new GetObjectCommand({ Bucket: BUCKET, Key: key, Range: range }));
    const bytes = await out.Body!.transformToByteArray();
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
}
