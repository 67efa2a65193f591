/**
 * Figures, the ratios between contenders, the aims, and how they are shown.
 * Throughput ratios are ours ÷ peer, so above 1 means stowage was faster.
 * MB is 10^6 bytes.
 */
import type { Detail } from './contender.js';

export type CaseName = 'big-put' | 'big-get' | 'big-put-again' | 'small-put' | 'small-get';
export type ContenderName = 'stowage' | 'aws-sdk' | 'rclone';

export interface Figure {
  contender: ContenderName;
  case: CaseName;
  seconds: number;
  bytes: number;
  files: number;
  mbPerSec: number;
  filesPerSec: number;
  /** Requests s3rver saw during the transfer, by "METHOD kind". */
  s3Requests: Record<string, number>;
  /** CPU seconds of this process (with rclone, its child) and of s3rver during the transfer. */
  cpu: { client: number; s3rver: number };
  /** 1-minute load average when the transfer started (2 means both cores busy). */
  loadBefore: number;
  detail: Detail;
}

export interface Measured {
  seconds: number;
  s3Requests: Record<string, number>;
  cpu: { client: number; s3rver: number };
  loadBefore: number;
  detail: Detail;
}

export function figure(contender: ContenderName, kase: CaseName, bytes: number, files: number, m: Measured): Figure {
  return {
    contender,
    case: kase,
    seconds: round(m.seconds, 3),
    bytes,
    files,
    mbPerSec: round(bytes / 1e6 / m.seconds, 1),
    filesPerSec: round(files / m.seconds, 1),
    s3Requests: m.s3Requests,
    cpu: { client: round(m.cpu.client, 2), s3rver: round(m.cpu.s3rver, 2) },
    loadBefore: m.loadBefore,
    detail: m.detail,
  };
}

export interface Aim {
  what: string;
  aim: string;
  /** Lowest acceptable value of `value`. */
  threshold: number;
  value: number;
  met: boolean;
}

export interface Ratios {
  [name: string]: number;
}

export function compare(figures: Figure[]): { ratios: Ratios; aims: Aim[] } {
  const get = (c: ContenderName, k: CaseName) => figures.find((f) => f.contender === c && f.case === k);
  const ratios: Ratios = {};
  const rate = (f: Figure) => (f.case.startsWith('small') ? f.filesPerSec : f.mbPerSec);
  for (const k of ['big-put', 'big-get', 'small-put', 'small-get'] as const) {
    const ours = get('stowage', k);
    for (const peer of ['aws-sdk', 'rclone'] as const) {
      const p = get(peer, k);
      if (ours && p) ratios[`${k} stowage/${peer}`] = round(rate(ours) / rate(p), 3);
    }
  }
  const first = get('stowage', 'big-put');
  const again = get('stowage', 'big-put-again');
  if (first && again) ratios['big-put-again speed-up'] = round(first.seconds / again.seconds, 2);

  const aim = (what: string, text: string, threshold: number, value: number | undefined): Aim[] =>
    value === undefined ? [] : [{ what, aim: text, threshold, value, met: value >= threshold }];
  const aims = [
    ...aim('big-put', '≥ 0.9× (a)', 0.9, ratios['big-put stowage/aws-sdk']),
    ...aim('big-get', '≥ 0.9× (a)', 0.9, ratios['big-get stowage/aws-sdk']),
    ...aim('big-put-again', '≥ 5× faster than 1st put', 5, ratios['big-put-again speed-up']),
    ...aim('small-put', '≥ 3× (b) files/s', 3, ratios['small-put stowage/rclone']),
    ...aim('small-get', '≥ 3× (b) files/s', 3, ratios['small-get stowage/rclone']),
  ];
  return { ratios, aims };
}

export interface TableLabels {
  bigMiB: number;
  smallFiles: number;
  smallKiB: number;
}

/** The printed table: one row per case, contenders side by side. */
export function table(figures: Figure[], ratios: Ratios, aims: Aim[], labels: TableLabels): string {
  const caseLabel: Record<CaseName, string> = {
    'big-put': `${labels.bigMiB} MiB put`,
    'big-get': `${labels.bigMiB} MiB get`,
    'big-put-again': `${labels.bigMiB} MiB put again`,
    'small-put': `${labels.smallFiles} × ${labels.smallKiB} KiB put`,
    'small-get': `${labels.smallFiles} × ${labels.smallKiB} KiB get`,
  };
  const cell = (f: Figure | undefined) => {
    if (!f) return '—';
    const rate = f.case.startsWith('small') ? `${fmt(f.filesPerSec, 0)} files/s` : `${fmt(f.mbPerSec, 1)} MB/s`;
    return `${rate} ${fmt(f.seconds, 2)} s`;
  };
  const ratio = (v: number | undefined) => (v === undefined ? '—' : `${fmt(v, 2)}×`);
  const header = ['case', 'stowage', '(a) aws-sdk', '(b) rclone', 'ours/(a)', 'ours/(b)', 'aim', 'met'];
  const rows: string[][] = [header];
  for (const k of ['big-put', 'big-get', 'big-put-again', 'small-put', 'small-get'] as const) {
    const get = (c: ContenderName) => figures.find((f) => f.contender === c && f.case === k);
    const a = aims.find((x) => x.what === k);
    const again = k === 'big-put-again';
    rows.push([
      caseLabel[k],
      cell(get('stowage')),
      cell(get('aws-sdk')),
      cell(get('rclone')),
      again ? `speed-up ${ratio(ratios['big-put-again speed-up'])}` : ratio(ratios[`${k} stowage/aws-sdk`]),
      again ? '' : ratio(ratios[`${k} stowage/rclone`]),
      a?.aim ?? '',
      a ? (a.met ? 'yes' : `NO (${fmt(a.value, 2)})`) : '',
    ]);
  }
  const widths = header.map((_, i) => Math.max(...rows.map((r) => [...r[i]!].length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(rows[0]!), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.slice(1).map(line)].join('\n');
}

function fmt(v: number, digits: number): string {
  return v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function round(v: number, digits: number): number {
  const m = 10 ** digits;
  return Math.round(v * m) / m;
}
