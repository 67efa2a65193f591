/**
 * The reads of real data loaders, done the same way for every contender:
 *
 * - weights load: the big file split into `parts` quarters, one reader per
 *   part, each reading its part from start to end in 1 MiB reads, one at a
 *   time (how safetensors shards are loaded by parallel workers);
 * - random reads: `readers` readers, each working through its own fixed list
 *   of (shard, offset) reads of one size, one at a time. The lists come from a
 *   seeded generator (`randomPlan`), so every contender sees exactly the same
 *   offsets in the same order;
 * - the chunk files of a stowage cache directory read whole, one after
 *   another, in 1 MiB reads: what a warm read of the mount could cost if the
 *   mount did nothing but hand over its cache files.
 *
 * Every 16th read of each reader (and each part's last) is compared with the
 * local source, as readers.ts does: wrong bytes fail the run. The parallel-GET
 * ceilings of these patterns read the same ranges of the plain objects, one
 * GET at a time per lane, `lanes` in flight.
 */
import { open, readdir, type FileHandle } from 'node:fs/promises';
import { Agent } from 'node:http';
import { join } from 'node:path';
import { mulberry32 } from '../volume-transfer/setup.js';
import { GET_RANGE, getInto, type ReadResult } from './readers.js';

const CHECK_EVERY = 16;

/** Reads until `into` is full or the file ends; one FUSE or disk read usually does it. */
async function readFull(fh: FileHandle, into: Buffer, pos: number): Promise<number> {
  let n = 0;
  while (n < into.length) {
    const { bytesRead } = await fh.read(into, n, into.length - n, pos + n);
    if (bytesRead === 0) break;
    n += bytesRead;
  }
  return n;
}

async function sameAsSource(src: FileHandle, want: Buffer, got: Buffer, pos: number, what: string): Promise<void> {
  const n = await readFull(src, want.subarray(0, got.length), pos);
  if (n !== got.length || !want.subarray(0, n).equals(got)) throw new Error(`${what}: bytes at ${pos}..${pos + got.length} differ from the source`);
}

/** [start, end) of part `k` of `parts` of a file of `size` bytes. */
export function partOf(size: number, parts: number, k: number): [number, number] {
  return [Math.floor((k * size) / parts), Math.floor(((k + 1) * size) / parts)];
}

/** `parts` readers, reader k reading part k of `path` in `readSize` reads, each on its own descriptor. */
export async function readParts(path: string, source: string, size: number, parts: number, readSize: number): Promise<ReadResult> {
  let bytes = 0;
  let checked = 0;
  let reads = 0;
  await Promise.all(
    Array.from({ length: parts }, async (_, k) => {
      const [start, end] = partOf(size, parts, k);
      const buf = Buffer.allocUnsafe(readSize);
      const want = Buffer.allocUnsafe(readSize);
      const fh = await open(path, 'r');
      const src = await open(source, 'r');
      try {
        for (let pos = start, i = 0; pos < end; pos += readSize, i++) {
          const len = Math.min(readSize, end - pos);
          const n = await readFull(fh, buf.subarray(0, len), pos);
          if (n !== len) throw new Error(`${path}: read ${n} bytes at ${pos}, expected ${len}`);
          if (i % CHECK_EVERY === 0 || pos + len >= end) {
            await sameAsSource(src, want, buf.subarray(0, len), pos, path);
            checked++;
          }
          bytes += len;
          reads++;
        }
      } finally {
        await fh.close();
        await src.close();
      }
    }),
  );
  if (bytes !== size) throw new Error(`${path}: the parts read ${bytes} bytes, expected ${size}`);
  return { bytes, files: 1, checked, reads };
}

export interface RandomRead {
  shard: number;
  offset: number;
}

/**
 * One list of reads per reader: shard and `readSize`-aligned offset drawn at
 * random (with repetition), `readsPerReader` each. The seed is fixed per
 * read size, so the plan depends only on the settings.
 */
export function randomPlan(opts: { seed: number; readers: number; readsPerReader: number; shards: number; shardSize: number; readSize: number }): RandomRead[][] {
  const slots = Math.floor(opts.shardSize / opts.readSize);
  return Array.from({ length: opts.readers }, (_, r) => {
    const next = mulberry32(opts.seed * 1009 + r);
    return Array.from({ length: opts.readsPerReader }, () => ({
      shard: Math.floor(next() * opts.shards),
      offset: Math.floor(next() * slots) * opts.readSize,
    }));
  });
}

/** Runs `plan` over the shard files `paths` (sources: the local copies), one reader per list, all at once. */
export async function readRandom(paths: string[], sources: string[], plan: RandomRead[][], readSize: number): Promise<ReadResult> {
  let bytes = 0;
  let checked = 0;
  let reads = 0;
  await Promise.all(
    plan.map(async (list) => {
      const buf = Buffer.allocUnsafe(readSize);
      const want = Buffer.allocUnsafe(readSize);
      // Each reader opens every shard once, as a loader worker keeps its files open.
      const fhs: FileHandle[] = [];
      const srcs: FileHandle[] = [];
      try {
        for (const p of paths) fhs.push(await open(p, 'r'));
        for (const s of sources) srcs.push(await open(s, 'r'));
        for (let i = 0; i < list.length; i++) {
          const { shard, offset } = list[i]!;
          const n = await readFull(fhs[shard]!, buf, offset);
          if (n !== readSize) throw new Error(`${paths[shard]}: read ${n} bytes at ${offset}, expected ${readSize}`);
          if (i % CHECK_EVERY === 0) {
            await sameAsSource(srcs[shard]!, want, buf, offset, paths[shard]!);
            checked++;
          }
          bytes += n;
          reads++;
        }
      } finally {
        await Promise.all([...fhs, ...srcs].map((f) => f.close()));
      }
    }),
  );
  return { bytes, files: paths.length, checked, reads };
}

/**
 * Every chunk file under `<cacheDir>/chunks/<hh>/`, read whole in `readSize`
 * reads, one file after another. Cache files may carry a trailer after the
 * chunk's bytes, so whole files are read and counted. Resolves once all are
 * read; throws if they hold fewer bytes than `expectAtLeast`.
 */
export async function readCacheDir(cacheDir: string, readSize: number, expectAtLeast: number): Promise<ReadResult> {
  const root = join(cacheDir, 'chunks');
  const paths: string[] = [];
  for (const d of (await readdir(root)).sort()) {
    for (const f of (await readdir(join(root, d))).sort()) if (/^[0-9a-f]{64}$/.test(f)) paths.push(join(root, d, f));
  }
  const buf = Buffer.allocUnsafe(readSize);
  let bytes = 0;
  for (const p of paths) {
    const fh = await open(p, 'r');
    try {
      for (;;) {
        const { bytesRead } = await fh.read(buf, 0, readSize, null);
        if (bytesRead === 0) break;
        bytes += bytesRead;
      }
    } finally {
      await fh.close();
    }
  }
  if (bytes < expectAtLeast) throw new Error(`${root}: ${paths.length} chunk files hold ${bytes} bytes, fewer than the ${expectAtLeast} read through the mount`);
  return { bytes, files: paths.length, checked: 0 };
}

export interface Range {
  url: string;
  start: number;
  length: number;
}

/** Each lane GETs its ranges one at a time, all lanes at once; bodies go into a reused buffer and are dropped. */
export async function parallelGetsLanes(lanes: Range[][]): Promise<ReadResult> {
  const agent = new Agent({ keepAlive: true, maxSockets: lanes.length });
  let bytes = 0;
  let reads = 0;
  try {
    await Promise.all(
      lanes.map(async (lane) => {
        const buf = Buffer.allocUnsafe(Math.max(1, ...lane.map((r) => r.length)));
        for (const r of lane) {
          const n = await getInto(agent, r.url, buf, `bytes=${r.start}-${r.start + r.length - 1}`);
          if (n !== r.length) throw new Error(`range ${r.start}+${r.length} returned ${n} bytes`);
          bytes += n;
          reads++;
        }
      }),
    );
  } finally {
    agent.destroy();
  }
  return { bytes, files: new Set(lanes.flat().map((r) => r.url)).size, checked: 0, reads };
}

/**
 * The weights load as GETs: each part in GET_RANGE pieces, split over
 * `lanesPerPart` lanes (pieces dealt round-robin), so `parts × lanesPerPart`
 * GETs are in flight.
 */
export function partRanges(url: string, size: number, parts: number, lanesPerPart: number): Range[][] {
  const lanes: Range[][] = [];
  for (let k = 0; k < parts; k++) {
    const [start, end] = partOf(size, parts, k);
    const mine: Range[][] = Array.from({ length: lanesPerPart }, () => []);
    for (let pos = start, i = 0; pos < end; pos += GET_RANGE, i++) mine[i % lanesPerPart]!.push({ url, start: pos, length: Math.min(GET_RANGE, end - pos) });
    lanes.push(...mine);
  }
  return lanes;
}
