/**
 * CPU seconds of each part of a side, read from /proc (Linux only), and the
 * machine's. A runner in a container is not below its worker: the worker's
 * child is the `docker run` client, and the runner's `node` is a child of a
 * containerd-shim, so the container side is read on its own:
 *
 * - runners: processes whose command line runs this installation's
 *   dist/src/worker/runner.js and that are not below the worker (the `docker
 *   run` clients name runner.js too, but are below it). With the process
 *   runtime there are none;
 * - shims: the parents of those runners (one containerd-shim per container);
 * - engine: dockerd and containerd, which serve every client of the machine's
 *   engine, other work's included.
 *
 * Each reading is taken afresh (a runner started during a phase counts from
 * 0; one gone before the second reading is lost: warm phases start none).
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, processCpuSeconds } from '../volume-transfer/setup.js';
import { CLOCK_TICKS, selfCpuSeconds, treeCpuSeconds, treeProcesses } from '../calls/procs.js';

const RUNNER_SCRIPT = join(ROOT, 'dist', 'src', 'worker', 'runner.js');
const ENGINE = new Set(['dockerd', 'containerd']);

export interface CpuReading {
  /** stowage serve's tree. */
  server: number;
  /** The worker's tree: the agent and its children (forked runners; `docker run` clients). */
  worker: number;
  /** This process. */
  caller: number;
  /** Runner processes of this installation not below the worker (in containers). */
  containers: number;
  /** The containerd-shim parents of those. */
  shims: number;
  /** dockerd + containerd (machine-wide daemons). */
  engine: number;
  /** The whole machine, all CPUs: user + nice + system + irq + softirq of /proc/stat. */
  system: number;
}

export type CpuPart = keyof CpuReading;
export const PARTS: readonly CpuPart[] = ['server', 'worker', 'caller', 'containers', 'shims', 'engine', 'system'];

interface Proc {
  pid: number;
  ppid: number;
  comm: string;
  cmdline: string;
}

function processes(): Proc[] {
  const out: Proc[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const cmdline = readFileSync(`/proc/${name}/cmdline`, 'utf8').replaceAll('\0', ' ');
      out.push({ pid: Number(name), ppid, comm, cmdline });
    } catch {
      // gone
    }
  }
  return out;
}

/** The runner processes of this installation that are not below `workerPid` (its containers' `node`s), and their shims. */
export function containerProcesses(workerPid: number, procs = processes()): { runners: number[]; shims: number[] } {
  const below = new Set(treeProcesses([workerPid]).map((p) => p.pid));
  const runners = procs.filter((p) => p.cmdline.includes(RUNNER_SCRIPT) && !below.has(p.pid));
  const shims = new Set(runners.map((r) => procs.find((p) => p.pid === r.ppid)).filter((p) => p?.comm.startsWith('containerd-shim')).map((p) => p!.pid));
  return { runners: runners.map((r) => r.pid), shims: [...shims] };
}

/** Runner processes of this installation anywhere (below the worker or in containers): none once its runners are gone. */
export function runnerProcesses(procs = processes()): number[] {
  return procs.filter((p) => p.cmdline.includes(RUNNER_SCRIPT)).map((p) => p.pid);
}

/** CPU seconds the whole machine has spent working so far, all CPUs. */
export function systemCpuSeconds(): number {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal …
  return (f[0]! + f[1]! + f[2]! + f[5]! + f[6]!) / CLOCK_TICKS;
}

export function readCpu(serverPid: number, workerPid: number): CpuReading {
  const procs = processes();
  const { runners, shims } = containerProcesses(workerPid, procs);
  const sum = (pids: number[]) => pids.reduce((s, pid) => s + (processCpuSeconds(pid) || 0), 0);
  return {
    server: treeCpuSeconds([serverPid]),
    worker: treeCpuSeconds([workerPid]),
    caller: selfCpuSeconds(),
    containers: treeCpuSeconds(runners),
    shims: sum(shims),
    engine: sum(procs.filter((p) => ENGINE.has(p.comm)).map((p) => p.pid)),
    system: systemCpuSeconds(),
  };
}

export type CpuPer1000 = CpuReading & { total: number };

/** CPU seconds per 1,000 calls of each part between two readings; `total` is the parts without `system`. */
export function per1000(before: CpuReading, after: CpuReading, calls: number): CpuPer1000 {
  const r = (n: number) => Math.round(n * 1000) / 1000;
  const out = {} as CpuReading;
  for (const k of PARTS) out[k] = r(((after[k] - before[k]) * 1000) / calls);
  return { ...out, total: r(PARTS.filter((k) => k !== 'system').reduce((s, k) => s + out[k], 0)) };
}
