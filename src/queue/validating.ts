/**
 * ValidatingQueueBackend: the argument checks of the QueueBackend contract,
 * made once, around any backend (as JuiceFS's prefix.go wraps an
 * ObjectStorage). Every check runs before the inner backend sees the call, so
 * a bad argument is the same InvalidArgumentError, with the same words, on
 * every backend, and it wins over NOT_FOUND.
 *
 * It passes options on filled in (settings, partition, max, limit), so a
 * backend's own defaults never decide anything. The server and the queue
 * service always use a backend through this wrapper (validatedQueueBackend);
 * types.ts lists what a backend may take as checked.
 */
import type {
  ClearScope,
  DeliveredItem,
  GetOptions,
  LenScope,
  PeekOptions,
  PeekPage,
  PutOptions,
  QueueBackend,
  QueueInfo,
  QueueSettings,
} from './types.js';
import {
  checkLeaseIds,
  checkLimit,
  checkMax,
  checkPartition,
  checkPut,
  checkQueueName,
  checkSettings,
  checkTime,
  checkVisibility,
  parseCursor,
} from './validate.js';

export class ValidatingQueueBackend implements QueueBackend {
  constructor(readonly inner: QueueBackend) {}

  async create(name: string, settings?: Partial<QueueSettings>): Promise<QueueInfo> {
    checkQueueName(name);
    return this.inner.create(name, checkSettings(settings));
  }

  async drop(name: string): Promise<void> {
    return this.inner.drop(checkQueueName(name));
  }

  async list(): Promise<QueueInfo[]> {
    return this.inner.list();
  }

  async info(name: string): Promise<QueueInfo> {
    return this.inner.info(checkQueueName(name));
  }

  async touch(name: string, atMs?: number): Promise<void> {
    return this.inner.touch(checkQueueName(name), checkTime('atMs', atMs));
  }

  async dropIfIdle(name: string, nowMs?: number): Promise<boolean> {
    return this.inner.dropIfIdle(checkQueueName(name), checkTime('nowMs', nowMs));
  }

  async put(name: string, items: Buffer[], options: PutOptions = {}): Promise<void> {
    checkQueueName(name);
    const partition = checkPartition(options.partition);
    checkPut(items, partition, options.partitionTtlMs);
    return this.inner.put(name, items, { partition, partitionTtlMs: options.partitionTtlMs });
  }

  async get(name: string, options: GetOptions = {}): Promise<DeliveredItem[]> {
    checkQueueName(name);
    const partition = checkPartition(options.partition);
    const max = checkMax(options.max);
    const ack = options.ack && { visibilityMs: checkVisibility(options.ack.visibilityMs) };
    return this.inner.get(name, { partition, max, ack });
  }

  async ack(name: string, leaseIds: string[]): Promise<number> {
    return this.inner.ack(checkQueueName(name), checkLeaseIds(leaseIds));
  }

  async len(name: string, scope: LenScope = {}): Promise<number> {
    checkQueueName(name);
    return this.inner.len(name, 'total' in scope ? scope : { partition: checkPartition(scope.partition) });
  }

  async partitions(name: string): Promise<{ partition: string; length: number }[]> {
    return this.inner.partitions(checkQueueName(name));
  }

  async clear(name: string, scope: ClearScope = {}): Promise<void> {
    checkQueueName(name);
    return this.inner.clear(name, 'all' in scope ? scope : { partition: checkPartition(scope.partition) });
  }

  async peek(name: string, options: PeekOptions = {}): Promise<PeekPage> {
    checkQueueName(name);
    const partition = checkPartition(options.partition);
    const limit = checkLimit(options.limit);
    parseCursor(options.cursor);
    return this.inner.peek(name, { partition, limit, cursor: options.cursor });
  }

  waitForItems(name: string, partition: string, signal: AbortSignal): Promise<void> {
    return this.inner.waitForItems(name, partition, signal);
  }

  async close(): Promise<void> {
    return this.inner.close();
  }
}

/** `backend` behind the contract's checks; one that has them already is returned as it is. */
export function validatedQueueBackend(backend: QueueBackend): ValidatingQueueBackend {
  return backend instanceof ValidatingQueueBackend ? backend : new ValidatingQueueBackend(backend);
}
