/**
 * How one case is timed, the same for every contender and workload: drop
 * the page cache (or only `sync`), reset s3rver's request counts, read the
 * CPU clocks of this process, the mount process and s3rver, run the reads,
 * read the clocks again. Each case becomes one Figure; a progress line goes
 * to stderr.
 *
 * Mounts are started and stopped through `withMount`, which always stops
 * the mount (detach, then the process by PID) when the case ends, whatever
 * happened; `mounts` holds the ones still up for the run's clean-up.
 */
import { spawnSync } from 'node:child_process';
import { dropCaches, load1, processCpuSeconds as cpuOf, type S3rver } from '../volume-transfer/setup.js';
import type { Mount } from './mounts.js';
import type { ReadResult } from './readers.js';
import { round, type Figure, type Workload } from './report.js';

export interface CaseOptions {
  /** Drop the page cache first (otherwise only `sync`). */
  drop: boolean;
  /** The mount process whose CPU is measured. */
  mountPid?: number;
  /** `--fetch-threads` of the stowage mount, when the case sets it. */
  fetchThreads?: number;
}

export class Harness {
  readonly figures: Figure[] = [];
  /** Peak RSS of each mount process, by the row (or `workload: row`) it served. */
  readonly peakRss: Record<string, number> = {};
  readonly mounts = new Set<Mount>();
  /** Whether dropping the page cache worked (undefined until first asked). */
  dropPermitted: boolean | undefined;

  constructor(
    private readonly s3: S3rver,
    private readonly say: (msg: string) => void,
  ) {}

  /** Mounts with `start`, runs `fn`, and always unmounts and stops the mount process. */
  async withMount<T>(start: () => Promise<Mount>, fn: (m: Mount) => Promise<T>): Promise<T> {
    const m = await start();
    this.mounts.add(m);
    try {
      return await fn(m);
    } finally {
      await m.stop();
      this.mounts.delete(m);
    }
  }

  async run(contender: string, workload: Workload, opts: CaseOptions, fn: () => Promise<ReadResult>): Promise<Figure> {
    let dropped = false;
    if (opts.drop) {
      dropped = dropCaches();
      this.dropPermitted ??= dropped;
    } else spawnSync('sync', { stdio: 'ignore' });
    const s3pid = this.s3.pid;
    await this.s3.resetStats();
    const loadBefore = load1();
    const c0 = { bench: cpuOf('self'), mount: opts.mountPid ? cpuOf(opts.mountPid) : NaN, s3rver: cpuOf(s3pid) };
    const t0 = performance.now();
    const r = await fn();
    const seconds = (performance.now() - t0) / 1000;
    const c1 = { bench: cpuOf('self'), mount: opts.mountPid ? cpuOf(opts.mountPid) : NaN, s3rver: cpuOf(s3pid) };
    const cpu = { bench: round(c1.bench - c0.bench, 2), mount: round(c1.mount - c0.mount, 2), s3rver: round(c1.s3rver - c0.s3rver, 2) };
    const f: Figure = {
      contender,
      workload,
      seconds: round(seconds, 3),
      bytes: r.bytes,
      files: r.files,
      mbPerSec: round(r.bytes / 1e6 / seconds, 1),
      filesPerSec: round(r.files / seconds, 1),
      ...(r.reads !== undefined ? { reads: r.reads, readsPerSec: round(r.reads / seconds, 1) } : {}),
      pageCacheDropped: dropped,
      cpu,
      // Unrounded CPU over the bytes: NaN (null in the JSON) when no mount process was measured.
      cpuSecondsPerGiB: r.bytes > 0 ? round((c1.mount - c0.mount) / (r.bytes / 2 ** 30), 2) : NaN,
      ...(opts.fetchThreads !== undefined ? { fetchThreads: opts.fetchThreads } : {}),
      s3Requests: await this.s3.stats(),
      loadBefore,
      detail: { checked: r.checked, ...(r.listSeconds !== undefined ? { listSeconds: r.listSeconds } : {}) },
    };
    this.figures.push(f);
    const rate =
      workload === 'small'
        ? `${f.filesPerSec.toFixed(0)} files/s`
        : `${f.mbPerSec.toFixed(1)} MB/s${f.readsPerSec !== undefined ? ` ${f.readsPerSec.toFixed(0)} reads/s` : ''}`;
    const reqs = Object.entries(f.s3Requests)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ');
    const mountCpu = Number.isFinite(f.cpu.mount) ? `${f.cpu.mount.toFixed(1)} (${f.cpuSecondsPerGiB.toFixed(2)} s/GiB)` : '-';
    this.say(
      `  ${contender.padEnd(38)} ${workload.padEnd(10)} ${f.seconds.toFixed(2).padStart(7)} s  ${rate.padEnd(24)} ` +
        `cpu: bench ${f.cpu.bench.toFixed(1)}, mount ${mountCpu}, s3rver ${f.cpu.s3rver.toFixed(1)} s; ` +
        `load ${loadBefore}; ${reqs || 'no S3 requests'}`,
    );
    return f;
  }
}
