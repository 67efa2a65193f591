/**
 * The dashboard's contract: what `stowage serve` hands the dashboard to read
 * (DashboardSources, one optional source per hosted service, assembled in
 * src/server/ so that the dashboard imports no service). The JSON its
 * endpoints answer is in api-types.ts, shared with the page.
 *
 * Invariants: every source only reads; nothing the dashboard does changes a
 * volume, dict, queue or call. A source of a service the server does not
 * host is undefined, and its endpoints answer `{"hosted": false}`.
 * Tested by test/dashboard-api.test.ts.
 */
import type { Readable } from 'node:stream';
import type {
  CallSummary,
  DictSummary,
  DirEntry,
  MountSummary,
  QueueSummary,
  ServerSummary,
  VersionSummary,
  VolumeSummary,
  WorkerSummary,
} from './api-types.js';

/** What a dict source lists: the API adds the rates. */
export type DictRow = Omit<DictSummary, 'opsPerSec' | 'history'>;
/** What a queue source lists (length: items in every partition, leased and dead letters included): the API adds the rates. */
export type QueueRow = Omit<QueueSummary, 'opsPerSec' | 'history'>;

/** A file's bytes, checked against their hashes as they stream. */
export interface FileDownload {
  size: number;
  version: number;
  body: Readable;
}

export interface VolumeSource {
  list(): Promise<Omit<VolumeSummary, 'logicalBytes' | 'storedBytes' | 'dedupRatio'>[]>;
  /** See volume-server/usage.ts; undefined when the volume is too large to walk. */
  usage(name: string): Promise<{ logicalBytes: number; storedBytes: number } | undefined>;
  versions(name: string): Promise<VersionSummary[]>;
  /** One directory of a version (0: the latest), at most `limit` entries. */
  listDir(name: string, version: number, path: string, limit: number): Promise<{ version: number; entries: DirEntry[]; truncated: boolean }>;
  /** NOT_FOUND when there is no such file. */
  stat(name: string, version: number, path: string): Promise<{ version: number; size: number }>;
  open(name: string, version: number, path: string): Promise<FileDownload>;
}

/** What /metrics and the rates over time read (common/metrics.ts implements it). */
export interface MetricsSource {
  render(): Promise<string>;
  readonly contentType: string;
  /** Operations so far, by `dict:NAME` / `queue:NAME`. */
  opCounts(): ReadonlyMap<string, number>;
  /** Calls placed so far, and those placed on a worker caching some of their bytes. */
  placementCounts(): { hits: number; total: number };
}

export interface DashboardSources {
  server: ServerSummary;
  volumes?: VolumeSource;
  dicts?: { list(): Promise<DictRow[]> };
  queues?: { list(): Promise<QueueRow[]> };
  bridge?: { workers(): WorkerSummary[]; calls(limit: number): CallSummary[] };
  mounts: { list(): MountSummary[] };
  metrics?: MetricsSource;
}
