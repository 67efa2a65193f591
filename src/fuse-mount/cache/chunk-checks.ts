/** Checks of the chunk cache's arguments. */
import { FailedPreconditionError, IntegrityError, InvalidArgumentError } from '../../common/errors.js';
import { quote } from '../../common/quote.js';

const HASH = /^[0-9a-f]{64}$/;

/** Validates a get's arguments; the hash also names a file, so nothing else may pass. */
export function checkChunkKey(hash: string, length: number, closed: boolean, at = 0): void {
  if (closed) throw new FailedPreconditionError('the chunk cache is closed');
  if (!HASH.test(hash)) throw new InvalidArgumentError(`chunk hash must be 64 lowercase hex digits (SHA-256), got ${quote(hash)}`);
  if (!Number.isSafeInteger(length) || length < 0) throw new InvalidArgumentError(`chunk length must be a non-negative integer, got ${length}`);
  if (!Number.isSafeInteger(at) || at < 0) throw new InvalidArgumentError(`offset in a chunk must be a non-negative integer, got ${at}`);
}

/** The error for a load after which the chunk is still not there: its bytes did not match. */
export function loadedMismatch(hash: string): IntegrityError {
  return new IntegrityError(`chunk ${hash.slice(0, 16)}… was loaded with bytes that do not match its hash; it was not cached or returned`);
}

/** A positive whole number of bytes, for a cache bound. */
export function checkMaxBytes(maxBytes: number): void {
  if (!Number.isSafeInteger(maxBytes) || maxBytes < 1) throw new InvalidArgumentError(`chunk cache maxBytes must be a positive integer, got ${maxBytes}`);
}

/** What one chunk counts against a bound: LRU sizes must be positive, so an empty chunk counts 1. */
export function chunkSize(length: number): number {
  return Math.max(1, length);
}
