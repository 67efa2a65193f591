/**
 * The loader cases' ratios, the aims of the loader issue, and their tables:
 * weights load, random reads, mount CPU per GiB of every case, and the
 * --fetch-threads sweep. Ratios are ours ÷ peer in throughput (above 1:
 * stowage faster); CPU aims are at most so many mount CPU seconds per GiB.
 *
 * The issue's aims are kept apart from report.ts's older ones (their `what`
 * starts with "loaders: "): one of them sets a different bar on a ratio the
 * older aims also judge (cold big file ÷ s3fs: 1.5× here, 2× there).
 */
import {
  CACHE_DIR,
  GETS,
  LOCAL,
  LOCAL_DROPPED,
  OURS_COLD,
  OURS_WARM,
  RCLONE_FULL,
  RCLONE_FULL_WARM,
  S3FS,
  STREAM,
  TRIVIAL,
  fmt,
  round,
  type Aim,
  type Figure,
  type Workload,
} from './report.js';
import { sweepLabel, type SweepRow } from './sweep.js';

const LOADER_ROWS = [OURS_COLD, OURS_WARM, S3FS, RCLONE_FULL, RCLONE_FULL_WARM, GETS, TRIVIAL, LOCAL_DROPPED, LOCAL];
const LOADER_WORKLOADS = ['weights', 'random-1m', 'random-64k'] as const;

const main = (figures: Figure[], c: string, w: Workload) => figures.find((f) => f.contender === c && f.workload === w && f.fetchThreads === undefined);

export function loaderCompare(figures: Figure[], rss: Record<string, number>): { ratios: Record<string, number>; aims: Aim[] } {
  const ratios: Record<string, number> = {};
  const pairs: [string, string, string][] = [
    ['ours-cold/parallel-gets', OURS_COLD, GETS],
    ['ours-cold/s3fs', OURS_COLD, S3FS],
    ['ours-cold/rclone-full', OURS_COLD, RCLONE_FULL],
    ['ours-warm/rclone-full-warm', OURS_WARM, RCLONE_FULL_WARM],
    ['ours-warm/trivial-fuse', OURS_WARM, TRIVIAL],
    ['ours-warm/local-dropped', OURS_WARM, LOCAL_DROPPED],
    ['ours-warm/cache-dir', OURS_WARM, CACHE_DIR],
  ];
  for (const w of ['big', ...LOADER_WORKLOADS] as const) {
    for (const [name, a, b] of pairs) {
      const fa = main(figures, a, w);
      const fb = main(figures, b, w);
      if (fa && fb && fb.mbPerSec > 0) ratios[`${w} ${name}`] = round(fa.mbPerSec / fb.mbPerSec, 3);
    }
  }
  const aims: Aim[] = [];
  const atLeast = (what: string, threshold: number) => {
    const value = ratios[what];
    if (value !== undefined) aims.push({ what: `loaders: ${what}`, aim: `≥ ${threshold}×`, threshold, value, met: value >= threshold });
  };
  for (const w of ['big', 'weights'] as const) {
    atLeast(`${w} ours-cold/parallel-gets`, 0.8);
    atLeast(`${w} ours-cold/s3fs`, 1.5);
    atLeast(`${w} ours-warm/trivial-fuse`, 0.8);
  }
  atLeast('big ours-warm/cache-dir', 0.8);
  for (const w of ['random-1m', 'random-64k'] as const) atLeast(`${w} ours-warm/local-dropped`, 0.8);
  const cpuAim = (c: string, w: Workload, threshold: number) => {
    const f = main(figures, c, w);
    if (f && Number.isFinite(f.cpuSecondsPerGiB)) {
      aims.push({ what: `loaders: mount CPU, ${c} (${w})`, aim: `≤ ${threshold} s/GiB`, threshold, atMost: true, value: f.cpuSecondsPerGiB, met: f.cpuSecondsPerGiB <= threshold });
    }
  };
  // Small files are left out: 40 MB of 4 KiB files is all per-file work, not per-byte.
  for (const w of ['big', ...LOADER_WORKLOADS, 'stream'] as const) {
    cpuAim(w === 'stream' ? STREAM : OURS_COLD, w, 2);
    if (w !== 'stream') cpuAim(OURS_WARM, w, 1);
  }
  const ours = Object.entries(rss).filter(([k, v]) => k.includes('stowage') && Number.isFinite(v));
  if (ours.length > 0) {
    const [which, peak] = ours.reduce((a, b) => (b[1] > a[1] ? b : a));
    const mib = round(peak / 2 ** 20, 1);
    aims.push({ what: `loaders: peak RSS of any stowage mount (${which})`, aim: '< 300 MiB', threshold: 300, atMost: true, value: mib, met: mib < 300 });
  }
  return { ratios, aims };
}

function layout(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => [...(r[i] ?? '')].length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(rows[0]!), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.slice(1).map(line)].join('\n');
}

const mbs = (f: Figure | undefined) => (f ? `${fmt(f.mbPerSec, 1)} MB/s ${fmt(f.seconds, 2)} s` : '—');
const rps = (f: Figure | undefined) => (f?.readsPerSec !== undefined ? `${fmt(f.readsPerSec, 0)} reads/s` : '—');
const cpuPerGiB = (f: Figure | undefined) => (f && Number.isFinite(f.cpuSecondsPerGiB) ? fmt(f.cpuSecondsPerGiB, 2) : '—');
const mib = (b: number | undefined) => (b !== undefined && Number.isFinite(b) ? `${fmt(b / 2 ** 20, 0)} MiB` : '');

export function loaderTables(
  figures: Figure[],
  rss: Record<string, number>,
  aims: Aim[],
  sweep: SweepRow[] | undefined,
  labels: { bigMiB: number; shards?: { count: number; mib: number }; trivialShards: boolean; sweepNote?: string },
): string {
  const out: string[] = [];
  if (figures.some((f) => f.workload === 'weights' && f.fetchThreads === undefined)) {
    const rows = [['contender', `weights load: 4 readers × ${labels.bigMiB / 4} MiB, 1 MiB reads`, 'reads/s', 'mount CPU s/GiB', 'peak RSS']];
    for (const c of LOADER_ROWS) {
      const f = main(figures, c, 'weights');
      if (f) rows.push([c, mbs(f), rps(f), cpuPerGiB(f), mib(rss[`weights: ${c}`] ?? rss[c])]);
    }
    out.push(layout(rows));
  }
  if (labels.shards && figures.some((f) => f.workload.startsWith('random-'))) {
    const rows = [['contender', '1 MiB random reads', 'reads/s', '64 KiB random reads', 'reads/s', 'mount CPU s/GiB (1 MiB, 64 KiB)']];
    for (const c of LOADER_ROWS) {
      const a = main(figures, c, 'random-1m');
      const b = main(figures, c, 'random-64k');
      if (a || b) rows.push([c, mbs(a), rps(a), mbs(b), rps(b), `${cpuPerGiB(a)}, ${cpuPerGiB(b)}`]);
    }
    const note = labels.trivialShards ? '' : '\n(trivial FUSE skipped for the shards: too large to hold in memory; see settings.loaders.random.trivialFuse)';
    out.push(`random reads by 8 readers over ${labels.shards.count} shards, ${labels.shards.mib} MiB in all\n${layout(rows)}${note}`);
  }
  const workloads: Workload[] = ['big', 'small', 'weights', 'random-1m', 'random-64k', 'stream'];
  const present = workloads.filter((w) => figures.some((f) => f.workload === w && Number.isFinite(f.cpuSecondsPerGiB)));
  const cpuRows = [['mount CPU s per GiB read', ...present]];
  const contenders = [...new Set(figures.filter((f) => Number.isFinite(f.cpuSecondsPerGiB) && f.fetchThreads === undefined).map((f) => f.contender))];
  for (const c of contenders) cpuRows.push([c, ...present.map((w) => cpuPerGiB(main(figures, c, w)))]);
  if (cpuRows.length > 1) out.push(layout(cpuRows));
  if (sweep && sweep.length > 0) {
    const rows = [['--fetch-threads', 'cold big file', 'mount CPU s/GiB', 'cold weights load', 'mount CPU s/GiB', 'peak RSS (big, weights)']];
    for (const r of sweep) {
      const p = (x: typeof r.big) => (x ? `${fmt(x.mbPerSec, 1)} MB/s ${fmt(x.seconds, 2)} s` : '—');
      const c = (x: typeof r.big) => (x && Number.isFinite(x.cpuSecondsPerGiB) ? fmt(x.cpuSecondsPerGiB, 2) : '—');
      rows.push([String(r.threads), p(r.big), c(r.big), p(r.weights), c(r.weights), `${mib(r.big?.peakRssBytes)}, ${mib(r.weights?.peakRssBytes)}`]);
    }
    out.push(`${sweepLabel(0).replace(/ 0$/, ' N')} (fresh cache each)\n${layout(rows)}`);
  } else if (labels.sweepNote) out.push(`--fetch-threads sweep: ${labels.sweepNote}`);
  const aimRows = [['aim of the loader issue', 'value', 'aim', 'met']];
  for (const a of aims) {
    const v = a.what.includes('RSS') ? `${fmt(a.value, 0)} MiB` : a.what.includes('CPU') ? `${fmt(a.value, 2)} s/GiB` : `${fmt(a.value, 2)}×`;
    aimRows.push([a.what.replace(/^loaders: /, ''), v, a.aim, a.met ? 'yes' : 'NO']);
  }
  if (aimRows.length > 1) out.push(layout(aimRows));
  return out.join('\n\n');
}
