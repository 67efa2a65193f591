/**
 * Process trees, read from /proc (Linux only): a root and every process below
 * it, the CPU they have used, and how to kill them all by PID.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { spawnSync } from 'node:child_process';

/** Clock ticks per second, the unit of /proc's CPU times. */
export const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout) || 100;

interface Stat {
  ppid: number;
  /** Clock ticks after boot at which it started: with the PID, names one process even after the PID is reused. */
  start: number;
  /** utime + stime of the process (all threads), plus cutime + cstime of the children it has reaped, in seconds. */
  cpu: number;
}

function stat(pid: number): Stat | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // After "pid (comm) ": state is [0], ppid [1], utime..cstime [11]..[14].
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ').map(Number);
    return { ppid: f[1]!, start: f[19]!, cpu: (f[11]! + f[12]! + f[13]! + f[14]!) / CLOCK_TICKS };
  } catch {
    return undefined; // gone
  }
}

function allStats(): Map<number, Stat> {
  const out = new Map<number, Stat>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const s = stat(Number(name));
    if (s) out.set(Number(name), s);
  }
  return out;
}

/** The live processes of the trees under `roots` (the roots included), with their stats. */
function trees(roots: number[], stats = allStats()): Map<number, Stat> {
  const children = new Map<number, number[]>();
  for (const [pid, s] of stats) (children.get(s.ppid) ?? children.set(s.ppid, []).get(s.ppid)!).push(pid);
  const out = new Map<number, Stat>();
  const todo = roots.filter((r) => stats.has(r));
  while (todo.length) {
    const pid = todo.pop()!;
    if (out.has(pid)) continue;
    out.set(pid, stats.get(pid)!);
    todo.push(...(children.get(pid) ?? []));
  }
  return out;
}

/** The processes of the trees under `roots` now, to be killed later by killProcesses (once a parent is gone, its children leave its tree). */
export interface ProcessRef {
  pid: number;
  start: number;
}

export function treeProcesses(roots: number[]): ProcessRef[] {
  return [...trees(roots)].map(([pid, s]) => ({ pid, start: s.start }));
}

/** SIGKILLs each process still running under the same PID and start time (a reused PID is left alone). */
export function killProcesses(procs: ProcessRef[]): void {
  for (const p of procs) {
    if (stat(p.pid)?.start !== p.start) continue;
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

/**
 * CPU seconds used so far by the trees under `roots`: each live process's own
 * time plus what its reaped children used (so a child that exits between two
 * readings still counts, in its parent). Take the difference of two readings.
 */
export function treeCpuSeconds(roots: number[]): number {
  let sum = 0;
  for (const s of trees(roots).values()) sum += s.cpu;
  return sum;
}

/** This process's CPU seconds so far (user + system, all threads). */
export function selfCpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}
