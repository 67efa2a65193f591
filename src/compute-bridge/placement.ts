/**
 * Placement: which worker runs a queued call. Three policies, chosen per
 * bridge (`stowage serve --placement`), so that a benchmark can compare them:
 *
 * - `ours`: the score of a worker is the bytes of the call's reads its cache
 *   holds. A call goes to a free worker among those with the highest score,
 *   fewer running calls first; a call whose data is cached nowhere goes to
 *   the least-loaded free worker. When every best-scoring worker is busy the
 *   call waits and the queue is scanned on, so a worker that frees a slot
 *   takes the next call whose data it holds, even from far down the queue
 *   (delay scheduling, as in Spark). Only a worker that has had a free slot
 *   for `localityWaitMs` without a call of its own takes a waiting call that
 *   others hold more of (the one it holds most of), so a busy queue never
 *   leaves a worker idle for long, and a short wait does not scatter shards.
 * - `round-robin`: the next free worker in turn (by worker id), as a load
 *   balancer in front of identical containers would do.
 * - `random`: a free worker at random.
 *
 * Each policy places a call whose function names an image (`containers`) only
 * on a worker that runs functions in containers.
 *
 * Every decision records the candidates and their scores, for
 * `stowage bridge explain`.
 */
import type { Candidate } from '../gen/stowage/v1/bridge.js';
import type { ExtentRef, PlacementPolicyName } from './types.js';

export interface WorkerView {
  id: string;
  slots: number;
  /** It runs functions in containers (--runtime docker). */
  containers: boolean;
  running: number;
  chunks: ReadonlySet<string>;
  /** Since when the worker has had a free slot without being given a call. */
  freeSinceMs: number;
}

export interface QueuedCall {
  id: string;
  /** Distinct extents the call reads. */
  extents: readonly ExtentRef[];
  /** Only a worker that runs functions in containers may take it (its function names an image). */
  containers?: boolean;
}

/** Whether `w` may run `call` at all. */
const fits = (call: QueuedCall, w: WorkerView): boolean => !call.containers || w.containers;

export interface Placed {
  callId: string;
  workerId: string;
  reason: string;
  candidates: Candidate[];
  readBytes: number;
}

export interface PlacementRound {
  placed: Placed[];
  /** Run placement again after this long (a locality wait ends), unless something changes first. */
  wakeInMs?: number;
}

export interface PlacementPolicy {
  readonly name: PlacementPolicyName;
  /** Places what can be placed now of `calls` (queue order); the workers' running counts are as before this round. */
  place(calls: readonly QueuedCall[], workers: readonly WorkerView[], nowMs: number): PlacementRound;
}

export function createPlacementPolicy(name: PlacementPolicyName, opts: { localityWaitMs?: number } = {}): PlacementPolicy {
  if (name === 'round-robin') return new RoundRobin();
  if (name === 'random') return new RandomPlacement();
  return new CacheAware(opts.localityWaitMs ?? DEFAULT_LOCALITY_WAIT_MS);
}

export const DEFAULT_LOCALITY_WAIT_MS = 2000;

/** Running counts as a round places calls. */
class Round {
  readonly running: Map<string, number>;
  readonly placed: Placed[] = [];
  constructor(readonly workers: readonly WorkerView[]) {
    this.running = new Map(workers.map((w) => [w.id, w.running]));
  }
  free(w: WorkerView): boolean {
    return this.running.get(w.id)! < w.slots;
  }
  anyFree(): boolean {
    return this.workers.some((w) => this.free(w));
  }
  load(w: WorkerView): number {
    return this.running.get(w.id)! / Math.max(w.slots, 1);
  }
  byLoad = (a: WorkerView, b: WorkerView): number =>
    this.load(a) - this.load(b) || this.running.get(a.id)! - this.running.get(b.id)! || (a.id < b.id ? -1 : 1);
  place(call: QueuedCall, w: WorkerView, reason: string, scores: (w: WorkerView) => number): void {
    this.placed.push({
      callId: call.id,
      workerId: w.id,
      reason,
      candidates: this.workers.map((x) => ({ workerId: x.id, cachedBytes: scores(x), running: this.running.get(x.id)!, slots: x.slots })),
      readBytes: call.extents.reduce((n, e) => n + e.length, 0),
    });
    this.running.set(w.id, this.running.get(w.id)! + 1);
  }
}

function cachedBytes(w: WorkerView, extents: readonly ExtentRef[]): number {
  let n = 0;
  for (const e of extents) if (w.chunks.has(e.hash)) n += e.length;
  return n;
}

const scorer = (extents: readonly ExtentRef[]) => {
  const memo = new Map<string, number>();
  return (w: WorkerView) => {
    let s = memo.get(w.id);
    if (s === undefined) memo.set(w.id, (s = cachedBytes(w, extents)));
    return s;
  };
};

class CacheAware implements PlacementPolicy {
  readonly name = 'ours' as const;
  constructor(private readonly localityWaitMs: number) {}

  place(calls: readonly QueuedCall[], workers: readonly WorkerView[], nowMs: number): PlacementRound {
    const round = new Round(workers);
    const waiting: { call: QueuedCall; score: (w: WorkerView) => number }[] = [];
    for (const call of calls) {
      if (!round.anyFree()) break;
      const score = scorer(call.extents);
      const able = workers.filter((w) => fits(call, w));
      const best = Math.max(0, ...able.map(score));
      const free = able.filter((w) => round.free(w));
      if (best === 0 && !free.length) {
        waiting.push({ call, score });
        continue;
      }
      if (best === 0) {
        const w = [...free].sort(round.byLoad)[0]!;
        round.place(call, w, call.extents.length ? 'no worker caches any of its reads: least-loaded worker' : 'the call declares no reads: least-loaded worker', score);
        continue;
      }
      const top = free.filter((w) => score(w) === best).sort(round.byLoad);
      if (top.length) {
        const tied = able.filter((w) => score(w) === best).length > 1;
        round.place(call, top[0]!, tied ? 'most cached bytes (tie broken by load)' : 'most cached bytes', score);
      } else {
        waiting.push({ call, score });
      }
    }
    // Workers idle past the locality wait take the waiting call they hold most of.
    let wakeInMs: number | undefined;
    for (const w of [...workers].sort((a, b) => a.freeSinceMs - b.freeSinceMs)) {
      while (round.free(w)) {
        const able = waiting.filter((x) => fits(x.call, w));
        if (!able.length) break;
        const idleMs = nowMs - w.freeSinceMs;
        if (idleMs < this.localityWaitMs) {
          wakeInMs = Math.min(wakeInMs ?? Infinity, this.localityWaitMs - idleMs);
          break;
        }
        let pick = able[0]!;
        for (const x of able) if (x.score(w) > pick.score(w)) pick = x;
        waiting.splice(waiting.indexOf(pick), 1);
        const { call, score } = pick;
        round.place(call, w, `the workers caching most of its reads were busy and ${w.id} had been idle for ${idleMs} ms (locality wait ${this.localityWaitMs} ms)`, score);
      }
    }
    return { placed: round.placed, wakeInMs };
  }
}

class RoundRobin implements PlacementPolicy {
  readonly name = 'round-robin' as const;
  private last = '';

  place(calls: readonly QueuedCall[], workers: readonly WorkerView[]): PlacementRound {
    const round = new Round(workers);
    const sorted = [...workers].sort((a, b) => (a.id < b.id ? -1 : 1));
    for (const call of calls) {
      const start = Math.max(0, sorted.findIndex((w) => w.id > this.last));
      const w = sorted.map((_, i) => sorted[(start + i) % sorted.length]!).find((x) => round.free(x) && fits(call, x));
      if (!w) continue;
      this.last = w.id;
      round.place(call, w, 'round-robin: next free worker in turn', scorer(call.extents));
    }
    return { placed: round.placed };
  }
}

class RandomPlacement implements PlacementPolicy {
  readonly name = 'random' as const;

  place(calls: readonly QueuedCall[], workers: readonly WorkerView[]): PlacementRound {
    const round = new Round(workers);
    for (const call of calls) {
      const free = workers.filter((w) => round.free(w) && fits(call, w));
      if (!free.length) continue;
      round.place(call, free[Math.floor(Math.random() * free.length)]!, 'random: a free worker at random', scorer(call.extents));
    }
    return { placed: round.placed };
  }
}
