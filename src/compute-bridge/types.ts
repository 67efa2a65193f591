/**
 * The compute bridge's contracts: what it is given by the server that hosts
 * it (a VolumeResolver over the volume catalogue, since services do not
 * import each other), what it keeps (CallStore), and the call record.
 */
import { CallState, type CallError, type DeployAppRequest, type FunctionSpec, type LogEntry, type PlacementDecision, type Schedule } from '../gen/stowage/v1/bridge.js';

const CALL_STATE_NAMES: Record<number, string> = {
  [CallState.CALL_STATE_QUEUED]: 'queued',
  [CallState.CALL_STATE_RUNNING]: 'running',
  [CallState.CALL_STATE_SUCCEEDED]: 'succeeded',
  [CallState.CALL_STATE_FAILED]: 'failed',
};

/** A call's state as the CLI and the dashboard name it. */
export const callStateName = (s: CallState): string => CALL_STATE_NAMES[s] ?? 'unknown';

/** A run of bytes a call will read, named by the SHA-256 of those bytes (the chunk cache's key). */
export interface ExtentRef {
  hash: string;
  length: number;
}

export interface ResolvedFile {
  /** Relative to the volume root, no leading '/'. */
  path: string;
  extents: ExtentRef[];
}

/**
 * Read-only view of volumes, injected by src/server/ (built on the volume
 * catalogue). Both methods throw the catalogue's typed errors.
 */
export interface VolumeResolver {
  /** The newest version of `volume`: NotFoundError when there is no such volume, FailedPreconditionError when it has no version yet. */
  latestVersion(volume: string): Promise<number>;
  /**
   * The files of one version of `volume` that a glob matches (a path without
   * glob characters: that file, or everything below that directory), with
   * their extents. Reads only the directories the glob can reach.
   */
  matchFiles(volume: string, version: number, glob: string): Promise<ResolvedFile[]>;
}

export const PLACEMENT_POLICIES = ['ours', 'round-robin', 'random'] as const;
export type PlacementPolicyName = (typeof PLACEMENT_POLICIES)[number];

export type CallStateName = 'queued' | 'running' | 'succeeded' | 'failed';

/** One call, as kept in memory and in the CallStore. */
export interface CallRecord {
  id: string;
  spec: FunctionSpec;
  /** msgpack array of arguments. */
  args: Buffer;
  /** The globs placement reads (the call's own, or the function's). */
  reads: string[];
  /** Volume name -> version pinned at submit. */
  versions: Record<string, number>;
  state: CallStateName;
  /** Attempts started so far (the running one included). */
  attempt: number;
  /** The worker of the current (or last) attempt; '' before the first. */
  workerId: string;
  createdAtMs: number;
  /** When it last entered the queue (placement's locality wait counts from here). */
  queuedAtMs: number;
  startedAtMs: number;
  finishedAtMs: number;
  value?: Buffer;
  error?: CallError;
  decisions: PlacementDecision[];
  /** Set while a call waits out its retry policy's backoff: not placed before this time. */
  retryAtMs?: number;
  /**
   * Set on a call found running when the bridge started: until this time it
   * is not placed again, so that the worker running it can re-register and
   * claim it.
   */
  reclaimUntilMs?: number;
}

/** A call's kept output (CallStore.readLogs). */
export interface KeptLogs {
  /** Oldest first. */
  entries: LogEntry[];
  /** Bytes of output the entries dropped for the bound stood for (each its droppedBytes, or else its data's length). */
  droppedBytes: number;
}

/**
 * Where calls and schedules outlive the bridge process: LMDB under
 * <data-dir>/bridge (store.ts, one server) or Redis (redis-store.ts, a set of
 * servers electing one active bridge). Writes are acknowledged once durable
 * in the store's own sense (committed to disk for LMDB, accepted by Redis);
 * reads see every acknowledged write, also from another process opening the
 * same store after this one died. A Redis store made for one lease term
 * refuses writes once that term is over (FailedPreconditionError), so a
 * bridge that lost its lease cannot overwrite what its successor wrote.
 * Checked by test/bridge-store-contract.test.ts on both.
 */
export interface CallStore {
  /** Every call kept (finished ones until they are swept). */
  loadCalls(): Promise<CallRecord[]>;
  /** Writes the calls in one transaction: all of them or, if it fails, none. */
  putCalls(calls: readonly CallRecord[]): Promise<void>;
  /** Deletes the calls and their kept output (appendLogs). */
  deleteCalls(ids: string[]): Promise<void>;
  /**
   * Appends `entries` to the kept output of call `callId`, in order (one
   * write: all of them or none), then drops its oldest entries while what is
   * kept exceeds `keepBytes`, each entry counted by the size of its proto
   * encoding; droppedBytes grows by the output each dropped entry stood
   * for (its droppedBytes if set, else its data's length), so that a reader
   * can tell exactly how much output is missing. Fenced like the other
   * writes. Nothing checks that the call exists: the bridge does.
   */
  appendLogs(callId: string, entries: readonly LogEntry[], keepBytes: number): Promise<void>;
  /** What is kept of the call's output: no entries for a call without any. */
  readLogs(callId: string): Promise<KeptLogs>;
  loadSchedules(): Promise<Schedule[]>;
  putSchedule(schedule: Schedule): Promise<void>;
  /** false when there was no such schedule. */
  deleteSchedule(name: string): Promise<boolean>;
  /** Every app's deploy, as accepted (deployments.ts): the app and its functions with their specs. */
  loadDeployments(): Promise<DeployAppRequest[]>;
  /** Writes an app's deploy over its earlier one (keyed by `deployment.app`). */
  putDeployment(deployment: DeployAppRequest): Promise<void>;
  /** false when the app had no deploy. */
  deleteDeployment(app: string): Promise<boolean>;
  close(): Promise<void>;
}

/** How a call ended, as the bridge's metrics count it. */
export type BridgeCallOutcome = 'succeeded' | 'failed' | 'timeout' | 'lost' | 'cancelled';

/** How many further attempts a call may have: its retry policy's, or (without one) `retries`, for attempts lost with a worker. */
export const maxRetriesOf = (spec: FunctionSpec): number => spec.retryPolicy?.maxRetries ?? spec.retries;

/**
 * Told of what the bridge does, for the server's metrics (injected by
 * src/server/). Each call's end is told once, whatever reports it again.
 */
export interface BridgeObserver {
  /** A call finished: succeeded; failed (the function raised, or its reads could not be resolved); timeout; lost (its worker or runner was lost on its last allowed attempt); cancelled. */
  callFinished(outcome: BridgeCallOutcome): void;
  /** An attempt was lost with its worker or runner, or failed with a retry policy, and the call queued again. */
  attemptRequeued(): void;
  /**
   * A call that declares reads was placed; `hit` when the chosen worker's
   * cache holds at least one byte of them (its cachedBytes in the placement
   * decision is above 0).
   */
  placed(hit: boolean): void;
}
