/**
 * The largest request each metadata method accepts, in encoded bytes, so that
 * a call naming a volume, dict or queue cannot make the server hold more than
 * such a call needs. Each bound is well above the largest valid request of its
 * method: names are at most 64 characters, paths 4096 bytes, dict keys 64 KiB
 * (a scan cursor is a key in base64). Methods not listed (uploads, commits,
 * batches, sessions, submits, the worker stream) carry data and keep the
 * server-wide bound, MAX_REQUEST_BYTES (src/common/message-limits.ts).
 */
import type { BridgeServiceService } from '../gen/stowage/v1/bridge.js';
import type { DictServiceService } from '../gen/stowage/v1/dict.js';
import type { QueueServiceService } from '../gen/stowage/v1/queue.js';
import type { VolumeServiceService } from '../gen/stowage/v1/volume.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Names, a path, a hash, a few numbers. */
const REF = 64 * KiB;
/** A dict key in base64 (scan cursor), or a function spec with its volumes and read globs. */
const SPEC = 1 * MiB;

type Limits<S> = Partial<Record<keyof S, number>>;

export const VOLUME_REQUEST_LIMITS: Limits<typeof VolumeServiceService> = {
  createVolume: REF,
  getVolume: REF,
  listVolumes: REF,
  deleteVolume: REF,
  renameVolume: REF,
  heartbeat: REF,
  listVersions: REF,
  listFiles: REF,
  stat: REF,
  getFile: REF,
  readBlob: REF,
  reportDamagedBlob: REF,
  rebuildIndex: REF,
  getVersion: REF,
  // Up to 1024 hashes of 64 characters.
  getTreeObjects: 2 * REF,
  setRetention: REF,
  collectGarbage: REF,
  listDamaged: REF,
  reportMount: REF,
};

export const DICT_REQUEST_LIMITS: Limits<typeof DictServiceService> = {
  createDict: REF,
  getDict: REF,
  listDicts: REF,
  deleteDict: REF,
  scan: SPEC,
};

export const QUEUE_REQUEST_LIMITS: Limits<typeof QueueServiceService> = {
  createQueue: REF,
  getQueue: REF,
  listQueues: REF,
  deleteQueue: REF,
};

export const BRIDGE_REQUEST_LIMITS: Limits<typeof BridgeServiceService> = {
  getCall: REF,
  // Up to 10,000 call ids (a whole map) of up to 128 characters.
  cancelCalls: 2 * SPEC,
  watchLogs: REF,
  listCalls: REF,
  listWorkers: REF,
  listSchedules: REF,
  deleteSchedule: REF,
  putSchedule: SPEC,
  getFunction: REF,
  listFunctions: REF,
  deleteApp: REF,
  // An app of up to 1,000 function specs (deployments.ts MAX_FUNCTIONS).
  deployApp: 16 * SPEC,
};
