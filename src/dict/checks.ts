/**
 * The argument checks of the DictBackend contract, made by ValidatingDictBackend
 * (validating.ts) and nowhere else, so every backend rejects the same inputs
 * with the same words; then what backends share past the checks: the
 * NOT_FOUND of an unknown dict, the errors and parsing of incr, the cursor
 * encoding.
 */
import { FailedPreconditionError, InvalidArgumentError, NotFoundError } from '../common/errors.js';
import { checkName } from '../common/validate.js';
import { quote, QUOTE_MAX_CHARS } from '../common/quote.js';
import {
  MAX_BATCH_ENTRIES,
  MAX_KEY_BYTES,
  MAX_SCAN_LIMIT,
  MAX_TTL_MS,
  MAX_VALUE_BYTES,
  MIN_IDLE_TIMEOUT_MS,
} from './types.js';

export function checkDictName(name: string): string {
  return checkName('dict', name);
}

export function checkKey(key: Buffer): Buffer {
  if (!Buffer.isBuffer(key)) throw new InvalidArgumentError('a dict key must be bytes');
  if (key.length === 0) throw new InvalidArgumentError('a dict key must not be empty');
  if (key.length > MAX_KEY_BYTES) {
    throw new InvalidArgumentError(`dict key is ${key.length} bytes, over the limit of ${MAX_KEY_BYTES}`);
  }
  return key;
}

export function checkValue(value: Buffer): Buffer {
  if (!Buffer.isBuffer(value)) throw new InvalidArgumentError('a dict value must be bytes');
  if (value.length > MAX_VALUE_BYTES) {
    throw new InvalidArgumentError(`dict value is ${value.length} bytes, over the limit of ${MAX_VALUE_BYTES}`);
  }
  return value;
}

export function checkTtl(ttlMs: number | undefined): number | undefined {
  if (ttlMs === undefined) return undefined;
  if (!Number.isInteger(ttlMs) || ttlMs < 1 || ttlMs > MAX_TTL_MS) {
    throw new InvalidArgumentError(`ttlMs must be an integer from 1 to ${MAX_TTL_MS}, not ${ttlMs}`);
  }
  return ttlMs;
}

/** Returns the idle timeout, 0 (never) when absent. */
export function checkIdleTimeout(idleTimeoutMs: number | undefined): number {
  const ms = idleTimeoutMs ?? 0;
  if (ms !== 0 && (!Number.isInteger(ms) || ms < MIN_IDLE_TIMEOUT_MS || ms > MAX_TTL_MS)) {
    throw new InvalidArgumentError(
      `idleTimeoutMs must be 0 (never) or an integer from ${MIN_IDLE_TIMEOUT_MS} to ${MAX_TTL_MS}, not ${ms}`,
    );
  }
  return ms;
}

/** A caller-supplied clock reading (touch's atMs, dropIfIdle's nowMs): ms since the epoch. */
export function checkTime(what: string, ms: number | undefined): number | undefined {
  if (ms !== undefined && (!Number.isSafeInteger(ms) || ms < 0)) {
    throw new InvalidArgumentError(`${what} must be an integer >= 0 (ms since the epoch), not ${ms}`);
  }
  return ms;
}

export function checkBatch(n: number, what: string): void {
  if (n > MAX_BATCH_ENTRIES) {
    throw new InvalidArgumentError(`${n} ${what} in one call is over the limit of ${MAX_BATCH_ENTRIES}`);
  }
}

export function checkScanLimit(limit: number): number {
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_SCAN_LIMIT) {
    throw new InvalidArgumentError(`scan limit must be an integer from 1 to ${MAX_SCAN_LIMIT}, not ${limit}`);
  }
  return limit;
}

export function checkIncrement(by: number): number {
  if (!Number.isSafeInteger(by)) throw new InvalidArgumentError(`incr amount must be a safe integer, not ${by}`);
  return by;
}

export function checkVersion(version: number): number {
  if (!Number.isSafeInteger(version) || version < 0) {
    throw new InvalidArgumentError(`expected version must be an integer >= 0, not ${version}`);
  }
  return version;
}

export function dictNotFound(name: string): NotFoundError {
  return new NotFoundError(`dict ${quote(name)} does not exist (create it with: stowage dict create ${name.length <= QUOTE_MAX_CHARS ? name : '<name>'})`);
}

/** Decimal integers as incr stores them: optional '-', no leading zeros, no spaces. */
const INTEGER = /^-?(0|[1-9][0-9]{0,15})$/;

/** The integer an incr would start from, or a FailedPreconditionError. */
export function parseCounter(value: Buffer | undefined, dict: string): number {
  if (value === undefined) return 0;
  const text = value.toString('latin1');
  const n = INTEGER.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(n)) throw notACounter(dict);
  return n;
}

export function notACounter(dict: string): FailedPreconditionError {
  return new FailedPreconditionError(`cannot incr a key in dict ${quote(dict)}: its value is not a decimal integer`);
}

export function counterOverflow(dict: string): FailedPreconditionError {
  return new FailedPreconditionError(`incr in dict ${quote(dict)} would leave the safe integer range`);
}

/** Cursors are opaque to callers; both backends encode a position key this way. */
export function encodeCursor(position: Buffer): string {
  return position.toString('base64url');
}

export function decodeCursor(cursor: string): Buffer {
  const b = Buffer.from(cursor, 'base64url');
  if (b.length === 0 || b.toString('base64url') !== cursor) {
    throw new InvalidArgumentError('invalid scan cursor: pass back the cursor a previous scan returned');
  }
  return b;
}
