/**
 * The JSON the dashboard's HTTP API answers (http-server.ts, api.ts): one
 * definition for the server that builds it and the page (page/) that reads
 * it. This file imports nothing, so that the browser bundle can take it
 * (scripts/check-imports.mjs checks both). Times are milliseconds since the
 * epoch; sizes are bytes.
 */

/** What an endpoint of a service this server does not host answers (`stowage serve --only`). */
export interface NotHosted {
  hosted: false;
}

export interface ServerSummary {
  address: string;
  version: string;
  services: string[];
  store: string;
  state: string;
  startedAtMs: number;
}

export interface WhoAmI {
  server: ServerSummary;
}

export interface VolumeSummary {
  name: string;
  ephemeral: boolean;
  createdAtMs: number;
  latestVersion: number;
  versionCount: number;
  fileCount: number;
  /** Bytes of the latest version's files. */
  totalBytes: number;
  /** Bytes of the files of every retained version, added up; null while not yet computed. */
  logicalBytes: number | null;
  /** Distinct chunk bytes the retained versions reference; null while not yet computed. */
  storedBytes: number | null;
  /** logicalBytes ÷ storedBytes; null while storedBytes is. */
  dedupRatio: number | null;
}

export interface VolumesAnswer {
  volumes: VolumeSummary[];
}

export interface VersionSummary {
  version: number;
  createdAtMs: number;
  fileCount: number;
  totalBytes: number;
}

/** Oldest version first. */
export interface VersionsAnswer {
  volume: string;
  versions: VersionSummary[];
}

/** An entry of a directory listing. */
export interface DirEntry {
  name: string;
  path: string;
  type: 'file' | 'dir' | 'symlink';
  size: number;
  mtimeMs: number;
}

export interface FilesAnswer {
  volume: string;
  version: number;
  path: string;
  entries: DirEntry[];
  /** More than the 1,000 entries answered are in that directory. */
  truncated: boolean;
}

export interface DownloadLink {
  /** Relative; works without a token for a few minutes. */
  url: string;
}

/** [time in ms, value] samples, oldest first. */
export type History = [number, number][];

export interface DictSummary {
  name: string;
  length: number;
  opsPerSec: number;
  history: History;
}

export interface QueueSummary {
  name: string;
  length: number;
  partitions: { name: string; length: number }[];
  deadLetters: number;
  opsPerSec: number;
  history: History;
}

export interface DictsAnswer {
  dicts: DictSummary[];
  queues: QueueSummary[];
  /** False when this server hosts queues but not dicts (`--only`); absent means hosted. */
  dictsHosted?: boolean;
  queuesHosted?: boolean;
}

export interface WorkerSummary {
  id: string;
  host: string;
  slots: number;
  running: number;
  cachedChunks: number;
  cachedBytes: number;
  registeredAtMs: number;
}

export interface CallSummary {
  id: string;
  function: string;
  state: string;
  attempt: number;
  worker: string;
  createdAtMs: number;
  finishedAtMs: number;
  durationMs: number | null;
  /** What `stowage bridge explain` says about where the call was placed. */
  placementReason: string;
}

export interface BridgeAnswer {
  workers: WorkerSummary[];
  /** Newest first, at most 200. */
  calls: CallSummary[];
  placement: { hits: number; total: number; history: History };
}

export interface MountSummary {
  id: string;
  /** "mount", or "worker <id>". */
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

export interface MountsAnswer {
  mounts: MountSummary[];
}
