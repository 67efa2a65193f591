/** The containers benchmark's JSON document, and the table printed from it. */
import type { HostInfo } from '../volume-transfer/setup.js';
import type { CpuPart } from './cpu.js';
import type { TimesFigures, WarmFigures } from './phases.js';
import type { Runtime } from './stack.js';

export interface SideFigures {
  runtime: Runtime;
  /** The flags of the worker of the warm phase, and of the cold one. */
  warmWorker: string;
  coldWorker: string;
  warm: WarmFigures;
  cold: TimesFigures;
}

export interface Result {
  benchmark: 'containers';
  date: string;
  host: HostInfo;
  load1AtStart: number;
  load1AtEnd: number;
  setup: { calls: number; warmUpCalls: number; stackWarmUpCalls: number; cold: number; slots: number; image: string };
  aim: { warmP50BelowMs: number; met: boolean };
  docker: SideFigures;
  process: SideFigures;
  naive: TimesFigures & { command: string };
  /** docker ÷ process, but coldP50OverNaive: docker cold ÷ the naive peer. */
  ratios: Record<'warmP50' | 'warmP99' | 'warmMean' | 'coldP50' | 'coldP50OverNaive' | 'cpuPer1000Total' | 'cpuPer1000System', number>;
}

const CPU_LABELS: Record<CpuPart | 'total', string> = {
  server: 'server (stowage serve)',
  worker: 'worker tree (agent + children)',
  caller: 'caller (this process)',
  containers: 'runners in containers',
  shims: 'their containerd-shims',
  engine: 'dockerd + containerd',
  total: 'total of the above',
  system: 'whole machine (/proc/stat)',
};

export function report(r: Result): string[] {
  const { docker: d, process: p } = r;
  const ratio = (a: number, b: number) => (b > 0 && Number.isFinite(a / b) ? String(Math.round((a / b) * 100) / 100) : '—');
  const row = (label: string, a: number | string, b: number | string, q: string) =>
    `${label.padEnd(44)}${String(a).padStart(10)}${String(b).padStart(10)}${q.padStart(16)}`;
  const cpu = (k: CpuPart | 'total') => row(`  ${CPU_LABELS[k]}`, d.warm.cpuPer1000[k], p.warm.cpuPer1000[k], ratio(d.warm.cpuPer1000[k], p.warm.cpuPer1000[k]));
  return [
    '',
    row('figure', 'docker', 'process', 'docker/process'),
    row(`warm no-op latency p50 ms (${r.setup.calls} calls)`, d.warm.p50Ms, p.warm.p50Ms, ratio(d.warm.p50Ms, p.warm.p50Ms)),
    row('warm no-op latency p99 ms', d.warm.p99Ms, p.warm.p99Ms, ratio(d.warm.p99Ms, p.warm.p99Ms)),
    row('warm no-op latency mean ms', d.warm.meanMs, p.warm.meanMs, ratio(d.warm.meanMs, p.warm.meanMs)),
    row(`cold start p50 ms (${r.setup.cold} calls)`, d.cold.p50Ms, p.cold.p50Ms, ratio(d.cold.p50Ms, p.cold.p50Ms)),
    row('cold start max ms', d.cold.maxMs, p.cold.maxMs, ratio(d.cold.maxMs, p.cold.maxMs)),
    'CPU s per 1,000 warm calls:',
    ...(['server', 'worker', 'caller', 'containers', 'shims', 'engine', 'total', 'system'] as const).map(cpu),
    '',
    `naive peer, a container per call (${r.naive.command}), spawn to exit:`,
    `  p50 ${r.naive.p50Ms} ms, max ${r.naive.maxMs} ms; docker cold p50 ÷ naive p50: ${r.ratios.coldP50OverNaive}`,
    `aim: docker warm p50 < ${r.aim.warmP50BelowMs} ms: ${r.aim.met ? 'yes' : 'NO'} (${d.warm.p50Ms} ms)`,
    '',
    'Ratios above 1: docker took longer or used more. The worker tree holds the forked runners (process) or the `docker run`',
    'clients (docker); the runners in containers, their shims and the engine are not below it. dockerd + containerd and the',
    'whole machine include whatever else runs on it.',
    `load average (1 min): ${r.load1AtStart} at the start, ${r.load1AtEnd} at the end; before docker/process warm ${d.warm.load1Before}/${p.warm.load1Before}, cold ${d.cold.load1Before}/${p.cold.load1Before}, naive ${r.naive.load1Before} (${r.host.cpus} CPUs, ${r.host.cpuModel}, ${r.host.node}, commit ${r.host.commit})`,
    `before both: ${r.setup.stackWarmUpCalls} untimed calls on a process worker (server and caller warm-up); each side: ${r.setup.warmUpCalls} warm-up calls`,
    `docker: warm worker ${d.warmWorker}; cold worker ${d.coldWorker}`,
    `process: warm worker ${p.warmWorker}; cold worker ${p.coldWorker}`,
  ];
}
