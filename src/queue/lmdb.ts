/**
 * QueueBackend on LMDB (lmdb-js): embedded, durable (a put is committed before
 * it resolves), every operation one write transaction.
 *
 * Layout: `queues` name → QueueRecord (settings, the queue's sequence counter,
 * item counts and expiry per partition); `items` [queue, partition, seq] →
 * item, so a range read is FIFO per partition; `leases` [queue, expiresAtMs,
 * leaseId] → leased item, so expired leases are a prefix; `leaseIds`
 * [queue, leaseId] → expiresAtMs for ack. A redelivered item goes back under
 * its original seq, ahead of newer items. Partition expiry and lease expiry
 * are applied lazily at the start of each operation on the queue. Records
 * written before idle expiry existed have no idleTimeoutMs / lastUsedMs: they
 * read as 0 (never) and createdAtMs.
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Database, RootDatabase } from 'lmdb';
import { AlreadyExistsError } from '../common/errors.js';
import { quote } from '../common/quote.js';
import { LmdbEnv } from '../common/lmdb.js';
import { createLogger, type Logger } from '../common/logger.js';
import { partitionEvent, waitForPut } from './wake.js';
import {
  DEAD_LETTER_PARTITION,
  DEFAULT_GET_MAX,
  DEFAULT_PARTITION,
  DEFAULT_PEEK_LIMIT,
  type ClearScope,
  type DeliveredItem,
  type GetOptions,
  type LenScope,
  type PeekOptions,
  type PeekPage,
  type PutOptions,
  type QueueBackend,
  type QueueInfo,
  type QueueSettings,
} from './types.js';
import { QueueFullError, parseCursor, partitionTtl, queueNotFound, settingsOf } from './validate.js';

interface QueueRecord extends Omit<QueueInfo, 'idleTimeoutMs' | 'lastUsedMs'> {
  idleTimeoutMs?: number;
  lastUsedMs?: number;
  seq: number;
  total: number;
  /** expiresAtMs 0: never. */
  parts: Record<string, { count: number; expiresAtMs: number }>;
}
interface Item {
  d: Buffer;
  n: number;
}
interface Lease extends Item {
  p: string;
  s: number;
}

const MAX = Number.MAX_SAFE_INTEGER;

export class LmdbQueueBackend implements QueueBackend {
  private readonly env: LmdbEnv;
  private readonly root: RootDatabase;
  private readonly queues: Database<QueueRecord, string>;
  private readonly items: Database<Item, [string, string, number]>;
  private readonly leases: Database<Lease, [string, number, string]>;
  private readonly leaseIds: Database<number, [string, string]>;
  private readonly events = new EventEmitter().setMaxListeners(0);

  constructor(path: string, log: Logger = createLogger('queue')) {
    this.env = new LmdbEnv({ dir: path, what: 'queue store', log });
    this.root = this.env.root;
    this.queues = this.root.openDB({ name: 'queues' });
    this.items = this.root.openDB({ name: 'queue-items' });
    this.leases = this.root.openDB({ name: 'queue-leases' });
    this.leaseIds = this.root.openDB({ name: 'queue-lease-ids' });
  }

  async create(name: string, settings?: Partial<QueueSettings>): Promise<QueueInfo> {
    const s = settingsOf(settings);
    return this.env.transaction(() => {
      if (this.queues.doesExist(name)) throw new AlreadyExistsError(`queue ${quote(name)} already exists`);
      const now = Date.now();
      const rec: QueueRecord = { name, ...s, createdAtMs: now, lastUsedMs: now, seq: 0, total: 0, parts: {} };
      void this.queues.put(name, rec);
      return info(rec);
    });
  }

  async drop(name: string): Promise<void> {
    await this.withQueue(name, (rec) => this.remove(rec), false);
  }

  async list(): Promise<QueueInfo[]> {
    return [...this.queues.getRange()].map(({ value }) => info(value));
  }

  async info(name: string): Promise<QueueInfo> {
    const rec = this.queues.get(name);
    if (!rec) throw queueNotFound(name);
    return info(rec);
  }

  async touch(name: string, atMs?: number): Promise<void> {
    await this.withQueue(name, (rec, now) => {
      rec.lastUsedMs = Math.max(info(rec).lastUsedMs, atMs ?? now);
    });
  }

  async dropIfIdle(name: string, nowMs?: number): Promise<boolean> {
    return this.env.transaction(() => {
      const rec = this.queues.get(name);
      if (!rec) return false;
      const { idleTimeoutMs, lastUsedMs } = info(rec);
      if (idleTimeoutMs === 0 || lastUsedMs + idleTimeoutMs > (nowMs ?? Date.now())) return false;
      this.remove(rec);
      return true;
    });
  }

  async put(name: string, items: Buffer[], options: PutOptions = {}): Promise<void> {
    const partition = options.partition ?? DEFAULT_PARTITION;
    const ttl = partitionTtl(partition, options.partitionTtlMs);
    await this.withQueue(name, (rec, now) => {
      if (rec.total + items.length > rec.maxSize) {
        throw new QueueFullError(name, rec.maxSize - rec.total, items.length);
      }
      const part = (rec.parts[partition] ??= { count: 0, expiresAtMs: 0 });
      for (const d of items) void this.items.put([name, partition, ++rec.seq], { d, n: 0 });
      part.count += items.length;
      part.expiresAtMs = ttl === 0 ? 0 : now + ttl;
      rec.total += items.length;
    });
    this.events.emit(partitionEvent(name, partition));
  }

  async get(name: string, options: GetOptions = {}): Promise<DeliveredItem[]> {
    const partition = options.partition ?? DEFAULT_PARTITION;
    const max = options.max ?? DEFAULT_GET_MAX;
    const visibility = options.ack?.visibilityMs ?? 0;
    if (this.nothingToGet(name, partition)) return [];
    return this.withQueue(name, (rec, now) => {
      const out: DeliveredItem[] = [];
      const part = rec.parts[partition];
      if (!part) return out;
      const range = { start: [name, partition, 0], end: [name, partition, MAX], limit: max };
      for (const { key, value } of [...this.items.getRange(range)]) {
        void this.items.remove(key);
        const n = value.n + 1;
        if (visibility === 0) {
          part.count--;
          rec.total--;
          out.push({ data: value.d, deliveries: n });
        } else {
          const leaseId = randomUUID();
          const expiresAtMs = now + visibility;
          void this.leases.put([name, expiresAtMs, leaseId], { d: value.d, n, p: partition, s: key[2] });
          void this.leaseIds.put([name, leaseId], expiresAtMs);
          out.push({ data: value.d, deliveries: n, leaseId });
        }
      }
      return out;
    });
  }

  async ack(name: string, leaseIds: string[]): Promise<number> {
    return this.withQueue(name, (rec) => {
      let acked = 0;
      for (const id of leaseIds) {
        const expiresAtMs = this.leaseIds.get([name, id]);
        if (expiresAtMs === undefined) continue;
        const lease = this.leases.get([name, expiresAtMs, id]);
        void this.leaseIds.remove([name, id]);
        void this.leases.remove([name, expiresAtMs, id]);
        const part = lease && rec.parts[lease.p];
        if (!part) continue;
        part.count--;
        rec.total--;
        acked++;
      }
      return acked;
    });
  }

  async len(name: string, scope: LenScope = {}): Promise<number> {
    const partition = 'total' in scope ? undefined : (scope.partition ?? DEFAULT_PARTITION);
    return this.readQueue(name, (rec) =>
      partition === undefined ? rec.total : (rec.parts[partition]?.count ?? 0),
    );
  }

  async partitions(name: string): Promise<{ partition: string; length: number }[]> {
    return this.readQueue(name, (rec) =>
      Object.entries(rec.parts)
        .filter(([, p]) => p.count > 0)
        .map(([partition, p]) => ({ partition, length: p.count }))
        .sort((a, b) => (a.partition < b.partition ? -1 : a.partition > b.partition ? 1 : 0)),
    );
  }

  async clear(name: string, scope: ClearScope = {}): Promise<void> {
    const partition = 'all' in scope ? undefined : (scope.partition ?? DEFAULT_PARTITION);
    await this.withQueue(name, (rec) => {
      const parts = partition === undefined ? Object.keys(rec.parts) : [partition];
      for (const p of parts) this.dropPartition(rec, p);
    });
  }

  async peek(name: string, options: PeekOptions = {}): Promise<PeekPage> {
    const partition = options.partition ?? DEFAULT_PARTITION;
    const limit = options.limit ?? DEFAULT_PEEK_LIMIT;
    const after = parseCursor(options.cursor);
    return this.readQueue(name, () => {
      const range = { start: [name, partition, after + 1], end: [name, partition, MAX], limit: limit + 1 };
      const rows = [...this.items.getRange(range)];
      const page = rows.slice(0, limit);
      return {
        items: page.map(({ value }) => ({ data: value.d, deliveries: value.n })),
        cursor: rows.length > limit ? String(page[page.length - 1]!.key[2]) : undefined,
      };
    });
  }

  waitForItems(name: string, partition: string, signal: AbortSignal): Promise<void> {
    return waitForPut(this.events, name, partition, signal);
  }

  async close(): Promise<void> {
    await this.env.close();
  }

  /**
   * True when a get would deliver nothing: the partition has no items and no
   * lease of the queue is due to come back. Read from the committed snapshot,
   * so an empty get (a blocked getter's probe) costs no write transaction,
   * which lmdb-js would sync to disk. False for an unknown queue, so that the
   * transaction reports it.
   */
  private nothingToGet(name: string, partition: string): boolean {
    if (!this.queues.doesExist(name)) return false;
    const dueLeases = this.leases.getKeys({ start: [name, 0], end: [name, Date.now() + 1], limit: 1 });
    const items = this.items.getKeys({ start: [name, partition, 0], end: [name, partition, MAX], limit: 1 });
    return [...dueLeases].length === 0 && [...items].length === 0;
  }

  /** Runs `fn` in a write transaction on an existing queue, after expiring what is due. */
  private async withQueue<T>(name: string, fn: (rec: QueueRecord, now: number) => T, save = true): Promise<T> {
    return this.env.transaction(() => {
      const rec = this.queues.get(name);
      if (!rec) throw queueNotFound(name);
      const now = Date.now();
      this.expire(rec, now);
      const result = fn(rec, now);
      if (save) void this.queues.put(name, rec);
      return result;
    });
  }

  /**
   * Runs a read (len, peek) on the committed snapshot when nothing of the
   * queue is due to expire, so that it costs no write transaction (and works
   * while the disk is full); otherwise as withQueue, which expires first.
   */
  private async readQueue<T>(name: string, fn: (rec: QueueRecord) => T): Promise<T> {
    const rec = this.queues.get(name);
    if (!rec) throw queueNotFound(name);
    if (!this.dueToExpire(rec, Date.now())) return fn(rec);
    return this.withQueue(name, fn);
  }

  /** Whether expire() would change anything: a partition past its TTL, or a lease due back. */
  private dueToExpire(rec: QueueRecord, now: number): boolean {
    if (Object.values(rec.parts).some((p) => p.expiresAtMs !== 0 && p.expiresAtMs <= now)) return true;
    return [...this.leases.getKeys({ start: [rec.name, 0], end: [rec.name, now + 1], limit: 1 })].length > 0;
  }

  private expire(rec: QueueRecord, now: number): void {
    for (const [p, part] of Object.entries(rec.parts)) {
      if (part.expiresAtMs !== 0 && part.expiresAtMs <= now) this.dropPartition(rec, p);
    }
    for (const { key, value } of [...this.leases.getRange({ start: [rec.name, 0], end: [rec.name, now + 1] })]) {
      void this.leases.remove(key);
      void this.leaseIds.remove([rec.name, key[2]]);
      const from = rec.parts[value.p];
      if (!from) continue;
      let to = value.p;
      if (value.n >= rec.maxDeliveries) {
        to = DEAD_LETTER_PARTITION;
        from.count--;
        (rec.parts[to] ??= { count: 0, expiresAtMs: 0 }).count++;
      }
      void this.items.put([rec.name, to, value.s], { d: value.d, n: value.n });
    }
  }

  /** Removes a queue with all its partitions, items and leases. */
  private remove(rec: QueueRecord): void {
    for (const p of Object.keys(rec.parts)) this.dropPartition(rec, p);
    void this.queues.remove(rec.name);
  }

  private dropPartition(rec: QueueRecord, partition: string): void {
    const part = rec.parts[partition];
    if (!part) return;
    for (const key of [...this.items.getKeys({ start: [rec.name, partition, 0], end: [rec.name, partition, MAX] })]) {
      void this.items.remove(key);
    }
    for (const { key, value } of [...this.leases.getRange({ start: [rec.name, 0], end: [rec.name, MAX] })]) {
      if (value.p !== partition) continue;
      void this.leases.remove(key);
      void this.leaseIds.remove([rec.name, key[2]]);
    }
    rec.total -= part.count;
    delete rec.parts[partition];
  }
}

function info(rec: QueueRecord): QueueInfo {
  return {
    name: rec.name,
    maxSize: rec.maxSize,
    maxDeliveries: rec.maxDeliveries,
    idleTimeoutMs: rec.idleTimeoutMs ?? 0,
    createdAtMs: rec.createdAtMs,
    lastUsedMs: rec.lastUsedMs ?? rec.createdAtMs,
  };
}
