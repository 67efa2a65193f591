/**
 * MountReports (volume-server/mount-reports.ts): what the server keeps of
 * mounts' reports, the growth it hands to the counters, its bounds, and the
 * ReportMount call's refusal of bad reports.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MountReport } from '../src/gen/stowage/v1/volume.js';
import { MountReports, type MountGrowth } from '../src/volume-server/mount-reports.js';
import { startStowage, type Stowage } from './support/processes.js';

const report = (over: Partial<MountReport> = {}): MountReport => ({
  mountId: 'm1',
  client: 'mount',
  host: 'h',
  volume: 'v',
  version: 1,
  cacheHits: 0,
  cacheMisses: 0,
  bytesFetched: 0,
  bytesRead: 0,
  cacheBytes: 0,
  ...over,
});

describe('MountReports', () => {
  it('keeps the latest report per mount, with the read rate between the last two', () => {
    const r = new MountReports();
    r.report(report({ cacheHits: 1, cacheMisses: 1, bytesRead: 1000 }), 10_000);
    expect(r.list(10_000)[0]).toMatchObject({ id: 'm1', hits: 1, misses: 1, hitRatio: 0.5, readBytesPerSec: 0 });
    r.report(report({ cacheHits: 7, cacheMisses: 1, bytesRead: 3000 }), 12_000);
    expect(r.list(12_000)).toEqual([expect.objectContaining({ hits: 7, hitRatio: 7 / 8, bytesRead: 3000, readBytesPerSec: 1000, lastReportMs: 12_000 })]);
    expect(new MountReports().list()).toEqual([]);
  });

  it('hands on only the growth of each mount\'s counters, and a restart\'s whole value', () => {
    const grown: MountGrowth[] = [];
    const r = new MountReports((g) => grown.push(g));
    r.report(report({ cacheHits: 5, bytesFetched: 100 }));
    r.report(report({ cacheHits: 8, bytesFetched: 100 }));
    r.report(report({ mountId: 'm2', cacheHits: 2 }));
    // Lower than before: counted from a fresh start.
    r.report(report({ cacheHits: 1 }));
    expect(grown.map((g) => g.hits)).toEqual([5, 3, 2, 1]);
    expect(grown.map((g) => g.bytesFetched)).toEqual([100, 0, 0, 0]);
  });

  it('forgets a mount that stopped reporting, and keeps at most maxMounts', () => {
    const r = new MountReports(undefined, 60_000, 2);
    r.report(report({ mountId: 'a' }), 0);
    r.report(report({ mountId: 'b' }), 1000);
    r.report(report({ mountId: 'c' }), 2000);
    expect(r.list(2000).map((m) => m.id)).toEqual(['c', 'b']);
    expect(r.list(61_500).map((m) => m.id)).toEqual(['c']);
    expect(r.list(70_000)).toEqual([]);
  });

  it('refuses empty, overlong or NUL-holding ids and names', () => {
    const r = new MountReports();
    for (const bad of [{ mountId: '' }, { client: '' }, { volume: '' }, { host: 'x'.repeat(300) }, { client: 'a\0b' }]) {
      expect(() => r.report(report(bad))).toThrow(/mount report: \w+ .* must be 1 to 256 characters without NUL/);
    }
    expect(r.list()).toEqual([]);
  });
});

describe('ReportMount over gRPC', () => {
  let stowage: Stowage;
  beforeAll(async () => {
    stowage = await startStowage();
  });
  afterAll(async () => stowage?.stop());

  it('records a good report and refuses a bad one with INVALID_ARGUMENT', async () => {
    const c = stowage.connection;
    await c.unary(c.volumes.reportMount.bind(c.volumes), report({ mountId: 'grpc-1', cacheHits: 3 }));
    expect(stowage.server.mounts.list()).toEqual([expect.objectContaining({ id: 'grpc-1', hits: 3 })]);
    await expect(c.unary(c.volumes.reportMount.bind(c.volumes), report({ mountId: '' }))).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(c.unary(c.volumes.reportMount.bind(c.volumes), report({ volume: 'v'.repeat(70_000) }))).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });
});
