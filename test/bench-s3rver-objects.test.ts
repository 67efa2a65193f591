/**
 * The metadata-scale benchmark's rclone peer lists objects it mostly wrote
 * straight into s3rver's directory (bench/metadata-scale/peers.ts), because
 * PUTting a million would take an hour. That is only a fair peer if s3rver
 * serves those objects exactly as the ones it stored from PUTs: same
 * listing, ETag, length, headers and bytes. Checked here through the S3 API
 * against a real s3rver.
 */
import { GetObjectCommand, HeadObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeObjects } from '../bench/metadata-scale/peers.js';
import { Tree, type Layout } from '../bench/metadata-scale/tree.js';
import { BUCKET, s3rverClient } from '../bench/volume-transfer/setup.js';
import { startS3rver, uniqueName, type S3Server } from './support/processes.js';

describe('metadata-scale: objects written into s3rver’s directory', () => {
  let s3: S3Server;
  beforeAll(async () => {
    s3 = await startS3rver({ bucket: BUCKET });
  });
  afterAll(async () => {
    await s3?.stop();
  });

  for (const layout of ['dirs', 'flat'] as Layout[]) {
    it(`are listed, HEAD and GET as s3rver's own PUTs (${layout})`, async () => {
      const tree = new Tree({ files: 60, layout, dirSize: 25 });
      const prefix = uniqueName('objects');
      const written = await writeObjects(s3.endpoint, s3.dir, prefix, tree, 20);
      expect(written).toMatchObject({ objects: 60, put: 20, onDisk: 40 });

      const client = s3rverClient(s3.endpoint);
      try {
        // Pages of 25 keys, so that s3rver's paging (StartAfter) walks both kinds of object.
        const listed: { key: string; etag: string; size: number }[] = [];
        let token: string | undefined;
        do {
          const page = await client.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: `${prefix}/`, MaxKeys: 25, ContinuationToken: token }));
          for (const o of page.Contents ?? []) listed.push({ key: o.Key!, etag: o.ETag!, size: o.Size! });
          token = page.IsTruncated ? page.NextContinuationToken : undefined;
        } while (token);
        const want = Array.from({ length: tree.files }, (_, i) => ({
          key: `${prefix}${tree.path(i)}`,
          etag: `"${createHash('md5').update(tree.content(i)).digest('hex')}"`,
          size: tree.content(i).length,
        }));
        expect(listed).toEqual(want);

        // File 0 was PUT, file 59 written on disk: the same headers, their own bytes.
        const head = async (i: number) => {
          const h = await client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: `${prefix}${tree.path(i)}` }));
          return { etag: h.ETag, length: h.ContentLength, type: h.ContentType, meta: h.Metadata };
        };
        const [put, onDisk] = [await head(0), await head(59)];
        expect(onDisk).toEqual({ ...put, etag: want[59]!.etag });
        const got = await client.send(new GetObjectCommand({ Bucket: BUCKET, Key: `${prefix}${tree.path(59)}` }));
        expect(Buffer.from(await got.Body!.transformToByteArray())).toEqual(tree.content(59));
      } finally {
        client.destroy();
      }
    });
  }
});
