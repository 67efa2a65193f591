/**
 * Placement: which worker runs a queued call. Three policies, chosen per
 * bridge (`stowage serve --placement`), so that a benchmark can compare them:
 *
 * - `ours`: the score of a worker is the bytes of the call's reads its cache
 *   holds. The call goes to a worker with a free slot among those with the
 *   highest score, fewer running calls first. When the best-scoring worker is
 *   full, the call waits for it for up to `localityWaitMs` (delay scheduling:
 *   the queue is scanned on, so later calls whose data is elsewhere still
 *   start), then goes to the best-scoring worker that is free. A call whose
 *   data is cached nowhere goes to the least-loaded free worker.
 * - `round-robin`: the next free worker in turn (by worker id), as a load
 *   balancer in front of identical containers would do.
 * - `random`: a free worker at random.
 *
 * Every decision records the candidates and their scores, for
 * `stowage bridge explain`.
 */
import type { Candidate } from '../gen/stowage/v1/bridge.js';
import type { ExtentRef, PlacementPolicyName } from './types.js';

export interface WorkerView {
  id: string;
  slots: number;
  running: number;
  chunks: ReadonlySet<string>;
}

export interface PlacementInput {
  /** Distinct extents the call reads. */
  extents: readonly ExtentRef[];
  workers: readonly WorkerView[];
  /** How long the call has waited in the queue. */
  waitedMs: number;
}

export type Placement =
  | { kind: 'place'; workerId: string; reason: string; candidates: Candidate[]; readBytes: number }
  /** Not now: nothing free, or (ours) the preferred worker is busy; `retryInMs` when waiting has an end. */
  | { kind: 'wait'; retryInMs?: number };

export interface PlacementPolicy {
  readonly name: PlacementPolicyName;
  place(input: PlacementInput): Placement;
}

export function createPlacementPolicy(name: PlacementPolicyName, opts: { localityWaitMs?: number } = {}): PlacementPolicy {
  if (name === 'round-robin') return new RoundRobin();
  if (name === 'random') return new RandomPlacement();
  return new CacheAware(opts.localityWaitMs ?? DEFAULT_LOCALITY_WAIT_MS);
}

export const DEFAULT_LOCALITY_WAIT_MS = 3000;

const free = (w: WorkerView) => w.running < w.slots;
const load = (w: WorkerView) => w.running / Math.max(w.slots, 1);
const byLoad = (a: WorkerView, b: WorkerView) => load(a) - load(b) || a.running - b.running || (a.id < b.id ? -1 : 1);

function cachedBytes(w: WorkerView, extents: readonly ExtentRef[]): number {
  let n = 0;
  for (const e of extents) if (w.chunks.has(e.hash)) n += e.length;
  return n;
}

function candidatesOf(workers: readonly WorkerView[], scores: Map<string, number>): Candidate[] {
  return workers.map((w) => ({ workerId: w.id, cachedBytes: scores.get(w.id) ?? 0, running: w.running, slots: w.slots }));
}

const totalBytes = (extents: readonly ExtentRef[]) => extents.reduce((n, e) => n + e.length, 0);

class CacheAware implements PlacementPolicy {
  readonly name = 'ours' as const;
  constructor(private readonly localityWaitMs: number) {}

  place({ extents, workers, waitedMs }: PlacementInput): Placement {
    const freeWorkers = workers.filter(free);
    if (freeWorkers.length === 0) return { kind: 'wait' };
    const scores = new Map(workers.map((w) => [w.id, extents.length ? cachedBytes(w, extents) : 0]));
    const score = (w: WorkerView) => scores.get(w.id)!;
    const best = Math.max(...workers.map(score));
    const place = (w: WorkerView, reason: string): Placement => ({
      kind: 'place',
      workerId: w.id,
      reason,
      candidates: candidatesOf(workers, scores),
      readBytes: totalBytes(extents),
    });
    if (best === 0) {
      const w = [...freeWorkers].sort(byLoad)[0]!;
      return place(w, extents.length ? 'no worker caches any of its reads: least-loaded worker' : 'the call declares no reads: least-loaded worker');
    }
    const top = freeWorkers.filter((w) => score(w) === best).sort(byLoad);
    if (top.length) {
      const tied = workers.filter((w) => score(w) === best).length > 1;
      return place(top[0]!, tied ? 'most cached bytes (tie broken by load)' : 'most cached bytes');
    }
    if (waitedMs < this.localityWaitMs) return { kind: 'wait', retryInMs: this.localityWaitMs - waitedMs };
    const fallback = [...freeWorkers].sort((a, b) => score(b) - score(a) || byLoad(a, b))[0]!;
    return place(
      fallback,
      `the workers caching most of its reads stayed busy for ${this.localityWaitMs} ms: most cached bytes among free workers`,
    );
  }
}

class RoundRobin implements PlacementPolicy {
  readonly name = 'round-robin' as const;
  private last = '';

  place({ extents, workers }: PlacementInput): Placement {
    const sorted = [...workers].sort((a, b) => (a.id < b.id ? -1 : 1));
    const start = sorted.findIndex((w) => w.id > this.last);
    for (let i = 0; i < sorted.length; i++) {
      const w = sorted[(Math.max(start, 0) + i) % sorted.length]!;
      if (!free(w)) continue;
      this.last = w.id;
      const scores = new Map(workers.map((x) => [x.id, cachedBytes(x, extents)]));
      return { kind: 'place', workerId: w.id, reason: 'round-robin: next free worker in turn', candidates: candidatesOf(workers, scores), readBytes: totalBytes(extents) };
    }
    return { kind: 'wait' };
  }
}

class RandomPlacement implements PlacementPolicy {
  readonly name = 'random' as const;

  place({ extents, workers }: PlacementInput): Placement {
    const freeWorkers = workers.filter(free);
    if (!freeWorkers.length) return { kind: 'wait' };
    const w = freeWorkers[Math.floor(Math.random() * freeWorkers.length)]!;
    const scores = new Map(workers.map((x) => [x.id, cachedBytes(x, extents)]));
    return { kind: 'place', workerId: w.id, reason: 'random: a free worker at random', candidates: candidatesOf(workers, scores), readBytes: totalBytes(extents) };
  }
}
