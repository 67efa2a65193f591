/**
 * What stowage is timed doing, through the SDK only (Volume: batchUpload,
 * stat, listdir), one call at a time, each a round trip to the server. Every
 * answer is checked after its clock stops (a stat's type and size, a
 * listing's length), so that a fast wrong answer fails the run.
 */
import { join } from 'node:path';
import type { Volume } from '../../src/client/index.js';
import { percentile } from '../dict-queue/measure.js';
import type { Tree } from './tree.js';

/** Milliseconds of single calls, and their spread. */
export interface Latencies {
  n: number;
  p50: number;
  p99: number;
  mean: number;
  max: number;
  samplesMs: number[];
}

export function latencies(samplesMs: number[]): Latencies {
  const sorted = [...samplesMs].sort((a, b) => a - b);
  const r = (v: number) => Math.round(v * 1000) / 1000;
  return {
    n: sorted.length,
    p50: r(percentile(sorted, 50)),
    p99: r(percentile(sorted, 99)),
    mean: r(sorted.reduce((a, b) => a + b, 0) / Math.max(1, sorted.length)),
    max: r(sorted.at(-1) ?? Number.NaN),
    samplesMs: samplesMs.map(r),
  };
}

/** Runs `once` for each item in order and returns the milliseconds each took; `check` runs after each clock stops. */
export async function timeEach<T, R>(items: readonly T[], once: (item: T) => Promise<R>, check: (item: T, result: R) => void): Promise<number[]> {
  const out: number[] = [];
  for (const item of items) {
    const t0 = performance.now();
    const r = await once(item);
    out.push(performance.now() - t0);
    check(item, r);
  }
  return out;
}

export interface PutFigures {
  seconds: number;
  files: number;
  filesPerSec: number;
  version: number;
  /** Blobs (packs) the files went into. */
  chunks: number;
}

/**
 * The whole local tree as one new version: one batch with `putFile(local,
 * remote)` for every file, one `commit()`, as the baseline in bench/README.md
 * was measured (then `putDirectory` overflowed the stack above about 125,000
 * files; it no longer does). Per-file puts go through the same upload and
 * commit as `putDirectory(localRoot, '/')`, with a stat of each local file as
 * its walk has.
 */
export async function firstPut(vol: Volume, tree: Tree, localRoot: string): Promise<PutFigures> {
  const t0 = performance.now();
  const batch = vol.batchUpload();
  for (let i = 0; i < tree.files; i++) batch.putFile(localPath(localRoot, tree, i), tree.path(i));
  const r = await batch.commit();
  const seconds = (performance.now() - t0) / 1000;
  if (r.files !== tree.files) throw new Error(`the first put committed ${r.files} files, not ${tree.files}`);
  return { seconds, files: r.files, filesPerSec: tree.files / seconds, version: r.version, chunks: r.chunks };
}

/**
 * `n` commits of one new small file each into tree.commitDir, the way a user
 * adds one file: `batchUpload().putFile(buffer, path).commit()` (without
 * force, so the SDK first checks that the path is free). Returns the
 * milliseconds of each and the last version.
 */
export async function oneFileCommits(vol: Volume, tree: Tree, n: number, tag: string): Promise<{ samplesMs: number[]; lastVersion: number }> {
  const items = Array.from({ length: n }, (_, k) => ({ path: tree.addExtra(`commit-${tag}-${k}`), k }));
  let lastVersion = 0;
  const samplesMs = await timeEach(
    items,
    ({ path, k }) => vol.batchUpload().putFile(Buffer.from(`commit-${k}\n`), path).commit(),
    (_item, r) => {
      if (r.version <= lastVersion) throw new Error(`a 1-file commit made version ${r.version}, after ${lastVersion}`);
      lastVersion = r.version;
    },
  );
  return { samplesMs, lastVersion };
}

/** `vol.stat` of the files with these numbers, one at a time. */
export function statFiles(vol: Volume, tree: Tree, indices: readonly number[]): Promise<number[]> {
  return timeEach(
    indices,
    (i) => vol.stat(tree.path(i)),
    (i, info) => {
      if (info.type !== 'file' || info.size !== tree.content(i).length) {
        throw new Error(`stat ${tree.path(i)} said ${info.type} of ${info.size} bytes, not a file of ${tree.content(i).length}`);
      }
    },
  );
}

/** `vol.listdir` of the directories with these numbers (the root in the flat layout), one at a time. */
export function listDirs(vol: Volume, tree: Tree, dirs: readonly number[]): Promise<number[]> {
  return timeEach(
    dirs,
    (d) => vol.listdir(tree.dirPath(d)),
    (d, entries) => {
      if (entries.length !== tree.entriesIn(d)) throw new Error(`listdir ${tree.dirPath(d)} gave ${entries.length} entries, not ${tree.entriesIn(d)}`);
    },
  );
}

/**
 * The first `pages` pages of `pageSize` entries of directory `d`, one
 * listPage call each, each continuing from the token of the one before;
 * `tokens` (from an earlier run) replays the same pages. Returns the
 * milliseconds each page took and the token each was asked with.
 */
export async function listPages(
  vol: Volume,
  tree: Tree,
  d: number,
  pages: number,
  pageSize: number,
  tokens?: readonly string[],
): Promise<{ samplesMs: number[]; tokens: string[] }> {
  const samplesMs: number[] = [];
  const asked: string[] = [];
  let token = '';
  for (let i = 0; i < pages && (i === 0 || token); i++) {
    const pageToken = tokens ? tokens[i]! : token;
    const t0 = performance.now();
    const r = await vol.listPage(tree.dirPath(d), { pageSize, pageToken });
    samplesMs.push(performance.now() - t0);
    const want = Math.min(pageSize, tree.entriesIn(d) - i * pageSize);
    if (r.entries.length !== want) throw new Error(`page ${i} of ${tree.dirPath(d)} gave ${r.entries.length} entries, not ${want}`);
    asked.push(pageToken);
    token = r.nextPageToken;
  }
  return { samplesMs, tokens: asked };
}

/** The whole volume in one recursive listing (`listdir('/', { recursive: true })`): what rclone lists beside it. */
export async function fullListing(vol: Volume, tree: Tree): Promise<{ seconds: number; entries: number }> {
  const t0 = performance.now();
  const entries = await vol.listdir('/', { recursive: true });
  const seconds = (performance.now() - t0) / 1000;
  if (entries.length !== tree.totalEntries) throw new Error(`the recursive listing gave ${entries.length} entries, not ${tree.totalEntries}`);
  return { seconds, entries: entries.length };
}

/** A file of the tree as the local file system names it below `root`. */
export function localPath(root: string, tree: Tree, i: number): string {
  return join(root, ...tree.path(i).split('/'));
}
