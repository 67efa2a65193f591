/**
 * MountReports: the latest report of each live mount (proto MountReport),
 * for the dashboard, and the growth of their counters, for /metrics.
 *
 * - A mount reports every few seconds (fuse-mount/mount-report.ts) the
 *   counters of its chunk cache since it started; the server keeps the latest
 *   report of each mount id and forgets a mount that has not reported for
 *   `expireMs` (a minute), so a mount that died leaves within a minute.
 * - Read throughput is the growth of `bytes_read` between a mount's last two
 *   reports over the time between them (0 before the second report).
 * - What each report adds to the counters (its growth over the mount's
 *   previous report) goes to `onGrowth`, so that the server's counters only
 *   ever grow, whichever mounts come and go. Counters lower than the previous
 *   report's (never sent by a mount, which counts from its start) are taken
 *   as a fresh start: their growth is the whole value.
 * - Bounded: at most `maxMounts` mounts are kept; a report of a new mount
 *   beyond that replaces the one that reported least recently.
 */
import { InvalidArgumentError } from '../common/errors.js';
import { quote } from '../common/quote.js';
import type { MountReport } from '../gen/stowage/v1/volume.js';

export interface MountGrowth {
  hits: number;
  misses: number;
  bytesFetched: number;
  bytesRead: number;
}

export interface MountRow {
  id: string;
  client: string;
  host: string;
  volume: string;
  version: number;
  hits: number;
  misses: number;
  /** hits ÷ (hits + misses); null before the first cache read. */
  hitRatio: number | null;
  bytesFetched: number;
  bytesRead: number;
  readBytesPerSec: number;
  cacheBytes: number;
  lastReportMs: number;
}

interface Held {
  report: MountReport;
  atMs: number;
  readBytesPerSec: number;
}

const MAX_FIELD = 256;

export class MountReports {
  private readonly mounts = new Map<string, Held>();

  constructor(
    private readonly onGrowth: (g: MountGrowth) => void = () => undefined,
    private readonly expireMs = 60_000,
    private readonly maxMounts = 10_000,
  ) {}

  /** Records a mount's report (INVALID_ARGUMENT for an id or name that is empty or too long). */
  report(r: MountReport, now = Date.now()): void {
    for (const [field, value, required] of [
      ['mount_id', r.mountId, true],
      ['client', r.client, true],
      ['host', r.host, false],
      ['volume', r.volume, true],
    ] as const) {
      if ((required && !value) || value.length > MAX_FIELD || value.includes('\0')) {
        throw new InvalidArgumentError(`mount report: ${field} ${quote(value.slice(0, 64))} must be 1 to ${MAX_FIELD} characters without NUL`);
      }
    }
    const before = this.mounts.get(r.mountId);
    const prev = before?.report;
    const grew = (now: number, then: number | undefined) => (then === undefined || now < then ? now : now - then);
    this.onGrowth({
      hits: grew(r.cacheHits, prev?.cacheHits),
      misses: grew(r.cacheMisses, prev?.cacheMisses),
      bytesFetched: grew(r.bytesFetched, prev?.bytesFetched),
      bytesRead: grew(r.bytesRead, prev?.bytesRead),
    });
    const seconds = before ? (now - before.atMs) / 1000 : 0;
    const readBytesPerSec = prev && seconds > 0 && r.bytesRead >= prev.bytesRead ? (r.bytesRead - prev.bytesRead) / seconds : 0;
    // Re-inserted so that the map's order is the order of last reports.
    this.mounts.delete(r.mountId);
    if (this.mounts.size >= this.maxMounts) this.mounts.delete(this.mounts.keys().next().value!);
    this.mounts.set(r.mountId, { report: r, atMs: now, readBytesPerSec });
  }

  /** The live mounts, most recently reported first. */
  list(now = Date.now()): MountRow[] {
    const rows: MountRow[] = [];
    for (const [id, h] of this.mounts) {
      if (now - h.atMs > this.expireMs) {
        this.mounts.delete(id);
        continue;
      }
      const r = h.report;
      const reads = r.cacheHits + r.cacheMisses;
      rows.push({
        id,
        client: r.client,
        host: r.host,
        volume: r.volume,
        version: r.version,
        hits: r.cacheHits,
        misses: r.cacheMisses,
        hitRatio: reads > 0 ? r.cacheHits / reads : null,
        bytesFetched: r.bytesFetched,
        bytesRead: r.bytesRead,
        readBytesPerSec: h.readBytesPerSec,
        cacheBytes: r.cacheBytes,
        lastReportMs: h.atMs,
      });
    }
    return rows.reverse();
  }
}
