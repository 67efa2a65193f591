/**
 * The peers, on the same tree in the same run:
 *
 * - the local file system (the ceiling): `find DIR | wc -l` over the tree as
 *   written, and `fs.promises.stat` of the same files stowage stats;
 * - rclone listing the same number of plain objects in s3rver
 *   (`rclone lsf -R --files-only s3:bench/PREFIX`).
 *
 * The objects: s3rver takes a few hundred PUTs a second here, so a run PUTs
 * the first PUT_SAMPLE objects (timed: the PUT rate and what all of them
 * would have taken are reported) and writes the rest straight into s3rver's
 * on-disk layout, byte for byte what its FilesystemStore (s3rver 3.7,
 * lib/stores/filesystem.js) writes for a PUT:
 *
 *   <dir>/<bucket>/<key dirs>/<name>._S3rver_object           the bytes
 *   <dir>/<bucket>/<key dirs>/<name>._S3rver_object.md5       their MD5, hex (the ETag)
 *   <dir>/<bucket>/<key dirs>/<name>._S3rver_metadata.json    the stored headers
 *
 * The metadata file is copied from one the PUTs made. s3rver reads its disk
 * on every request (no cache), so it serves these objects as its own; a run
 * checks a few with HEAD and GET, and the listing must count every object.
 */
import { GetObjectCommand, HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import pLimit from 'p-limit';
import { BUCKET, rcloneEnv, s3rverClient, track } from '../volume-transfer/setup.js';
import { localPath, timeEach } from './ours.js';
import { sample, type Tree } from './tree.js';

/** Objects PUT through s3rver's API (the rest are written on disk). */
export const PUT_SAMPLE = 2000;
/** PUTs in flight, as the small-file peers of volume-transfer send them. */
export const PUTS_IN_FLIGHT = 16;
export const RCLONE_LIST_FLAGS = ['lsf', '-R', '--files-only'];

/** fs.promises.stat of the tree's files with these numbers below `root`, one at a time. */
export function localStats(root: string, tree: Tree, indices: readonly number[]): Promise<number[]> {
  return timeEach(
    indices,
    (i) => stat(localPath(root, tree, i)),
    (i, st) => {
      if (!st.isFile() || st.size !== tree.content(i).length) throw new Error(`fs.stat ${localPath(root, tree, i)}: not a file of ${tree.content(i).length} bytes`);
    },
  );
}

export interface ObjectsWritten {
  objects: number;
  /** Objects PUT through the API, how long that took, and the rate. */
  put: number;
  putSeconds: number;
  putsPerSec: number;
  /** What PUTting every object at that rate would have taken. */
  projectedPutSeconds: number;
  /** Objects written straight into s3rver's directory, and how long that took. */
  onDisk: number;
  onDiskSeconds: number;
}

/** The object key of file i: PREFIX + its path ('meta-100000-dirs/d0000/f0000000'). */
function keyOf(prefix: string, tree: Tree, i: number): string {
  return `${prefix}${tree.path(i)}`;
}

/** s3rver's file for `key` with suffix `resource` (FilesystemStore.getResourcePath). */
function resourcePath(s3Dir: string, key: string, resource: string): string {
  const parts = key.split('/');
  const name = parts.pop()!;
  return join(s3Dir, BUCKET, ...parts, `${name}._S3rver_${resource}`);
}

/**
 * Every file of `tree` as an object under `prefix` in the s3rver at
 * `endpoint` keeping its files in `s3Dir`: the first `putSample` by PUT, the
 * rest on disk. The first must be PUT (its metadata file is the template).
 */
export async function writeObjects(endpoint: string, s3Dir: string, prefix: string, tree: Tree, putSample = PUT_SAMPLE): Promise<ObjectsWritten> {
  const client = s3rverClient(endpoint);
  try {
    const put = Math.max(1, Math.min(putSample, tree.files));
    const limit = pLimit(PUTS_IN_FLIGHT);
    let t0 = performance.now();
    await Promise.all(
      Array.from({ length: put }, (_, i) =>
        limit(() => client.send(new PutObjectCommand({ Bucket: BUCKET, Key: keyOf(prefix, tree, i), Body: tree.content(i) }))),
      ),
    );
    const putSeconds = (performance.now() - t0) / 1000;

    const metadata = readFileSync(resourcePath(s3Dir, keyOf(prefix, tree, 0), 'metadata.json'));
    t0 = performance.now();
    const made = new Set<string>();
    for (let i = put; i < tree.files; i++) {
      const key = keyOf(prefix, tree, i);
      const objectPath = resourcePath(s3Dir, key, 'object');
      const dir = objectPath.slice(0, objectPath.lastIndexOf('/'));
      if (!made.has(dir)) {
        mkdirSync(dir, { recursive: true });
        made.add(dir);
      }
      const bytes = tree.content(i);
      writeFileSync(objectPath, bytes);
      writeFileSync(`${objectPath}.md5`, createHash('md5').update(bytes).digest('hex'));
      writeFileSync(resourcePath(s3Dir, key, 'metadata.json'), metadata);
    }
    const onDiskSeconds = (performance.now() - t0) / 1000;

    // s3rver must serve what was written on disk as it serves what it stored itself.
    for (const i of sample(3, tree.files - put, 7).map((k) => put + k)) {
      const key = keyOf(prefix, tree, i);
      const want = tree.content(i);
      const head = await client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: key }));
      const md5 = createHash('md5').update(want).digest('hex');
      if (head.ETag !== `"${md5}"` || head.ContentLength !== want.length) {
        throw new Error(`s3rver's HEAD of ${key} (written on disk) gave ETag ${head.ETag} and ${head.ContentLength} bytes, not "${md5}" and ${want.length}`);
      }
      const got = Buffer.from(await (await client.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }))).Body!.transformToByteArray());
      if (!got.equals(want)) throw new Error(`s3rver's GET of ${key} (written on disk) returned other bytes`);
    }
    const putsPerSec = put / putSeconds;
    return {
      objects: tree.files,
      put,
      putSeconds,
      putsPerSec,
      projectedPutSeconds: tree.files / putsPerSec,
      onDisk: tree.files - put,
      onDiskSeconds,
    };
  } finally {
    client.destroy();
  }
}

/** `rclone lsf -R --files-only s3:BUCKET/PREFIX`, timed; fails unless it lists `expected` files. */
export function rcloneList(endpoint: string, prefix: string, expected: number): Promise<{ seconds: number; files: number }> {
  return new Promise((resolve, reject) => {
    const args = [...RCLONE_LIST_FLAGS, `s3:${BUCKET}/${prefix}`];
    const t0 = performance.now();
    const child = track(spawn('rclone', args, { env: rcloneEnv(endpoint), stdio: ['ignore', 'pipe', 'pipe'] }));
    let lines = 0;
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => {
      for (let at = d.indexOf(10); at !== -1; at = d.indexOf(10, at + 1)) lines++;
    });
    child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-8192)));
    child.once('error', reject);
    child.once('close', (code, signal) => {
      const seconds = (performance.now() - t0) / 1000;
      if (code !== 0) return reject(new Error(`rclone ${args.join(' ')} failed (${code ?? signal}): ${stderr.trim()}`));
      if (lines !== expected) return reject(new Error(`rclone ${args.join(' ')} listed ${lines} files, not ${expected}`));
      resolve({ seconds, files: lines });
    });
  });
}
