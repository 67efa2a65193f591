/** The stowage SDK. */
export { Connection, closeDefaultConnection, defaultConnection, type ConnectOptions } from './connection.js';
export {
  BatchUpload,
  Volume,
  DEFAULT_CHUNK_SIZE,
  type BatchUploadOptions,
  type CommitResult,
  type DownloadOptions,
  type FileInfo,
  type FromNameOptions,
  type ListOptions,
  type PageOptions,
  type ReadOptions,
  type VersionInfo,
  type VolumeInfo,
  type VolumeOptions,
  type TransferProgress,
  type TransferStats,
} from './volume.js';
export type { TransferMode } from './blob-transport.js';
export { defaultFetchThreads } from './fetch-pool.js';
export {
  collectGarbage,
  listDamaged,
  rebuildIndex,
  setRetention,
  type DamagedObject,
  type GcOptions,
  type GcReport,
  type RetentionOptions,
} from './volume-admin.js';
export { createToken, listTokens, revokeToken, type CreateTokenOptions, type TokenInfo } from './tokens.js';
export {
  Dict,
  MAX_KEY_BYTES,
  MAX_VALUE_BYTES,
  type CompareAndSetResult,
  type DictFromNameOptions,
  type DictInfo,
  type DictOptions,
  type DictPutOptions,
} from './dict.js';
export {
  Queue,
  DEAD_LETTER_PARTITION,
  MAX_ITEM_BYTES,
  MAX_PARTITION_KEY_BYTES,
  type Lease,
  type QueueAckGetOptions,
  type QueueFromNameOptions,
  type QueueGetOptions,
  type QueueInfo,
  type QueueOptions,
  type QueuePutOptions,
  type QueueSettings,
} from './queue.js';
export type { Encoding } from './codec.js';
export { App, BridgeAdmin, FunctionHandle, type AppOptions, type FunctionOptions, type RetryOptions } from './app.js';
// `Function` as in Modal (`Function.fromName`); it shadows the global Function only where it is imported.
export {
  DeployedFunction,
  DeployedFunction as Function,
  deleteApp,
  listDeployedFunctions,
  type DeployResult,
  type DeployedFunctionInfo,
  type FunctionFromNameOptions,
} from './deployed.js';
export { FunctionCall, FunctionInvoker, MapResults, type GetOptions, type MapOptions, type RemoteErrorDetails } from './invoke.js';
export { callLogs, type CallOutput, type LogsOptions } from './logs.js';
export { volume, volumePath, type FunctionVolume, type VolumeMount } from './function-volumes.js';
export {
  AlreadyExistsError,
  CancelledError,
  DeadlineExceededError,
  ErrorCode,
  FailedPreconditionError,
  FunctionError,
  IntegrityError,
  InvalidArgumentError,
  NotFoundError,
  PermissionDeniedError,
  ResourceExhaustedError,
  StowageError,
  UnauthenticatedError,
  UnavailableError,
} from '../common/errors.js';
