/**
 * Building blocks the Dict and Queue SDK classes share: whole operation
 * messages from the fields that matter (the rest at their proto defaults),
 * and the check of a millisecond option. Their life cycle is handle.ts.
 */
import { InvalidArgumentError } from '../common/errors.js';
import type { DictOp } from '../gen/stowage/v1/dict.js';
import type { QueueOp } from '../gen/stowage/v1/queue.js';

const EMPTY = Buffer.alloc(0);

export const dictOp = (o: Partial<DictOp> & Pick<DictOp, 'kind' | 'dict'>): DictOp => ({
  key: EMPTY,
  value: EMPTY,
  keys: [],
  values: [],
  skipIfExists: false,
  ttlMs: 0,
  by: 0,
  expectedVersion: 0,
  msgpack: false,
  ...o,
});

export const queueOp = (o: Partial<QueueOp> & Pick<QueueOp, 'kind' | 'queue'>): QueueOp => ({
  partition: '',
  items: [],
  partitionTtlMs: 0,
  block: false,
  timeoutMs: 0,
  max: 0,
  ack: false,
  visibilityMs: 0,
  leaseIds: [],
  all: false,
  cursor: '',
  ...o,
});

/** A positive whole number of milliseconds, or 0 (the proto's "not set") when absent. */
export function optionalMs(what: string, ms: number | undefined): number {
  if (ms === undefined) return 0;
  if (!Number.isInteger(ms) || ms <= 0) throw new InvalidArgumentError(`${what} must be a positive integer, got ${ms}`);
  return ms;
}
