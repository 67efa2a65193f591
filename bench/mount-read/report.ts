/**
 * Figures, ratios (ours ÷ peer in throughput: above 1 means stowage was
 * faster), the aims, and the printed tables. MB is 10^6 bytes, MiB 2^20.
 */

export type Workload = 'big' | 'small' | 'stream' | 'weights' | 'random-1m' | 'random-64k';

export interface Figure {
  /** Row label, e.g. "stowage cold". */
  contender: string;
  workload: Workload;
  seconds: number;
  bytes: number;
  files: number;
  mbPerSec: number;
  filesPerSec: number;
  /** Reads made and their rate (weights and random reads). */
  reads?: number;
  readsPerSec?: number;
  /** Whether the page cache was dropped just before (false: not asked, or not permitted). */
  pageCacheDropped: boolean;
  /** CPU seconds during the case: this process (the reader, and the stowage server), the mount process, s3rver. */
  cpu: { bench: number; mount: number; s3rver: number };
  /** The mount process's CPU seconds per GiB read (cpu.mount ÷ bytes/2^30); NaN (null in the JSON) without a mount. */
  cpuSecondsPerGiB: number;
  /** The stowage mount's --fetch-threads in this case (the sweep); absent: the mount's default. */
  fetchThreads?: number;
  /** Requests s3rver saw during the case, by "METHOD kind". */
  s3Requests: Record<string, number>;
  loadBefore: number;
  detail: Record<string, string | number | boolean>;
}

export interface Aim {
  what: string;
  aim: string;
  threshold: number;
  /** Lower is better (RSS); otherwise higher is. */
  atMost?: boolean;
  value: number;
  met: boolean;
}

export function round(v: number, digits: number): number {
  const m = 10 ** digits;
  return Math.round(v * m) / m;
}

export function fmt(v: number, digits: number): string {
  if (!Number.isFinite(v)) return '—';
  return v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

const rate = (f: Figure) => (f.workload === 'small' ? f.filesPerSec : f.mbPerSec);

/** The contender rows compared by the aims, ours first. */
export const OURS_COLD = 'stowage cold';
export const OURS_WARM = 'stowage warm (page cache dropped)';
export const OURS_WARM_PC = 'stowage warm (page cache kept)';
export const S3FS = 's3fs cold';
export const RCLONE_OFF = 'rclone off cold';
export const RCLONE_FULL = 'rclone full cold';
export const RCLONE_FULL_WARM = 'rclone full warm (page cache dropped)';
export const GETS = 'parallel GETs (s3rver)';
export const LOCAL = 'local file (page cache kept)';
export const LOCAL_DROPPED = 'local file (page cache dropped)';
/** The chunk files of the stowage mount's cache directory, read whole after its warm read (big file only). */
export const CACHE_DIR = 'cache dir files (page cache dropped)';
export const TRIVIAL = 'trivial FUSE (memory)';
export const STREAM = 'stowage stream';

export function compare(figures: Figure[], rss: { mount: number; stream?: number }): { ratios: Record<string, number>; aims: Aim[] } {
  const get = (c: string, w: Workload) => figures.find((f) => f.contender === c && f.workload === w && f.fetchThreads === undefined);
  const ratios: Record<string, number> = {};
  const pairs: [string, string, string][] = [
    ['ours-cold/s3fs', OURS_COLD, S3FS],
    ['ours-cold/rclone-off', OURS_COLD, RCLONE_OFF],
    ['ours-cold/rclone-full', OURS_COLD, RCLONE_FULL],
    ['ours-cold/parallel-gets', OURS_COLD, GETS],
    ['ours-warm/trivial-fuse', OURS_WARM, TRIVIAL],
    ['ours-warm-pagecache/trivial-fuse', OURS_WARM_PC, TRIVIAL],
    ['ours-warm/local', OURS_WARM, LOCAL],
  ];
  for (const w of ['big', 'small'] as const) {
    for (const [name, a, b] of pairs) {
      const fa = get(a, w);
      const fb = get(b, w);
      if (fa && fb && rate(fb) > 0) ratios[`${w} ${name}`] = round(rate(fa) / rate(fb), 3);
    }
  }
  const aims: Aim[] = [];
  const at = (what: string, text: string, threshold: number, value: number | undefined) => {
    if (value !== undefined && Number.isFinite(value)) aims.push({ what, aim: text, threshold, value, met: value >= threshold });
  };
  for (const w of ['big', 'small'] as const) {
    at(`${w} ours-cold/s3fs`, '≥ 2×', 2, ratios[`${w} ours-cold/s3fs`]);
    at(`${w} ours-cold/rclone-off`, '≥ 1.5×', 1.5, ratios[`${w} ours-cold/rclone-off`]);
    at(`${w} ours-cold/rclone-full`, '≥ 1.5×', 1.5, ratios[`${w} ours-cold/rclone-full`]);
    if (w === 'big') at(`${w} ours-cold/parallel-gets`, '≥ 0.8×', 0.8, ratios[`${w} ours-cold/parallel-gets`]);
    at(`${w} ours-warm/trivial-fuse`, '≥ 0.8×', 0.8, ratios[`${w} ours-warm/trivial-fuse`]);
  }
  const mib = (b: number) => round(b / 2 ** 20, 1);
  const rssAim = (what: string, bytes: number | undefined) => {
    if (bytes !== undefined && Number.isFinite(bytes)) aims.push({ what, aim: '< 300 MiB', threshold: 300, atMost: true, value: mib(bytes), met: mib(bytes) < 300 });
  };
  rssAim('peak RSS, stowage mount (cold+warm run)', rss.mount);
  rssAim('peak RSS, stowage mount (stream)', rss.stream);
  return { ratios, aims };
}

function layout(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => [...(r[i] ?? '')].length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(rows[0]!), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.slice(1).map(line)].join('\n');
}

export function tables(
  figures: Figure[],
  peakRss: Record<string, number>,
  ratios: Record<string, number>,
  aims: Aim[],
  labels: { bigMiB: number; smallFiles: number; streamMiB: number; streamCache: string },
): string {
  const order = [OURS_COLD, OURS_WARM, OURS_WARM_PC, S3FS, RCLONE_OFF, RCLONE_FULL, RCLONE_FULL_WARM, GETS, LOCAL, LOCAL_DROPPED, CACHE_DIR, TRIVIAL];
  const cell = (f: Figure | undefined) => {
    if (!f) return '—';
    const r = f.workload === 'small' ? `${fmt(f.filesPerSec, 0)} files/s` : `${fmt(f.mbPerSec, 1)} MB/s`;
    return `${r} ${fmt(f.seconds, 2)} s`;
  };
  const rows: string[][] = [['contender', `${labels.bigMiB} MiB file, 1 MiB reads`, `${labels.smallFiles} × 4 KiB files`, 'peak RSS']];
  for (const c of order) {
    const big = figures.find((f) => f.contender === c && f.workload === 'big' && f.fetchThreads === undefined);
    const small = figures.find((f) => f.contender === c && f.workload === 'small');
    if (!big && !small) continue;
    const rss = peakRss[c];
    rows.push([c, cell(big), cell(small), rss !== undefined && Number.isFinite(rss) ? `${fmt(rss / 2 ** 20, 0)} MiB` : '']);
  }
  const stream = figures.find((f) => f.workload === 'stream');
  if (stream) {
    rows.push([
      `${STREAM} (${labels.streamMiB} MiB, --cache-size ${labels.streamCache})`,
      cell(stream),
      '',
      Number.isFinite(peakRss[STREAM] ?? NaN) ? `${fmt(peakRss[STREAM]! / 2 ** 20, 0)} MiB` : '',
    ]);
  }
  const ratioRows: string[][] = [['ratio (throughput)', 'big file', 'small files', 'aim', 'met (big, small)']];
  const names: [string, string][] = [
    ['ours-cold/s3fs', 'ours cold / s3fs'],
    ['ours-cold/rclone-off', 'ours cold / rclone off'],
    ['ours-cold/rclone-full', 'ours cold / rclone full'],
    ['ours-cold/parallel-gets', 'ours cold / parallel GETs'],
    ['ours-warm/trivial-fuse', 'ours warm / trivial FUSE'],
    ['ours-warm-pagecache/trivial-fuse', 'ours warm, page cache kept / trivial FUSE'],
    ['ours-warm/local', 'ours warm / local file'],
  ];
  const r = (k: string) => (ratios[k] === undefined ? '—' : `${fmt(ratios[k]!, 2)}×`);
  for (const [k, label] of names) {
    const ab = aims.find((a) => a.what === `big ${k}`);
    const as = aims.find((a) => a.what === `small ${k}`);
    const met = (a: Aim | undefined) => (a ? (a.met ? 'yes' : `NO (${fmt(a.value, 2)})`) : '—');
    ratioRows.push([label, r(`big ${k}`), r(`small ${k}`), ab?.aim ?? as?.aim ?? '', ab || as ? `${met(ab)}, ${met(as)}` : '']);
  }
  for (const a of aims.filter((x) => x.atMost)) {
    ratioRows.push([a.what, `${fmt(a.value, 0)} MiB`, '', a.aim, a.met ? 'yes' : 'NO']);
  }
  return `${layout(rows)}\n\n${layout(ratioRows)}`;
}
