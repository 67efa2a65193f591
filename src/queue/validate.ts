/**
 * The argument checks of the QueueBackend contract, made by
 * ValidatingQueueBackend (validating.ts) and nowhere else, so every backend
 * rejects the same inputs with the same words; then what backends share past
 * the checks: the defaults they fill in, QueueFullError, the NOT_FOUND of an
 * unknown queue.
 */
import {
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
} from '../common/errors.js';
import { checkName } from '../common/validate.js';
import { quote, QUOTE_MAX_CHARS } from '../common/quote.js';
import {
  DEAD_LETTER_PARTITION,
  DEFAULT_GET_MAX,
  DEFAULT_MAX_DELIVERIES,
  DEFAULT_PARTITION,
  DEFAULT_PEEK_LIMIT,
  DEFAULT_MAX_SIZE,
  DEFAULT_PARTITION_TTL_MS,
  MAX_ITEM_BYTES,
  MAX_ITEMS_PER_GET,
  MAX_ITEMS_PER_PUT,
  MAX_MAX_DELIVERIES,
  MAX_MAX_SIZE,
  MAX_PAGE_ITEMS,
  MAX_PARTITION_KEY_BYTES,
  MAX_PARTITION_TTL_MS,
  MAX_IDLE_TIMEOUT_MS,
  MAX_VISIBILITY_MS,
  MIN_IDLE_TIMEOUT_MS,
  type QueueSettings,
} from './types.js';

/**
 * A put that does not fit under maxSize. FAILED_PRECONDITION on the wire
 * until the error codes grow RESOURCE_EXHAUSTED; the service layer can test
 * `instanceof QueueFullError` to turn it into back-pressure.
 */
export class QueueFullError extends FailedPreconditionError {
  constructor(
    readonly queue: string,
    readonly free: number,
    readonly requested: number,
  ) {
    super(`queue ${queue} is full: ${requested} items requested, room for ${free}`);
  }
}

export function queueNotFound(name: string): NotFoundError {
  return new NotFoundError(`queue ${quote(name)} not found (create it with: stowage queue create ${name.length <= QUOTE_MAX_CHARS ? name : '<name>'})`);
}

export const checkQueueName = (name: string): string => checkName('queue', name);

export function checkPartition(partition: string | undefined): string {
  const p = partition ?? '';
  if (typeof p !== 'string') throw new InvalidArgumentError('partition key must be a string');
  if (p !== '' && Buffer.byteLength(p) > MAX_PARTITION_KEY_BYTES) {
    throw new InvalidArgumentError(
      `partition key is ${Buffer.byteLength(p)} bytes, over the limit of ${MAX_PARTITION_KEY_BYTES}`,
    );
  }
  return p;
}

function checkInt(what: string, v: number, min: number, max: number): number {
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new InvalidArgumentError(`${what} must be an integer from ${min} to ${max}, got ${v}`);
  }
  return v;
}

/** Settings with the defaults in place of what is not given (nothing checked). */
export function settingsOf(s: Partial<QueueSettings> = {}): QueueSettings {
  return {
    maxSize: s.maxSize ?? DEFAULT_MAX_SIZE,
    maxDeliveries: s.maxDeliveries ?? DEFAULT_MAX_DELIVERIES,
    idleTimeoutMs: s.idleTimeoutMs ?? 0,
  };
}

export function checkSettings(given: Partial<QueueSettings> = {}): QueueSettings {
  const s = settingsOf(given);
  checkInt('maxSize', s.maxSize, 1, MAX_MAX_SIZE);
  checkInt('maxDeliveries', s.maxDeliveries, 1, MAX_MAX_DELIVERIES);
  checkIdleTimeout(s.idleTimeoutMs);
  return s;
}

function checkIdleTimeout(ms: number): number {
  if (ms !== 0 && (!Number.isInteger(ms) || ms < MIN_IDLE_TIMEOUT_MS || ms > MAX_IDLE_TIMEOUT_MS)) {
    throw new InvalidArgumentError(
      `idleTimeoutMs must be 0 (never) or an integer from ${MIN_IDLE_TIMEOUT_MS} to ${MAX_IDLE_TIMEOUT_MS}, got ${ms}`,
    );
  }
  return ms;
}

/** A caller-supplied clock reading (touch's atMs, dropIfIdle's nowMs): ms since the epoch. */
export function checkTime(what: string, ms: number | undefined): number | undefined {
  return ms === undefined ? undefined : checkInt(what, ms, 0, Number.MAX_SAFE_INTEGER);
}

/** The TTL a put gives its partition: 0 (never expires) for the default partition. */
export function partitionTtl(partition: string, ttlMs: number | undefined): number {
  return partition === DEFAULT_PARTITION ? 0 : (ttlMs ?? DEFAULT_PARTITION_TTL_MS);
}

export function checkPut(items: Buffer[], partition: string, ttlMs: number | undefined): void {
  if (partition === DEAD_LETTER_PARTITION) {
    throw new InvalidArgumentError(`partition ${DEAD_LETTER_PARTITION} is reserved for dead letters`);
  }
  if (!Array.isArray(items) || items.length === 0) throw new InvalidArgumentError('put needs at least one item');
  if (items.length > MAX_ITEMS_PER_PUT) {
    throw new InvalidArgumentError(`put of ${items.length} items is over the limit of ${MAX_ITEMS_PER_PUT}`);
  }
  for (const item of items) {
    if (!Buffer.isBuffer(item)) throw new InvalidArgumentError('queue items must be Buffers');
    if (item.length > MAX_ITEM_BYTES) {
      throw new InvalidArgumentError(`item of ${item.length} bytes is over the limit of ${MAX_ITEM_BYTES}`);
    }
  }
  checkInt('partitionTtlMs', ttlMs ?? DEFAULT_PARTITION_TTL_MS, 1, MAX_PARTITION_TTL_MS);
}

export function checkMax(max: number | undefined): number {
  return checkInt('max', max ?? DEFAULT_GET_MAX, 1, MAX_ITEMS_PER_GET);
}

export function checkVisibility(ms: number): number {
  return checkInt('visibilityMs', ms, 1, MAX_VISIBILITY_MS);
}

export function checkLimit(limit: number | undefined): number {
  return checkInt('limit', limit ?? DEFAULT_PEEK_LIMIT, 1, MAX_PAGE_ITEMS);
}

/** Cursors are the last sequence number seen, as a decimal string (checked by the wrapper, read by the backends). */
export function parseCursor(cursor: string | undefined): number {
  if (cursor === undefined) return 0;
  if (!/^\d{1,16}$/.test(cursor)) throw new InvalidArgumentError(`invalid cursor ${quote(cursor)}: pass back the cursor a previous page returned`);
  return Number(cursor);
}

export function checkLeaseIds(ids: string[]): string[] {
  if (!Array.isArray(ids) || ids.some((id) => typeof id !== 'string' || id.length === 0 || id.length > 128)) {
    throw new InvalidArgumentError('lease ids must be non-empty strings');
  }
  return ids;
}
