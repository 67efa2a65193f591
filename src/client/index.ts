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
  type ReadOptions,
  type VersionInfo,
  type VolumeInfo,
  type VolumeOptions,
  type TransferProgress,
  type TransferStats,
} from './volume.js';
export type { TransferMode } from './blob-transport.js';
export {
  AlreadyExistsError,
  ErrorCode,
  FailedPreconditionError,
  IntegrityError,
  InvalidArgumentError,
  NotFoundError,
  StowageError,
  UnauthenticatedError,
  UnavailableError,
} from '../common/errors.js';
