/**
 * The cases of real data loaders (loader-readers.ts says how each reads),
 * run for every contender beside the same peers as the big file:
 *
 * - weights: 4 readers, each its own quarter of the big file in 1 MiB reads;
 * - random-1m and random-64k: 8 readers, each a fixed seeded list of random
 *   reads of that size over the shards, the reads of one run adding up to
 *   half the shard bytes or `--random-max-reads` reads, whichever is fewer.
 *
 * Contenders without a cache of their own (s3fs, the trivial FUSE, the local
 * files) read every workload on one mount after a page-cache drop. Those
 * with one (stowage, rclone full) get a fresh mount with an empty cache per
 * workload, so that each cold row is cold: the weights load would otherwise
 * find the big file cached by the sequential read, and the 64 KiB run the
 * chunks the 1 MiB run fetched. The warm row reads the same again on that
 * mount after dropping the page cache.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import type { BigFile } from '../volume-transfer/dataset.js';
import { BIG_NAME, type Shards } from './data.js';
import type { Harness } from './harness.js';
import { partRanges, parallelGetsLanes, randomPlan, readParts, readRandom, type RandomRead, type Range } from './loader-readers.js';
import type { Mount } from './mounts.js';
import { READ_SIZE, type ReadResult } from './readers.js';
import type { Workload } from './report.js';

export const WEIGHTS_PARTS = 4;
export const RANDOM_READERS = 8;
/** The reads of one random run add up to this share of the shard bytes, unless that is more than `maxReads` reads. */
export const RANDOM_FRACTION = 0.5;
/**
 * Default bound on the reads of one random run (all readers together). A
 * 64 KiB read that misses the memory cache makes stowage read and hash a
 * whole 8 MiB chunk (about 70–120 reads/s here), so half of 2 GiB in 64 KiB
 * reads (16,384) would take minutes; 2,048 keeps that case near 30 s.
 */
export const RANDOM_MAX_READS = 2048;
/** The weights-load GET ceiling: lanes per quarter (8 GETs of 8 MiB in flight, as the big file's ceiling). */
const GET_LANES_PER_PART = 2;

export type LoaderWorkload = Extract<Workload, 'weights' | 'random-1m' | 'random-64k'>;
export const RANDOM_RUNS: { workload: LoaderWorkload; readSize: number; seed: number }[] = [
  { workload: 'random-1m', readSize: 1024 * 1024, seed: 1 },
  { workload: 'random-64k', readSize: 64 * 1024, seed: 2 },
];

export interface LoaderData {
  big: BigFile;
  /** The local data directory (holds big.bin and shards/). */
  dataDir: string;
  /** Absent: no random-read cases. */
  shards?: Shards;
  /** Most reads in one random run, all readers together. */
  maxReads: number;
  /** Whether to run the weights load. */
  weights: boolean;
  bigUrl: string;
  /** Presigned URL of each shard, in the order of `shards.names`. */
  shardUrls: string[];
}

/** A row of one contender in a loader case: its label and whether the page cache is dropped first. */
export interface Row {
  contender: string;
  drop: boolean;
}

export class Loaders {
  readonly plans = new Map<LoaderWorkload, { readSize: number; plan: RandomRead[][] }>();

  constructor(
    private readonly h: Harness,
    private readonly d: LoaderData,
  ) {
    const s = d.shards;
    if (!s) return;
    const total = s.size * s.names.length;
    for (const r of RANDOM_RUNS) {
      const reads = Math.min((total * RANDOM_FRACTION) / r.readSize, d.maxReads);
      const readsPerReader = Math.max(1, Math.round(reads / RANDOM_READERS));
      const plan = randomPlan({ seed: r.seed, readers: RANDOM_READERS, readsPerReader, shards: s.names.length, shardSize: s.size, readSize: r.readSize });
      this.plans.set(r.workload, { readSize: r.readSize, plan });
    }
  }

  /** The loader workloads this run has, in the order they run. */
  workloads(opts: { random?: boolean } = {}): LoaderWorkload[] {
    return [...(this.d.weights ? (['weights'] as const) : []), ...(opts.random === false ? [] : [...this.plans.keys()])];
  }

  /** The reads of `workload` through `dir` (a mount point or the local data directory). */
  reads(workload: LoaderWorkload, dir: string): () => Promise<ReadResult> {
    const { big, shards, dataDir } = this.d;
    if (workload === 'weights') return () => readParts(join(dir, BIG_NAME), big.path, big.size, WEIGHTS_PARTS, READ_SIZE);
    const { readSize, plan } = this.plans.get(workload)!;
    const names = shards!.names;
    return () => readRandom(names.map((n) => join(dir, n)), names.map((n) => join(dataDir, n)), plan, readSize);
  }

  /**
   * Every loader workload on one mount (or the local directory), each
   * workload's rows in the order given: the local file dropped then kept
   * reads the same bytes twice in a row, so that the kept row finds them in
   * the page cache.
   */
  async onOneMount(rows: Row[], dir: string, opts: { mountPid?: number; random?: boolean } = {}): Promise<void> {
    for (const w of this.workloads(opts)) {
      for (const r of rows) await this.h.run(r.contender, w, { drop: r.drop, mountPid: opts.mountPid }, this.reads(w, dir));
    }
  }

  /**
   * Per workload, a fresh mount with an empty cache (`start(workload)`,
   * whose cache `cacheDirs(workload)` removes afterwards): the cold row, then
   * the warm row with the page cache dropped.
   */
  async freshMountEach(cold: string, warm: string, start: (w: LoaderWorkload) => Promise<Mount>, cacheDirs: (w: LoaderWorkload) => string[]): Promise<void> {
    for (const w of this.workloads()) {
      try {
        await this.h.withMount(
          () => start(w),
          async (m) => {
            await this.h.run(cold, w, { drop: true, mountPid: m.pid }, this.reads(w, m.dir));
            await this.h.run(warm, w, { drop: true, mountPid: m.pid }, this.reads(w, m.dir));
            const rss = m.peakRss();
            this.h.peakRss[`${w}: ${cold}`] = rss;
            this.h.peakRss[`${w}: ${warm}`] = rss;
          },
        );
      } finally {
        for (const dir of cacheDirs(w)) rmSync(dir, { recursive: true, force: true });
      }
    }
  }

  /** The cold ceiling: the same quarters or random ranges as ranged GETs of the plain objects. */
  async parallelGets(contender: string): Promise<void> {
    for (const w of this.workloads()) await this.h.run(contender, w, { drop: true }, () => parallelGetsLanes(this.lanes(w)));
  }

  private lanes(w: LoaderWorkload): Range[][] {
    const { big, bigUrl, shardUrls } = this.d;
    if (w === 'weights') return partRanges(bigUrl, big.size, WEIGHTS_PARTS, GET_LANES_PER_PART);
    const { readSize, plan } = this.plans.get(w)!;
    return plan.map((list) => list.map((r) => ({ url: shardUrls[r.shard]!, start: r.offset, length: readSize })));
  }

  /** What the JSON records of the loader cases' settings. */
  settings(trivialShards: boolean) {
    const s = this.d.shards;
    return {
      weights: this.d.weights ? { readers: WEIGHTS_PARTS, readSize: READ_SIZE, bytes: this.d.big.size, getLanesPerPart: GET_LANES_PER_PART } : null,
      random: s
        ? {
            shards: s.names.length,
            shardBytes: s.size,
            readers: RANDOM_READERS,
            fraction: RANDOM_FRACTION,
            maxReads: this.d.maxReads,
            runs: RANDOM_RUNS.map((r) => ({ ...r, readsPerReader: this.plans.get(r.workload)!.plan[0]!.length })),
            generator: 'mulberry32, seed × 1009 + reader',
            trivialFuse: trivialShards ? 'serves the shards from memory' : 'skipped: the shards are larger than it is allowed to hold in memory',
          }
        : null,
    };
  }
}
