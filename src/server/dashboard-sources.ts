/**
 * What the dashboard reads (dashboard/types.ts DashboardSources), made from
 * the services this server hosts. Only reads: nothing here changes a volume,
 * dict, queue or call. Lists are bounded (MAX_LISTED) so that a server with
 * very many dicts or queues answers the page in bounded time.
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import type { BridgeView } from '../compute-bridge/service.js';
import { callStateName } from '../compute-bridge/types.js';
import { IntegrityError, InvalidArgumentError } from '../common/errors.js';
import type { DirEntry, ServerSummary } from '../dashboard/api-types.js';
import type { DashboardSources, MetricsSource, VolumeSource } from '../dashboard/types.js';
import type { DictBackend } from '../dict/types.js';
import type { CallInfo } from '../gen/stowage/v1/bridge.js';
import { FileType } from '../gen/stowage/v1/volume.js';
import { DEAD_LETTER_PARTITION, type QueueBackend } from '../queue/types.js';
import type { VolumeCatalog } from '../volume-server/catalog.js';
import type { MountReports } from '../volume-server/mount-reports.js';
import { volumeUsage } from '../volume-server/usage.js';

const MAX_LISTED = 500;

export interface HostedServices {
  server: ServerSummary;
  catalog?: VolumeCatalog;
  dicts?: DictBackend;
  queues?: QueueBackend;
  /** The active bridge's view (empty on a server of a set that does not run it). */
  bridge?: BridgeView;
  mounts: MountReports;
  metrics?: MetricsSource;
}

export function dashboardSources(h: HostedServices): DashboardSources {
  return {
    server: h.server,
    volumes: h.catalog && volumeSource(h.catalog),
    dicts: h.dicts && {
      list: async () => {
        const dicts = h.dicts!;
        const infos = (await dicts.list()).slice(0, MAX_LISTED);
        return Promise.all(infos.map(async (d) => ({ name: d.name, length: await dicts.len(d.name).catch(() => 0) })));
      },
    },
    queues: h.queues && {
      list: async () => {
        const queues = h.queues!;
        const infos = (await queues.list()).slice(0, MAX_LISTED);
        return Promise.all(
          infos.map(async (q) => {
            // Dropped between list and read: shown empty until the next poll drops it.
            const parts = await queues.partitions(q.name).catch(() => []);
            return {
              name: q.name,
              length: parts.reduce((n, p) => n + p.length, 0),
              partitions: parts.filter((p) => p.partition !== DEAD_LETTER_PARTITION).map((p) => ({ name: p.partition, length: p.length })),
              deadLetters: parts.find((p) => p.partition === DEAD_LETTER_PARTITION)?.length ?? 0,
            };
          }),
        );
      },
    },
    bridge: h.bridge && bridgeSource(h.bridge, h.catalog),
    mounts: h.mounts,
    metrics: h.metrics,
  };
}

function volumeSource(catalog: VolumeCatalog): VolumeSource {
  return {
    list: async () =>
      (await catalog.listVolumes(true)).map((v) => ({
        name: v.name,
        ephemeral: v.ephemeral,
        createdAtMs: v.createdAtMs,
        latestVersion: v.latestVersion,
        versionCount: catalog.index.listVersions(v.id).length,
        fileCount: v.fileCount,
        totalBytes: v.totalBytes,
      })),
    usage: (name) => volumeUsage(catalog, name),
    versions: async (name) =>
      (await catalog.listVersions(name)).map((v) => ({ version: v.version, createdAtMs: v.createdAtMs, fileCount: v.fileCount, totalBytes: v.totalBytes })),
    async listDir(name, version, path, limit) {
      const entries: DirEntry[] = [];
      let truncated = false;
      let at = 0;
      for await (const b of catalog.listFiles(name, path, false, version, limit, '', false)) {
        at = b.version;
        for (const e of b.entries) {
          entries.push({
            name: e.path.split('/').at(-1)!,
            path: `/${e.path}`,
            type: e.type === FileType.FILE_TYPE_DIRECTORY ? 'dir' : 'file',
            size: e.size,
            mtimeMs: e.mtimeMs,
          });
        }
        if (b.nextPageToken) truncated = true;
        break;
      }
      return { version: at, entries, truncated };
    },
    async stat(name, version, path) {
      const s = await catalog.stat(name, path, version);
      if (s.entry.type === FileType.FILE_TYPE_DIRECTORY) throw new InvalidArgumentError(`/${s.entry.path} is a directory: only files download`);
      return { version: s.version, size: s.entry.size };
    },
    async open(name, version, path) {
      const f = await catalog.getFile(name, path, version, false);
      const { extents } = f.entry;
      async function* bytes(): AsyncGenerator<Buffer> {
        for (const e of extents) {
          const data = await catalog.blobs.readBlob(e.blob, e.offset, e.length);
          // Reads verify every chunk's hash: a bad chunk is never sent as data.
          if (data.length !== e.length || createHash('sha256').update(data).digest('hex') !== e.hash) {
            throw new IntegrityError(`extent ${e.hash} of /${f.entry.path} does not match its hash`);
          }
          yield data;
        }
      }
      return { size: f.entry.size, version: f.version, body: Readable.from(bytes(), { objectMode: false }) };
    },
  };
}

function bridgeSource(bridge: BridgeView, catalog: VolumeCatalog | undefined): NonNullable<DashboardSources['bridge']> {
  const sizeOf = (hash: string) => catalog?.index.blobSize(hash) ?? catalog?.index.findContent(hash)?.length ?? 0;
  return {
    workers: () =>
      bridge.listWorkers().map((w) => {
        let cachedBytes = 0;
        for (const h of bridge.cachedChunksOf(w.workerId) ?? []) cachedBytes += sizeOf(h);
        return { id: w.workerId, host: w.host, slots: w.slots, running: w.running, cachedChunks: w.cachedChunks, cachedBytes, registeredAtMs: w.registeredAtMs };
      }),
    calls: (limit) => bridge.listCalls('', limit).map(callRow),
  };
}

function callRow(c: CallInfo, now = Date.now()): ReturnType<NonNullable<DashboardSources['bridge']>['calls']>[number] {
  const placed = c.decisions.at(-1);
  const started = placed?.atMs;
  const finished = c.finishedAtMs || undefined;
  return {
    id: c.callId,
    function: `${c.function?.function ?? '?'} (${c.function?.module ?? '?'})`,
    state: callStateName(c.state),
    attempt: c.attempt,
    worker: c.workerId,
    createdAtMs: c.createdAtMs,
    finishedAtMs: c.finishedAtMs,
    durationMs: started === undefined ? null : (finished ?? now) - started,
    placementReason: placed ? `${placed.policy}: ${placed.reason}` : 'not placed yet',
  };
}
