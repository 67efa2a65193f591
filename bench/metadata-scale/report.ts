/**
 * What one case (a size and a layout) measured, the aims, and the printed
 * tables: the figures with the peers beside ours and the ratios ours ÷ peer
 * in time (above 1: stowage took longer), the aims case by case, and the CPU
 * seconds of the server per phase. MiB and KiB are powers of 2.
 */
import type { ProcessMemory } from '../volume-transfer/setup.js';
import type { MountFigures } from './mount.js';
import type { Latencies, PutFigures } from './ours.js';
import type { ObjectsWritten } from './peers.js';
import type { DirBytes } from './server.js';
import type { Layout } from './tree.js';

export interface CaseResult {
  label: string;
  files: number;
  layout: Layout;
  dirSize: number;
  dirs: number;
  loadBefore: number;
  seconds: number;
  /** Writing the local tree (the source of the put and the local peer). */
  localTreeSeconds: number;
  put: PutFigures & { cpu: { server: number; client: number } };
  commits: {
    n: number;
    latencies: Latencies;
    serverCpu: number;
    store: { before: DirBytes; after: DirBytes };
    index: { before: DirBytes; after: DirBytes };
  };
  stat: { cold: Latencies; warm: Latencies; serverCpu: { cold: number; warm: number } };
  listdir: { entries: number; cold: Latencies; warm: Latencies; serverCpu: { cold: number; warm: number } };
  /** Pages of `pageSize` entries of a directory at least that big, each a listPage call continuing the one before. */
  listPages?: { pageSize: number; cold: Latencies; warm: Latencies };
  fullListing: { seconds: number; entries: number; serverCpu: number };
  mount?: MountFigures;
  /** The server's memory right after the first put, and its peak (VmHWM) in each life (it restarts before each cold phase). */
  server: { afterPut: ProcessMemory; peaks: Record<string, number> };
  peers?: {
    localFind: { cold: number; warm: number; lines: number };
    localStat: { cold: Latencies; warm: Latencies };
    objects?: ObjectsWritten;
    rclone?: { seconds: number; files: number; cpu: { rclone: number; s3rver: number } };
    /** Why the rclone listing was skipped, in a few words. */
    rcloneSkipped?: string;
  };
}

export interface Aim {
  what: string;
  aim: string;
  value: number;
  unit: string;
  met: boolean;
}

const KiB = 1024;
const MiB = 1024 * 1024;

/** Bytes (the sum of file sizes) a 1-file commit adds to the data dir's store/ and, separately, to its index/ (LMDB). */
export function growth(c: CaseResult): { store: number; index: number } {
  const n = Math.max(1, c.commits.n);
  return {
    store: (c.commits.store.after.apparent - c.commits.store.before.apparent) / n,
    index: (c.commits.index.after.apparent - c.commits.index.before.apparent) / n,
  };
}

export function serverPeak(c: CaseResult): number {
  return Math.max(...Object.values(c.server.peaks).filter(Number.isFinite));
}

/**
 * A listing of a whole directory read as a rate: the warm p50 of the listing
 * divided by its entries in tens of thousands, for listings of at least
 * 10,000 entries (the flat layout's directory). A directory of 1,000 would
 * multiply the fixed cost of a call by ten, so it gives none. The listdir aim
 * (10,000 entries in under 50 ms) is checked on listPage of 10,000 entries.
 */
export function listdirPer10k(c: CaseResult): { ms: number; entries: number } | undefined {
  const e = c.listdir.entries;
  return e < 10_000 ? undefined : { ms: (c.listdir.warm.p50 * 10_000) / e, entries: e };
}

/** The issue's aims (stated for 1,000,000 files; checked for every case). */
export function aimsOf(c: CaseResult): Aim[] {
  const out: Aim[] = [];
  const add = (what: string, aim: string, value: number, unit: string, met: boolean) => {
    if (Number.isFinite(value)) out.push({ what, aim, value, unit, met });
  };
  add('first put', '≥ 20,000 files/s', c.put.filesPerSec, 'files/s', c.put.filesPerSec >= 20_000);
  add('1-file commit p50', '< 50 ms', c.commits.latencies.p50, 'ms', c.commits.latencies.p50 < 50);
  add('stat warm p50', '< 1 ms', c.stat.warm.p50, 'ms', c.stat.warm.p50 < 1);
  if (c.listPages) add(`listPage of ${fmt(c.listPages.pageSize, 0)} entries, warm p50`, '< 50 ms', c.listPages.warm.p50, 'ms', c.listPages.warm.p50 < 50);
  if (c.layout === 'dirs') {
    const g = growth(c).store;
    add('store growth per 1-file commit', '< 64 KiB', g / KiB, 'KiB', g < 64 * KiB);
  }
  const peak = serverPeak(c);
  add('server RSS (peak)', '< 500 MiB', peak / MiB, 'MiB', peak < 500 * MiB);
  if (c.mount) {
    add('mount ready', '< 1 s', c.mount.readySeconds, 's', c.mount.readySeconds < 1);
    const rss = c.mount.memoryAfterFind.rss;
    add('mount RSS after find', '< 300 MiB', rss / MiB, 'MiB', rss < 300 * MiB);
  }
  return out;
}

export function fmt(v: number, digits: number): string {
  if (!Number.isFinite(v)) return '—';
  return v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** Milliseconds with enough digits to tell 0.05 from 0.5 and few enough to read 12,345. */
function ms(v: number): string {
  return fmt(v, v < 1 ? 3 : v < 10 ? 2 : v < 100 ? 1 : 0);
}

const lat = (l: Latencies | undefined) => (l ? `${ms(l.p50)} / ${ms(l.p99)} ms` : '—');
const secs = (s: number | undefined) => (s === undefined ? '—' : `${fmt(s, s < 10 ? 2 : 1)} s`);
const mib = (b: number) => `${fmt(b / MiB, 0)} MiB`;
const ratio = (ours: number | undefined, peer: number | undefined) =>
  ours === undefined || peer === undefined || !(peer > 0) ? '—' : `${fmt(ours / peer, ours / peer < 10 ? 2 : 0)}×`;

function layout(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => [...(r[i] ?? '')].length)));
  const line = (r: string[]) => r.map((c, i) => (c ?? '').padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(rows[0]!), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.slice(1).map(line)].join('\n');
}

const per10k = (l: ReturnType<typeof listdirPer10k>) =>
  !l ? '— (directories of fewer than 10,000)' : `${ms(l.ms)} ms (p50 × 10,000 ÷ ${fmt(l.entries, 0)})`;

type Row = [string, (c: CaseResult) => string];

const FIGURES: Row[] = [
  ['first put', (c) => `${fmt(c.put.filesPerSec, 0)} files/s (${secs(c.put.seconds)})`],
  ['1-file commit p50 / p99', (c) => lat(c.commits.latencies)],
  ['stat cold p50 / p99', (c) => lat(c.stat.cold)],
  ['  local fs.stat cold', (c) => lat(c.peers?.localStat.cold)],
  ['stat warm p50 / p99', (c) => lat(c.stat.warm)],
  ['  local fs.stat warm', (c) => lat(c.peers?.localStat.warm)],
  ['  ours / local (warm p50)', (c) => ratio(c.stat.warm.p50, c.peers?.localStat.warm.p50)],
  ['listdir cold p50 / p99', (c) => `${lat(c.listdir.cold)} (${fmt(c.listdir.entries, 0)} entries, n=${c.listdir.cold.n})`],
  ['listdir warm p50 / p99', (c) => lat(c.listdir.warm)],
  ['  per 10,000 entries (warm)', (c) => per10k(listdirPer10k(c))],
  ['listPage of 10,000 cold / warm', (c) => (c.listPages ? `${lat(c.listPages.cold)} / ${lat(c.listPages.warm)} (n=${c.listPages.warm.n})` : '— (directories of fewer than 10,000)')],
  ['recursive listing, SDK', (c) => `${secs(c.fullListing.seconds)} (${fmt(c.fullListing.entries, 0)} entries)`],
  ['  rclone lsf -R (s3rver)', (c) => (c.peers?.rclone ? secs(c.peers.rclone.seconds) : c.peers?.rcloneSkipped ? `skipped (${c.peers.rcloneSkipped})` : '—')],
  ['  ours / rclone', (c) => ratio(c.fullListing.seconds, c.peers?.rclone?.seconds)],
  ['mount ready', (c) => secs(c.mount?.readySeconds)],
  ['find over the mount cold / warm', (c) => (c.mount ? `${secs(c.mount.findCold.seconds)} / ${secs(c.mount.findWarm.seconds)}` : '—')],
  ['  local find cold / warm', (c) => (c.peers ? `${secs(c.peers.localFind.cold)} / ${secs(c.peers.localFind.warm)}` : '—')],
  ['  ours / local (cold, warm)', (c) => (c.mount && c.peers ? `${ratio(c.mount.findCold.seconds, c.peers.localFind.cold)}, ${ratio(c.mount.findWarm.seconds, c.peers.localFind.warm)}` : '—')],
  ['mount RSS after find (now / peak)', (c) => (c.mount ? `${mib(c.mount.memoryAfterFind.rss)} / ${mib(c.mount.memoryAfterFind.peak)}` : '—')],
  ['reload after a 1-file commit', (c) => (c.mount ? `${secs(c.mount.reloadSeconds)} (peak RSS then ${mib(c.mount.memoryAfterReload.peak)})` : '—')],
  ['store growth per 1-file commit', (c) => `${fmt(growth(c).store / KiB, 1)} KiB (index ${fmt(growth(c).index / KiB, 1)} KiB)`],
  ['server RSS after put / peak', (c) => `${mib(c.server.afterPut.rss)} / ${mib(serverPeak(c))}`],
];

const CPU: Row[] = [
  ['put, per 1,000 files', (c) => `${fmt((c.put.cpu.server * 1000) / c.files, 3)} s (client ${fmt((c.put.cpu.client * 1000) / c.files, 3)} s)`],
  ['1-file commit, each', (c) => `${fmt(c.commits.serverCpu / Math.max(1, c.commits.n), 3)} s`],
  ['stat, per 1,000 (cold / warm)', (c) => `${fmt((c.stat.serverCpu.cold * 1000) / c.stat.cold.n, 2)} / ${fmt((c.stat.serverCpu.warm * 1000) / c.stat.warm.n, 2)} s`],
  ['listdir, each (cold / warm)', (c) => `${fmt(c.listdir.serverCpu.cold / c.listdir.cold.n, 3)} / ${fmt(c.listdir.serverCpu.warm / c.listdir.warm.n, 3)} s`],
  ['recursive listing', (c) => `${fmt(c.fullListing.serverCpu, 2)} s`],
  ['mount until ready (mount process)', (c) => (c.mount ? `${fmt(c.mount.cpu.server.ready, 2)} s (${fmt(c.mount.cpu.mount.ready, 2)} s)` : '—')],
  ['two finds (mount process)', (c) => (c.mount ? `${fmt(c.mount.cpu.server.finds, 2)} s (${fmt(c.mount.cpu.mount.finds, 2)} s)` : '—')],
  ['reload (mount process)', (c) => (c.mount ? `${fmt(c.mount.cpu.server.reload, 2)} s (${fmt(c.mount.cpu.mount.reload, 2)} s)` : '—')],
  ['rclone listing: rclone / s3rver', (c) => (c.peers?.rclone ? `${fmt(c.peers.rclone.cpu.rclone, 2)} / ${fmt(c.peers.rclone.cpu.s3rver, 2)} s` : '—')],
];

const short = (c: CaseResult) => `${fmt(c.files, 0)} ${c.layout === 'dirs' ? `dirs of ${fmt(c.dirSize, 0)}` : 'flat'}`;

export function tables(cases: CaseResult[]): string {
  const head = ['', ...cases.map(short)];
  const figures = layout([['measure', ...head.slice(1)], ...FIGURES.map(([label, f]) => [label, ...cases.map(f)])]);
  const aimNames = [...new Set(cases.flatMap((c) => aimsOf(c).map((a) => `${a.what}\u0000${a.aim}`)))];
  const aimRows = aimNames.map((key) => {
    const [what, aim] = key.split('\u0000') as [string, string];
    return [
      `${what} ${aim}`,
      ...cases.map((c) => {
        const a = aimsOf(c).find((x) => x.what === what);
        return a ? `${a.met ? 'yes' : 'NO'} (${fmt(a.value, a.value < 10 ? 2 : 0)} ${a.unit})` : '—';
      }),
    ];
  });
  const aims = layout([['aim (stated for 1,000,000 files)', ...head.slice(1)], ...aimRows]);
  const cpu = layout([['server CPU seconds', ...head.slice(1)], ...CPU.map(([label, f]) => [label, ...cases.map(f)])]);
  return `${figures}\n\n${aims}\n\n${cpu}`;
}
