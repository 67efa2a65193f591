/**
 * A mount's reports to the server (proto MountReport): every `everyMs` its
 * chunk cache's counters, the bytes it fetched and the bytes its readers
 * read, so that the dashboard shows each mount and /metrics counts them.
 * Reports are best effort: one that fails is logged once (until one succeeds
 * again) and never touches reads. The timer does not keep the process alive.
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Connection } from '../client/connection.js';
import { messageOf } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { MountReport } from '../gen/stowage/v1/volume.js';
import type { VolumeFilesystem } from './filesystem.js';

export const DEFAULT_REPORT_MS = 5000;

/** What a mount of `fs` reports now. */
export function mountReport(fs: VolumeFilesystem, mountId: string, client: string): MountReport {
  const cache = fs.extents.cache.stats();
  return {
    mountId,
    client,
    host: hostname(),
    volume: fs.volume,
    version: fs.version,
    cacheHits: cache.hits,
    cacheMisses: cache.misses,
    bytesFetched: fs.extents.bytesFetched,
    bytesRead: fs.bytesRead,
    cacheBytes: cache.bytes,
  };
}

/** Reports `fs` now and every `everyMs` (0: never) until stop(). */
export function startMountReports(fs: VolumeFilesystem, conn: Connection, client: string, log: Logger, everyMs = DEFAULT_REPORT_MS): { stop(): void } {
  if (everyMs <= 0) return { stop: () => undefined };
  const id = randomUUID();
  let failing = false;
  let inFlight = false;
  const send = () => {
    if (inFlight) return;
    inFlight = true;
    conn.unary(conn.volumes.reportMount.bind(conn.volumes), mountReport(fs, id, client), { timeoutMs: everyMs }).then(
      () => {
        inFlight = false;
        failing = false;
      },
      (err: unknown) => {
        inFlight = false;
        if (failing) return;
        failing = true;
        log.warn({ err: messageOf(err) }, 'cannot report this mount to the server (reads go on; the dashboard will not show it meanwhile)');
      },
    );
  };
  send();
  const timer = setInterval(send, everyMs);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
