/**
 * Placement policies on their own (no processes): scores by cached bytes,
 * ties by load, least-loaded when nothing is cached, delay scheduling with a
 * per-worker locality wait, round-robin and random over free workers only.
 */
import { describe, expect, it } from 'vitest';
import { createPlacementPolicy, type QueuedCall, type WorkerView } from '../src/compute-bridge/placement.js';

const h = (n: number) => n.toString(16).padStart(64, '0');
const worker = (id: string, chunks: number[], o: Partial<WorkerView> = {}): WorkerView => ({
  id,
  slots: 1,
  containers: false,
  running: 0,
  chunks: new Set(chunks.map(h)),
  freeSinceMs: 0,
  ...o,
});
const call = (id: string, chunks: number[]): QueuedCall => ({ id, extents: chunks.map((c) => ({ hash: h(c), length: 100 })) });

describe('placement', () => {
  it('a call whose function names an image goes only to a worker that runs containers, under every policy; other calls go anywhere', () => {
    for (const name of ['ours', 'round-robin', 'random'] as const) {
      const p = createPlacementPolicy(name, { localityWaitMs: 0 });
      // The process worker caches the call's data and is free: it still may not take the image call.
      const ws = [worker('proc', [1], { freeSinceMs: 0 }), worker('dock', [], { containers: true, running: 1, freeSinceMs: 0 })];
      const busy = p.place([{ ...call('img', [1]), containers: true }, call('plain', [1])], ws, 10_000);
      expect(busy.placed.map((d) => [d.callId, d.workerId]), name).toEqual([['plain', 'proc']]);
      const free = p.place([{ ...call('img', [1]), containers: true }], [ws[0]!, { ...ws[1]!, running: 0 }], 10_000);
      expect(free.placed.map((d) => [d.callId, d.workerId]), name).toEqual([['img', 'dock']]);
    }
  });

  it('ours: most cached bytes wins; ties go to the less loaded; nothing cached goes to the least loaded', () => {
    const p = createPlacementPolicy('ours');
    const ws = [worker('a', [1]), worker('b', [1, 2], { slots: 2, running: 1 }), worker('c', [])];
    const r = p.place([call('x', [1, 2]), call('y', [1]), call('z', [9])], ws, 1000);
    expect(r.placed.map((d) => [d.callId, d.workerId, d.reason])).toEqual([
      ['x', 'b', 'most cached bytes'],
      ['y', 'a', 'most cached bytes (tie broken by load)'],
      ['z', 'c', 'no worker caches any of its reads: least-loaded worker'],
    ]);
    expect(r.placed[0]!.candidates).toEqual([
      { workerId: 'a', cachedBytes: 100, running: 0, slots: 1 },
      { workerId: 'b', cachedBytes: 200, running: 1, slots: 2 },
      { workerId: 'c', cachedBytes: 0, running: 0, slots: 1 },
    ]);
  });

  it('ours: a call waits for the busy worker holding its data while later calls start; an idle worker takes it after the locality wait', () => {
    const p = createPlacementPolicy('ours', { localityWaitMs: 2000 });
    const ws = [worker('a', [1], { running: 1 }), worker('b', [2], { freeSinceMs: 9000 })];
    const first = p.place([call('x', [1]), call('y', [2])], ws, 10_000);
    expect(first.placed.map((d) => [d.callId, d.workerId])).toEqual([['y', 'b']]);
    const ws2 = [worker('a', [1], { running: 1 }), worker('b', [2], { freeSinceMs: 9000 })];
    const waiting = p.place([call('x', [1])], ws2, 10_000);
    expect(waiting.placed).toEqual([]);
    expect(waiting.wakeInMs).toBe(1000);
    const later = p.place([call('x', [1])], ws2, 11_000);
    expect(later.placed.map((d) => [d.callId, d.workerId])).toEqual([['x', 'b']]);
    expect(later.placed[0]!.reason).toContain('b had been idle for 2000 ms');
  });

  it('round-robin and random use free workers only, whatever they cache', () => {
    const rr = createPlacementPolicy('round-robin');
    const ws = [worker('a', [1]), worker('b', [], { running: 1 }), worker('c', [])];
    expect(rr.place([call('x', [1]), call('y', [1]), call('z', [1])], ws, 0).placed.map((d) => d.workerId)).toEqual(['a', 'c']);
    expect(rr.place([call('x', [1])], ws, 0).placed.map((d) => d.workerId)).toEqual(['a']);
    const rnd = createPlacementPolicy('random');
    for (let i = 0; i < 20; i++) expect(rnd.place([call('x', [1])], ws, 0).placed[0]!.workerId).not.toBe('b');
  });
});
