/**
 * Queue: named FIFO queues shared by many workers, shaped like Modal's Queue,
 * with what Modal lacks: maxSize with blocking puts as back-pressure, and an
 * ack mode in which an item not acked in time is delivered again (and moves
 * to the dead-letter partition after maxDeliveries).
 *
 *   const q = await Queue.fromName('jobs', { createIfMissing: true });
 *   await q.put({ shard: 3 });
 *   const job = await q.get();                       // waits for an item
 *   const lease = await q.get({ ack: true, visibilityMs: 30_000 });
 *   ...; await lease.ack();
 *
 * Items are msgpack-encoded unless `encoding: 'raw'`. Calls made at the same
 * time are batched into one message; the server answers a call that waits
 * (a blocking get or put) on its own, so it holds up nothing else.
 */
import { InvalidArgumentError } from '../common/errors.js';
import { checkName } from '../common/validate.js';
import { QueueOpKind, type QueueInfo as QueueInfoMessage, type QueueOp, type QueueResult } from '../gen/stowage/v1/queue.js';
import { DEAD_LETTER_PARTITION, MAX_ITEM_BYTES, MAX_PARTITION_KEY_BYTES } from '../queue/types.js';
import { codecFor, type Codec, type Encoding } from './codec.js';
import { optionalMs, queueOp as op } from './ops.js';
import type { Connection } from './connection.js';
import { EPHEMERAL_IDLE_MS, Handle, connectionOf, ephemeralName, openNamed, type EphemeralLife } from './handle.js';

export { DEAD_LETTER_PARTITION, MAX_ITEM_BYTES, MAX_PARTITION_KEY_BYTES };

export interface QueueInfo {
  name: string;
  createdAt: Date;
  maxSize: number;
  maxDeliveries: number;
  /** 0: never deleted for being idle. */
  idleTimeoutMs: number;
  lastUsedAt: Date;
}

export interface QueueOptions {
  connection?: Connection;
  /** How items are turned into bytes (default msgpack). */
  encoding?: Encoding;
}

export interface QueueSettings {
  /** Most items held at once, all partitions together (default 100,000). */
  maxSize?: number;
  /** Deliveries in ack mode before an item moves to the dead-letter partition (default 5). */
  maxDeliveries?: number;
  /** Delete the queue after this long without use; 0 = never (default). */
  idleTimeoutMs?: number;
}

export interface QueueFromNameOptions extends QueueOptions, QueueSettings {
  createIfMissing?: boolean;
}

export interface QueuePutOptions {
  /** A partition key (1..64 bytes); the default partition when omitted. */
  partition?: string;
  /** A non-default partition expires this long after its last put (default 24 h). */
  partitionTtlMs?: number;
  /** Wait while the queue is full (default true); false fails at once with FailedPreconditionError. */
  block?: boolean;
  /** With block: give up (FailedPreconditionError) after this long; default: wait as long as it takes. */
  timeoutMs?: number;
}

export interface QueueGetOptions {
  partition?: string;
  /** Wait for an item (default true); false returns at once. */
  block?: boolean;
  /** With block: return nothing after this long; default: wait as long as it takes. */
  timeoutMs?: number;
}

export interface QueueAckGetOptions extends QueueGetOptions {
  ack: true;
  /** How long the lease lasts before the item is delivered again (default 30 s). */
  visibilityMs?: number;
}

/** An item got in ack mode: ack() it when done, or it is delivered again. */
export interface Lease<T> {
  value: T;
  leaseId: string;
  /** Deliveries of this item so far, this one included. */
  deliveries: number;
  ack(): Promise<boolean>;
}

const DEFAULT_VISIBILITY_MS = 30_000;
const PEEK_PAGE = 1000;

const toInfo = (m: QueueInfoMessage): QueueInfo => ({
  name: m.name,
  createdAt: new Date(m.createdAtMs),
  maxSize: m.maxSize,
  maxDeliveries: m.maxDeliveries,
  idleTimeoutMs: m.idleTimeoutMs,
  lastUsedAt: new Date(m.lastUsedMs),
});

function checkPartition(partition: string | undefined): string {
  if (partition === undefined) return '';
  if (typeof partition !== 'string' || partition.length === 0) {
    throw new InvalidArgumentError('partition key must be a non-empty string (omit it for the default partition)');
  }
  if (Buffer.byteLength(partition) > MAX_PARTITION_KEY_BYTES) {
    throw new InvalidArgumentError(`partition key is ${Buffer.byteLength(partition)} bytes, over the limit of ${MAX_PARTITION_KEY_BYTES}`);
  }
  return partition;
}

/** A queue handle; the life cycle (fromName, ephemeral, close) is Handle's (handle.ts). */
export class Queue<T = unknown> extends Handle {
  private readonly codec: Codec;

  private constructor(name: string, conn: Connection, encoding: Encoding | undefined, life?: EphemeralLife) {
    super('queue', name, conn, life);
    this.codec = codecFor(encoding);
  }

  /** Looks a queue up by name; NotFoundError (with the command that creates it) unless createIfMissing. */
  static async fromName<T = unknown>(name: string, opts: QueueFromNameOptions = {}): Promise<Queue<T>> {
    const conn = await openNamed('queue', name, opts, {
      create: (c) =>
        c.unary(c.queues.createQueue.bind(c.queues), {
          name,
          existOk: true,
          maxSize: opts.maxSize ?? 0,
          maxDeliveries: opts.maxDeliveries ?? 0,
          idleTimeoutMs: opts.idleTimeoutMs ?? 0,
        }),
      get: (c) => c.unary(c.queues.getQueue.bind(c.queues), { name }),
    });
    return new Queue<T>(name, conn, opts.encoding);
  }

  /** A queue that lives until close() (or until its heartbeats stop for a minute). */
  static async ephemeral<T = unknown>(opts: QueueOptions & Omit<QueueSettings, 'idleTimeoutMs'> = {}): Promise<Queue<T>> {
    const conn = connectionOf(opts);
    const q = conn.queues;
    const info = await conn.unary(q.createQueue.bind(q), {
      name: ephemeralName(),
      existOk: false,
      maxSize: opts.maxSize ?? 0,
      maxDeliveries: opts.maxDeliveries ?? 0,
      idleTimeoutMs: EPHEMERAL_IDLE_MS,
    });
    return new Queue<T>(info.name, conn, opts.encoding, {
      beat: (c) => c.queueOps.run(op({ kind: QueueOpKind.QUEUE_OP_KIND_TOUCH, queue: info.name })),
      remove: (c) => Queue.delete(info.name, { connection: c }),
      timeoutMs: info.idleTimeoutMs,
    });
  }

  static async list(opts: { connection?: Connection } = {}): Promise<QueueInfo[]> {
    const conn = connectionOf(opts);
    return (await conn.unary(conn.queues.listQueues.bind(conn.queues), {})).queues.map(toInfo);
  }

  static async delete(name: string, opts: { connection?: Connection } = {}): Promise<void> {
    checkName('queue', name);
    const conn = connectionOf(opts);
    await conn.unary(conn.queues.deleteQueue.bind(conn.queues), { name });
  }

  async info(): Promise<QueueInfo> {
    const conn = this.conn;
    return toInfo(await conn.unary(conn.queues.getQueue.bind(conn.queues), { name: this.name }));
  }

  /** Adds one item at the end of a partition. */
  async put(value: T, opts: QueuePutOptions = {}): Promise<void> {
    await this.putMany([value], opts);
  }

  /** Adds items, in order, at the end of a partition, all or none. */
  async putMany(values: readonly T[], opts: QueuePutOptions = {}): Promise<void> {
    if (values.length === 0) return;
    const items = values.map((v) => {
      const b = this.codec.encode(v, 'queue item');
      if (b.length > MAX_ITEM_BYTES) {
        throw new InvalidArgumentError(`queue item of ${b.length} bytes is over the limit of ${MAX_ITEM_BYTES} bytes`);
      }
      return b;
    });
    const block = opts.block ?? true;
    const o = op({
      kind: QueueOpKind.QUEUE_OP_KIND_PUT,
      queue: this.name,
      partition: checkPartition(opts.partition),
      items,
      partitionTtlMs: optionalMs('partitionTtlMs', opts.partitionTtlMs),
      block,
      timeoutMs: optionalMs('timeoutMs', opts.timeoutMs),
    });
    await this.run(o, items.reduce((n, b) => n + b.length, 0));
  }

  /** The next item, removed for good; undefined if none came (block false, or timeout). */
  get(opts?: QueueGetOptions & { ack?: false }): Promise<T | undefined>;
  /** The next item, leased: ack() it within visibilityMs or it is delivered again. */
  get(opts: QueueAckGetOptions): Promise<Lease<T> | undefined>;
  async get(opts: QueueGetOptions & { ack?: boolean; visibilityMs?: number } = {}): Promise<T | Lease<T> | undefined> {
    const items = await this.getItems(1, opts);
    return items[0];
  }

  /** Up to n items (waiting, unless block is false, only until the first arrives). */
  getMany(n: number, opts?: QueueGetOptions & { ack?: false }): Promise<T[]>;
  getMany(n: number, opts: QueueAckGetOptions): Promise<Lease<T>[]>;
  async getMany(n: number, opts: QueueGetOptions & { ack?: boolean; visibilityMs?: number } = {}): Promise<(T | Lease<T>)[]> {
    return this.getItems(n, opts);
  }

  /** Acks leases (or lease ids); returns how many were still held. */
  async ack(leases: readonly (Lease<T> | string)[]): Promise<number> {
    const leaseIds = leases.map((l) => (typeof l === 'string' ? l : l.leaseId));
    return (await this.run(op({ kind: QueueOpKind.QUEUE_OP_KIND_ACK, queue: this.name, leaseIds }))).number;
  }

  /** Items in one partition (default), or in the whole queue with `total`. */
  async len(opts: { partition?: string; total?: boolean } = {}): Promise<number> {
    const o = op({ kind: QueueOpKind.QUEUE_OP_KIND_LEN, queue: this.name, partition: checkPartition(opts.partition), all: opts.total ?? false });
    return (await this.run(o)).number;
  }

  /** Removes the items of one partition (default), or of every partition with `all`. */
  async clear(opts: { partition?: string; all?: boolean } = {}): Promise<void> {
    const o = op({ kind: QueueOpKind.QUEUE_OP_KIND_CLEAR, queue: this.name, partition: checkPartition(opts.partition), all: opts.all ?? false });
    await this.run(o);
  }

  /** Reads the items of a partition in order without removing them, a page at a time. */
  async *iterate(opts: { partition?: string } = {}): AsyncIterableIterator<T> {
    const partition = opts.partition === DEAD_LETTER_PARTITION ? DEAD_LETTER_PARTITION : checkPartition(opts.partition);
    let cursor = '';
    do {
      const r = await this.run(op({ kind: QueueOpKind.QUEUE_OP_KIND_PEEK, queue: this.name, partition, cursor, max: PEEK_PAGE }));
      for (const item of r.items) yield this.codec.decode(item.data) as T;
      cursor = r.cursor;
    } while (cursor);
  }

  private async getItems(n: number, opts: QueueGetOptions & { ack?: boolean; visibilityMs?: number }): Promise<(T | Lease<T>)[]> {
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`getMany needs a positive integer count, got ${n}`);
    const block = opts.block ?? true;
    const partition = opts.partition === DEAD_LETTER_PARTITION ? DEAD_LETTER_PARTITION : checkPartition(opts.partition);
    const o = op({
      kind: QueueOpKind.QUEUE_OP_KIND_GET,
      queue: this.name,
      partition,
      max: n,
      block,
      timeoutMs: optionalMs('timeoutMs', opts.timeoutMs),
      ack: opts.ack ?? false,
      visibilityMs: opts.ack ? (optionalMs('visibilityMs', opts.visibilityMs) || DEFAULT_VISIBILITY_MS) : 0,
    });
    const r = await this.run(o);
    return r.items.map((item) => {
      const value = this.codec.decode(item.data) as T;
      if (!opts.ack) return value;
      return {
        value,
        leaseId: item.leaseId,
        deliveries: item.deliveries,
        ack: async () => (await this.ack([item.leaseId])) === 1,
      };
    });
  }

  private run(o: QueueOp, bytes = 0): Promise<QueueResult> {
    return this.conn.queueOps.run(o, bytes);
  }
}
