/**
 * Figures, the ratios ours ÷ peer, the aims, and the printed table.
 * Throughput ratios above 1 mean stowage moved more; latency ratios below 1
 * mean stowage answered sooner.
 */
import { percentile, type Measured } from './measure.js';

export const CASES = [
  'dict-put-1',
  'dict-get-1',
  'dict-put-64',
  'dict-get-64',
  'dict-update',
  'dict-getmany',
  'dict-get-latency',
  'queue-batch',
  'queue-64',
  'queue-64-nonblocking',
  'queue-wake',
] as const;
export type CaseName = (typeof CASES)[number];
export const CONTENDERS = ['stowage-redis', 'stowage-lmdb', 'ioredis', 'ioredis-pipelined', 'redis-benchmark'] as const;
export type ContenderName = (typeof CONTENDERS)[number];
const OURS = ['stowage-redis', 'stowage-lmdb'] as const;

type Metric = 'perSec' | 'p50Ms' | 'p99Ms';
interface CaseInfo {
  label: string;
  unit: string;
  /** The contender the ratio is taken against. */
  peer: ContenderName;
  /** The case whose peer figure is used, when not this one. */
  peerCase?: CaseName;
  metric: Metric;
  aim?: { text: string; test: (ratio: number, value: number) => boolean; on: 'ratio' | 'value' };
}

const halfOfPipelined = { text: '≥ 0.5× pipelined', test: (r: number) => r >= 0.5, on: 'ratio' as const };
export const CASE_INFO: Record<CaseName, CaseInfo> = {
  'dict-put-1': { label: 'dict put, 1 caller', unit: 'ops/s', peer: 'ioredis', metric: 'perSec' },
  'dict-get-1': { label: 'dict get, 1 caller', unit: 'ops/s', peer: 'ioredis', metric: 'perSec' },
  'dict-put-64': { label: 'dict put, 64 callers', unit: 'ops/s', peer: 'ioredis-pipelined', metric: 'perSec' },
  'dict-get-64': { label: 'dict get, 64 callers', unit: 'ops/s', peer: 'ioredis-pipelined', metric: 'perSec' },
  'dict-update': { label: 'dict update ×1000', unit: 'entries/s', peer: 'ioredis-pipelined', metric: 'perSec', aim: halfOfPipelined },
  'dict-getmany': { label: 'dict getMany ×1000', unit: 'entries/s', peer: 'ioredis-pipelined', metric: 'perSec', aim: halfOfPipelined },
  'dict-get-latency': {
    label: 'dict get latency, 1 caller',
    unit: 'ms p50 / p99',
    peer: 'ioredis',
    metric: 'p50Ms',
    aim: { text: 'p50 < 1 ms', test: (_, v) => v < 1, on: 'value' },
  },
  'queue-batch': { label: 'queue put+get ×100', unit: 'msgs/s', peer: 'ioredis-pipelined', metric: 'perSec', aim: halfOfPipelined },
  'queue-64': { label: 'queue put+get, 64 callers', unit: 'msgs/s', peer: 'ioredis-pipelined', metric: 'perSec' },
  'queue-64-nonblocking': {
    label: '  same, get({ block: false })',
    unit: 'msgs/s',
    peer: 'ioredis-pipelined',
    peerCase: 'queue-64',
    metric: 'perSec',
  },
  'queue-wake': {
    label: 'queue blocked-get wake-up',
    unit: 'ms p50 / p99',
    peer: 'ioredis',
    metric: 'p99Ms',
    aim: { text: 'p99 < 5 ms', test: (_, v) => v < 5, on: 'value' },
  },
};

export interface Figure {
  case: CaseName;
  contender: ContenderName;
  /** What this contender did, in a few words. */
  how: string;
  /** Throughput cases: units moved (ops, entries or messages), in seconds. */
  units?: number;
  seconds?: number;
  perSec?: number;
  /** Latency cases. */
  samples?: number;
  p50Ms?: number;
  p99Ms?: number;
  meanMs?: number;
  maxMs?: number;
  /** CPU seconds during the case: this process (SDK, in-process server, ioredis) and redis-server. */
  cpu?: { process: number; redis: number };
  /** 1-minute load average when the case started. */
  loadBefore?: number;
  detail?: Record<string, unknown>;
}

export function figure(kase: CaseName, contender: ContenderName, how: string, m: Measured, extra: Partial<Figure> = {}): Figure {
  const f: Figure = { case: kase, contender, how, ...extra };
  if (m.kind === 'throughput') {
    f.units = m.units;
    f.seconds = round(m.seconds, 3);
    f.perSec = Math.round(m.units / m.seconds);
  } else {
    const s = [...m.samplesMs].sort((a, b) => a - b);
    f.samples = s.length;
    f.p50Ms = round(percentile(s, 50), 3);
    f.p99Ms = round(percentile(s, 99), 3);
    f.meanMs = round(s.reduce((a, b) => a + b, 0) / s.length, 3);
    f.maxMs = round(s[s.length - 1]!, 3);
  }
  if (m.detail) f.detail = { ...f.detail, ...m.detail };
  return f;
}

export interface Ratio {
  case: CaseName;
  ours: ContenderName;
  peer: ContenderName;
  peerCase: CaseName;
  metric: Metric;
  /** ours ÷ peer of the metric. */
  ratio: number;
}

export interface Aim {
  case: CaseName;
  contender: ContenderName;
  aim: string;
  /** The ratio or the value the aim is about. */
  value: number;
  met: boolean;
}

export function compare(figures: Figure[]): { ratios: Ratio[]; aims: Aim[] } {
  const get = (k: CaseName, c: ContenderName) => figures.find((f) => f.case === k && f.contender === c);
  const ratios: Ratio[] = [];
  const aims: Aim[] = [];
  for (const k of CASES) {
    const info = CASE_INFO[k];
    const peer = get(info.peerCase ?? k, info.peer)?.[info.metric];
    for (const ours of OURS) {
      const v = get(k, ours)?.[info.metric];
      if (v === undefined) continue;
      const ratio = peer ? round(v / peer, 3) : undefined;
      if (ratio !== undefined) ratios.push({ case: k, ours, peer: info.peer, peerCase: info.peerCase ?? k, metric: info.metric, ratio });
      const a = info.aim;
      if (!a) continue;
      const value = a.on === 'ratio' ? ratio : v;
      if (value !== undefined) aims.push({ case: k, contender: ours, aim: a.text, value, met: a.test(ratio ?? Number.NaN, v) });
    }
  }
  return { ratios, aims };
}

const COLUMN: Record<ContenderName, string> = {
  'stowage-redis': 'stowage (redis)',
  'stowage-lmdb': 'stowage (lmdb)',
  ioredis: 'ioredis',
  'ioredis-pipelined': 'ioredis pipelined',
  'redis-benchmark': 'redis-benchmark',
};

/** One row per case: contenders side by side, the ratios of both stowage backends to the row's peer, the aim. */
export function table(figures: Figure[], ratios: Ratio[], aims: Aim[]): string {
  const header = ['case', 'unit', ...CONTENDERS.map((c) => COLUMN[c]), 'peer', 'redis/peer', 'lmdb/peer', 'aim', 'met (redis, lmdb)'];
  const rows: string[][] = [header];
  for (const k of CASES) {
    const info = CASE_INFO[k];
    const cell = (c: ContenderName) => {
      const f = figures.find((x) => x.case === k && x.contender === c);
      if (!f) return '—';
      if (f.perSec !== undefined) return fmt(f.perSec, 0);
      return `${fmt(f.p50Ms!, 2)} / ${fmt(f.p99Ms!, 2)}`;
    };
    const ratio = (c: ContenderName) => {
      const r = ratios.find((x) => x.case === k && x.ours === c);
      if (!r) return '—';
      return `${r.metric === 'perSec' ? '' : `${r.metric.slice(0, 3)} `}${fmt(r.ratio, 2)}×`;
    };
    const met = (c: ContenderName) => {
      const a = aims.find((x) => x.case === k && x.contender === c);
      return a ? (a.met ? 'yes' : `NO (${fmt(a.value, 2)})`) : '—';
    };
    const peer = info.peerCase ? `${COLUMN[info.peer]} (above)` : COLUMN[info.peer];
    if (!info.aim) rows.push([info.label, info.unit, ...CONTENDERS.map(cell), peer, ratio('stowage-redis'), ratio('stowage-lmdb'), '', '']);
    else {
      rows.push([
        info.label,
        info.unit,
        ...CONTENDERS.map(cell),
        peer,
        ratio('stowage-redis'),
        ratio('stowage-lmdb'),
        info.aim.text,
        `${met('stowage-redis')}, ${met('stowage-lmdb')}`,
      ]);
    }
  }
  const widths = header.map((_, i) => Math.max(...rows.map((r) => [...r[i]!].length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(rows[0]!), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.slice(1).map(line)].join('\n');
}

export function fmt(v: number, digits: number): string {
  return v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function round(v: number, digits: number): number {
  const m = 10 ** digits;
  return Math.round(v * m) / m;
}
