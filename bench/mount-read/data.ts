/**
 * The data every contender reads, put on s3rver twice before anything is
 * timed: as a stowage volume (content-addressed chunks and packs, through the
 * SDK) for our mount, and as plain objects under one prefix of the same
 * bucket for s3fs, rclone and the parallel GETs. Same bytes, same server.
 */
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { createReadStream } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import pLimit from 'p-limit';
import { Volume, type Connection } from '../../src/client/index.js';
import { writeBigFile, type BigFile, type SmallFiles } from '../volume-transfer/dataset.js';
import { BUCKET, s3rverClient } from '../volume-transfer/setup.js';

export const PLAIN_PREFIX = 'plain';
export const BIG_NAME = 'big.bin';
export const SMALL_NAME = 'small';
export const SHARDS_NAME = 'shards';

/** The random-read data set: `count` files of `size` random bytes, `shards/shard-NN.bin`. */
export interface Shards {
  dir: string;
  /** Paths relative to the data directory, '/'-separated (the same below a mount and the plain prefix). */
  names: string[];
  size: number;
}

export async function writeShards(dir: string, count: number, size: number): Promise<Shards> {
  await mkdir(dir, { recursive: true });
  const names: string[] = [];
  for (let i = 0; i < count; i++) {
    const name = `shard-${String(i).padStart(2, '0')}.bin`;
    await writeBigFile(join(dir, name), size);
    names.push(`${SHARDS_NAME}/${name}`);
  }
  return { dir, names, size };
}

/** Uploads `big.bin`, `small/…` and (when given) `shards/…` as version 1 of volume `name`. */
export async function putVolume(connection: Connection, name: string, big: BigFile, small: SmallFiles, shards?: Shards): Promise<number> {
  const vol = await Volume.fromName(name, { connection, createIfMissing: true });
  const batch = vol.batchUpload().putFile(big.path, `/${BIG_NAME}`).putDirectory(small.dir, `/${SMALL_NAME}`);
  if (shards) batch.putDirectory(shards.dir, `/${SHARDS_NAME}`);
  return (await batch.commit()).version;
}

/** Uploads one file as the only file of volume `name`. */
export async function putOneFile(connection: Connection, name: string, path: string, as: string): Promise<number> {
  const vol = await Volume.fromName(name, { connection, createIfMissing: true });
  return (await vol.batchUpload().putFile(path, as).commit()).version;
}

/**
 * Uploads the same files as plain objects: PLAIN_PREFIX/big.bin,
 * PLAIN_PREFIX/small/dNNNN/fNNNNNN.bin plus the marker PLAIN_PREFIX/small/,
 * and PLAIN_PREFIX/shards/shard-NN.bin when given.
 */
export async function putPlain(endpoint: string, big: BigFile, small: SmallFiles, shards?: Shards): Promise<void> {
  const client = s3rverClient(endpoint);
  const putLarge = (path: string, key: string) =>
    new Upload({
      client,
      params: { Bucket: BUCKET, Key: key, Body: createReadStream(path, { highWaterMark: 1024 * 1024 }) },
      partSize: 8 * 1024 * 1024,
      queueSize: 8,
    }).done();
  try {
    await putLarge(big.path, `${PLAIN_PREFIX}/${BIG_NAME}`);
    for (const n of shards?.names ?? []) await putLarge(join(shards!.dir, n.slice(SHARDS_NAME.length + 1)), `${PLAIN_PREFIX}/${n}`);
    // s3rver 3.7 lists a common prefix only if some object sits directly
    // below it, so `plain/small/` (only subdirectories) would be missing
    // from the listing of `plain/`: a directory marker, as s3fs and rclone
    // themselves write for a mkdir, makes it visible.
    await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: `${PLAIN_PREFIX}/${SMALL_NAME}/`, Body: Buffer.alloc(0) }));
    const limit = pLimit(16);
    await Promise.all(
      small.files.map((f) =>
        limit(async () => {
          const body = await readFile(join(small.dir, f));
          await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: `${PLAIN_PREFIX}/${SMALL_NAME}/${f}`, Body: body }));
        }),
      ),
    );
  } finally {
    client.destroy();
  }
}
