/**
 * The dashboard's contract: what `stowage serve` hands the dashboard to read
 * (DashboardSources, one optional source per hosted service, assembled in
 * src/server/ so that the dashboard imports no service), and the JSON its
 * endpoints answer (the page in page/ keeps its own copy of these shapes).
 *
 * Invariants: every source only reads; nothing the dashboard does changes a
 * volume, dict, queue or call. A source of a service the server does not
 * host is undefined, and its endpoints answer `{"hosted": false}`.
 * Tested by test/dashboard-api.test.ts.
 */
import type { Readable } from 'node:stream';

export interface ServerSummary {
  address: string;
  version: string;
  services: string[];
  store: string;
  state: string;
  startedAtMs: number;
}

export interface VolumeRow {
  name: string;
  ephemeral: boolean;
  createdAtMs: number;
  latestVersion: number;
  versionCount: number;
  fileCount: number;
  /** Bytes of the latest version. */
  totalBytes: number;
  /** Sum of the sizes of the versions held (volume-server/usage.ts); null until computed. */
  logicalBytes: number | null;
  /** Bytes of the distinct extents those versions use; null until computed (or over the walk's bound). */
  storedBytes: number | null;
  /** logicalBytes ÷ storedBytes; null while either is unknown or storedBytes is 0. */
  dedupRatio: number | null;
}

export interface VersionRow {
  version: number;
  createdAtMs: number;
  fileCount: number;
  totalBytes: number;
}

export interface FileRow {
  name: string;
  /** Relative to the volume root, with a leading '/'. */
  path: string;
  type: 'file' | 'dir' | 'symlink';
  size: number;
  mtimeMs: number;
}

export interface DictRow {
  name: string;
  length: number;
}

export interface QueueRow {
  name: string;
  /** Items in every partition (leased and dead letters included). */
  length: number;
  partitions: { name: string; length: number }[];
  deadLetters: number;
}

export interface WorkerRow {
  id: string;
  host: string;
  slots: number;
  running: number;
  cachedChunks: number;
  /** Bytes of the chunks the worker's cache holds, as far as the index knows their sizes. */
  cachedBytes: number;
  registeredAtMs: number;
}

export interface CallRow {
  id: string;
  function: string;
  state: string;
  attempt: number;
  worker: string;
  createdAtMs: number;
  finishedAtMs: number;
  durationMs: number | null;
  /** Why the call went where it did, as `stowage bridge explain` says it. */
  placementReason: string;
}

/** A live mount's latest report (volume-server/mount-reports.ts keeps them). */
export interface MountRow {
  id: string;
  /** "mount", or "worker <id>" for a worker's mounts. */
  client: string;
  host: string;
  volume: string;
  version: number;
  hits: number;
  misses: number;
  hitRatio: number | null;
  bytesFetched: number;
  bytesRead: number;
  readBytesPerSec: number;
  cacheBytes: number;
  lastReportMs: number;
}

/** A file's bytes, checked against their hashes as they stream. */
export interface FileDownload {
  size: number;
  version: number;
  body: Readable;
}

export interface VolumeSource {
  list(): Omit<VolumeRow, 'logicalBytes' | 'storedBytes' | 'dedupRatio'>[];
  /** See volume-server/usage.ts; undefined when the volume is too large to walk. */
  usage(name: string): Promise<{ logicalBytes: number; storedBytes: number } | undefined>;
  versions(name: string): VersionRow[];
  /** One directory of a version (0: the latest), at most `limit` entries. */
  listDir(name: string, version: number, path: string, limit: number): Promise<{ version: number; entries: FileRow[]; truncated: boolean }>;
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
  bridge?: { workers(): WorkerRow[]; calls(limit: number): CallRow[] };
  mounts: { list(): MountRow[] };
  metrics?: MetricsSource;
}
