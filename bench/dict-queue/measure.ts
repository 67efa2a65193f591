/**
 * How a case is timed: throughput loops run for a fixed time after a warm-up,
 * latencies are collected one sample at a time. Every contender is timed by
 * the same code.
 */

export interface Timing {
  /** Seconds each throughput case runs for, after `warmSeconds` not counted. */
  seconds: number;
  warmSeconds: number;
  /** Samples of a single dict get. */
  latencySamples: number;
  /** Samples of a blocked get woken by a put. */
  wakeSamples: number;
}

export type Measured =
  | { kind: 'throughput'; units: number; seconds: number; detail?: Record<string, unknown> }
  | { kind: 'latency'; samplesMs: number[]; detail?: Record<string, unknown> };

/**
 * Runs `callers` loops of `step` (which returns the units it moved: 1 op, or
 * 1000 entries of a batch) until `seconds` have passed, after a warm-up of the
 * same shape. The time counted runs until the last call in flight returns.
 */
export async function throughput(
  t: Timing,
  callers: number,
  step: (caller: number, i: number) => Promise<number>,
): Promise<Measured> {
  const loop = async (seconds: number) => {
    const end = performance.now() + seconds * 1000;
    let units = 0;
    let next = 0;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: callers }, async (_, c) => {
        while (performance.now() < end) {
          // Not `units += await …`: that reads units before the await and loses other callers' counts.
          const moved = await step(c, next++);
          units += moved;
        }
      }),
    );
    return { units, seconds: (performance.now() - t0) / 1000 };
  };
  if (t.warmSeconds > 0) await loop(t.warmSeconds);
  return { kind: 'throughput', ...(await loop(t.seconds)) };
}

/** `n` samples of `once`, which returns the milliseconds of one sample. */
export async function latency(n: number, once: (i: number) => Promise<number>): Promise<Measured> {
  const warm = Math.min(50, Math.ceil(n / 10));
  for (let i = 0; i < warm; i++) await once(i);
  const samplesMs: number[] = [];
  for (let i = 0; i < n; i++) samplesMs.push(await once(warm + i));
  return { kind: 'latency', samplesMs };
}

export function percentile(sortedMs: readonly number[], p: number): number {
  if (sortedMs.length === 0) return Number.NaN;
  return sortedMs[Math.min(sortedMs.length - 1, Math.floor((p / 100) * sortedMs.length))]!;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Time for a blocked get to reach the server and wait there before the put is sent. */
export const BLOCK_SETTLE_MS = 5;
