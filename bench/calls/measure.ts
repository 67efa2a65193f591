/**
 * What both sides are measured through, the same way: a Side runs one call
 * and one map, and names the processes whose CPU counts as its server and its
 * workers; the caller is this process.
 */
import { load1 } from '../volume-transfer/setup.js';
import { selfCpuSeconds, treeCpuSeconds } from './procs.js';

export interface Side {
  /** What runs the calls, in a few words. */
  readonly describe: string;
  /** PIDs whose process trees are the server, and the workers (with their runners and mounts). */
  cpuRoots(): { server: number[]; workers: number[] };
  /** One call of the no-op, awaited; returns its result. */
  call(x: number): Promise<unknown>;
  /** One call per input, all submitted at once; calls `onFirst` when the first result arrives; returns the results in input order. */
  map(xs: number[], onFirst: () => void): Promise<unknown[]>;
  /** Stops everything it started, by PID, and waits for it. Safe to call twice. */
  stop(): Promise<void>;
}

/** CPU seconds per 1,000 calls. */
export interface CpuPer1000 {
  server: number;
  workers: number;
  caller: number;
  total: number;
}

export interface LatencyFigures {
  calls: number;
  p50Ms: number;
  p99Ms: number;
  meanMs: number;
  cpuPer1000: CpuPer1000;
  load1Before: number;
}

export interface MapFigures {
  calls: number;
  seconds: number;
  callsPerSecond: number;
  firstResultMs: number;
  cpuPer1000: CpuPer1000;
  load1Before: number;
}

interface CpuReading {
  server: number;
  workers: number;
  caller: number;
}

function readCpu(side: Side): CpuReading {
  const roots = side.cpuRoots();
  return { server: treeCpuSeconds(roots.server), workers: treeCpuSeconds(roots.workers), caller: selfCpuSeconds() };
}

function per1000(before: CpuReading, after: CpuReading, calls: number): CpuPer1000 {
  const f = (k: keyof CpuReading) => round(((after[k] - before[k]) * 1000) / calls, 3);
  const server = f('server');
  const workers = f('workers');
  const caller = f('caller');
  return { server, workers, caller, total: round(server + workers + caller, 3) };
}

/** CPU milliseconds per second of each part while no call runs (heartbeats, leases, timers): the floor under the latency phase's CPU. */
export interface IdleFigures {
  seconds: number;
  msPerSecond: CpuPer1000;
}

export async function measureIdle(side: Side, seconds: number): Promise<IdleFigures> {
  const before = readCpu(side);
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const after = readCpu(side);
  // per1000 over `seconds` "calls" is CPU seconds per 1,000 s, i.e. ms per second.
  return { seconds, msPerSecond: per1000(before, after, seconds) };
}

/** `n` calls one after another, each timed from before submit to its result. */
export async function measureLatency(side: Side, n: number): Promise<LatencyFigures> {
  const load1Before = load1();
  const ms: number[] = [];
  const before = readCpu(side);
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    const r = await side.call(i);
    ms.push(performance.now() - t);
    if (r !== i) throw new Error(`call ${i} returned ${JSON.stringify(r)}`);
  }
  const after = readCpu(side);
  ms.sort((a, b) => a - b);
  return {
    calls: n,
    p50Ms: round(quantile(ms, 0.5), 2),
    p99Ms: round(quantile(ms, 0.99), 2),
    meanMs: round(ms.reduce((s, x) => s + x, 0) / n, 2),
    cpuPer1000: per1000(before, after, n),
    load1Before,
  };
}

/** One map of `m` inputs 0..m-1, timed from the first submit to the last result. */
export async function measureMap(side: Side, m: number): Promise<MapFigures> {
  const xs = Array.from({ length: m }, (_, i) => i);
  const load1Before = load1();
  const before = readCpu(side);
  const t = performance.now();
  let first = Number.NaN;
  const out = await side.map(xs, () => (first = performance.now() - t));
  const seconds = (performance.now() - t) / 1000;
  const after = readCpu(side);
  if (out.length !== m || out.some((r, i) => r !== i)) throw new Error(`the map of ${m} inputs did not return them in order`);
  return {
    calls: m,
    seconds: round(seconds, 3),
    callsPerSecond: round(m / seconds, 0),
    firstResultMs: round(first, 1),
    cpuPer1000: per1000(before, after, m),
    load1Before,
  };
}

/** Nearest-rank quantile of sorted values. */
export function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

export const round = (n: number, digits = 2) => Math.round(n * 10 ** digits) / 10 ** digits;

/** `p`, or an error naming `what` after `ms`: a hung call fails the run (and its clean-up runs) instead of hanging it. */
export async function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no answer after ${ms / 1000}s`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}
