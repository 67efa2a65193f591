/**
 * Rates over the last minutes, for the dashboard's charts: every `everyMs`
 * (5 s) it reads the operation counts and the placement counts and keeps, per
 * dict and queue, the operations per second of each interval, and the share
 * of calls placed on a worker caching some of their bytes (hits ÷ calls
 * placed in the interval; no point for an interval without placements). It
 * keeps `points` samples (120: ten minutes) per series, and forgets a series
 * that has seen no operation for that long. Memory: at most the number of
 * names opCounts tracks (bounded there) times `points`.
 */
import type { MetricsSource } from './types.js';

export type Series = [number, number][];

export class History {
  private readonly ops = new Map<string, Series>();
  private readonly placement: Series = [];
  private lastOps = new Map<string, number>();
  private lastPlacement = { hits: 0, total: 0 };
  private lastAt = Date.now();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly metrics: MetricsSource | undefined,
    everyMs = 5000,
    private readonly points = 120,
  ) {
    if (metrics) {
      this.lastOps = new Map(metrics.opCounts());
      this.lastPlacement = metrics.placementCounts();
    }
    this.timer = setInterval(() => this.sample(), everyMs);
    this.timer.unref();
  }

  /** Takes one sample now (the timer calls it; tests may too). */
  sample(now = Date.now()): void {
    if (!this.metrics) return;
    const seconds = Math.max(0.001, (now - this.lastAt) / 1000);
    this.lastAt = now;
    const counts = this.metrics.opCounts();
    for (const [name, n] of counts) {
      const rate = Math.max(0, n - (this.lastOps.get(name) ?? 0)) / seconds;
      const s = this.ops.get(name) ?? [];
      this.push(s, [now, rate]);
      this.ops.set(name, s);
    }
    for (const [name, s] of this.ops) {
      if (!counts.has(name)) this.push(s, [now, 0]);
      if (s.every(([, r]) => r === 0) && s.length >= this.points) this.ops.delete(name);
    }
    this.lastOps = new Map(counts);
    const p = this.metrics.placementCounts();
    const placed = p.total - this.lastPlacement.total;
    if (placed > 0) this.push(this.placement, [now, (p.hits - this.lastPlacement.hits) / placed]);
    this.lastPlacement = p;
  }

  /** Operations per second of `key` (`dict:NAME`, `queue:NAME`) per sample, oldest first. */
  opsOf(key: string): Series {
    return this.ops.get(key) ?? [];
  }

  /** The latest rate of `key` (0 when none). */
  rateOf(key: string): number {
    return this.ops.get(key)?.at(-1)?.[1] ?? 0;
  }

  placementHistory(): Series {
    return this.placement;
  }

  close(): void {
    clearInterval(this.timer);
  }

  private push(s: Series, point: [number, number]): void {
    s.push(point);
    if (s.length > this.points) s.splice(0, s.length - this.points);
  }
}
