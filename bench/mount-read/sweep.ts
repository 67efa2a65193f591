/**
 * The worker-thread sweep: for each N of `--fetch-threads`, a cold
 * sequential read of the big file and a cold weights load, each on a fresh
 * `stowage mount --fetch-threads N` with an empty cache, so that the threads
 * that fetch, verify and write chunks are what changes between rows. The
 * main rows use the mount's default and are not part of the sweep.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { BIG_NAME } from './data.js';
import type { Harness } from './harness.js';
import type { Loaders } from './loaders.js';
import { mountStowage } from './mounts.js';
import { readBig } from './readers.js';
import type { BigFile } from '../volume-transfer/dataset.js';

export interface SweepPoint {
  mbPerSec: number;
  seconds: number;
  cpuSecondsPerGiB: number;
  peakRssBytes: number;
}

export interface SweepRow {
  threads: number;
  big?: SweepPoint;
  weights?: SweepPoint;
}

export const sweepLabel = (n: number) => `stowage cold, --fetch-threads ${n}`;

/** "1,2,4" → [1, 2, 4]; "none" or "" → []. Throws on anything else. */
export function parseThreadList(text: string): number[] {
  const t = text.trim();
  if (t === '' || t === 'none') return [];
  return t.split(',').map((p) => {
    const n = Number(p.trim());
    if (!Number.isInteger(n) || n < 0) throw new Error(`--fetch-threads ${JSON.stringify(text)}: give whole numbers ≥ 0 separated by commas, or none`);
    return n;
  });
}

export async function fetchThreadsSweep(
  h: Harness,
  threads: number[],
  opts: { tmp: string; volume: string; cacheSize: string; server: string; token: string; big: BigFile; bigCase: boolean; loaders?: Loaders },
): Promise<SweepRow[]> {
  const rows: SweepRow[] = [];
  for (const n of threads) {
    const row: SweepRow = { threads: n };
    const cases = [
      ...(opts.bigCase ? [{ key: 'big' as const, read: (dir: string) => () => readBig(join(dir, BIG_NAME), opts.big.path, opts.big.size) }] : []),
      ...(opts.loaders ? [{ key: 'weights' as const, read: (dir: string) => opts.loaders!.reads('weights', dir) }] : []),
    ];
    for (const c of cases) {
      const cacheDir = join(opts.tmp, `cache-threads-${n}-${c.key}`);
      try {
        await h.withMount(
          () => mountStowage(join(opts.tmp, 'mnt-threads'), { volume: opts.volume, cacheDir, cacheSize: opts.cacheSize, server: opts.server, token: opts.token, fetchThreads: n }),
          async (m) => {
            const f = await h.run(sweepLabel(n), c.key, { drop: true, mountPid: m.pid, fetchThreads: n }, c.read(m.dir));
            const peak = m.peakRss();
            h.peakRss[`${c.key}: ${sweepLabel(n)}`] = peak;
            row[c.key] = { mbPerSec: f.mbPerSec, seconds: f.seconds, cpuSecondsPerGiB: f.cpuSecondsPerGiB, peakRssBytes: peak };
          },
        );
      } finally {
        rmSync(cacheDir, { recursive: true, force: true });
      }
    }
    rows.push(row);
  }
  return rows;
}
