/**
 * The queue contract. Every backend (LMDB embedded, Redis shared) implements
 * QueueBackend and passes test/queue-contract.test.ts unchanged.
 *
 * Model: a named queue holds partitions; each partition is a FIFO of byte
 * items. Partition '' is the default partition and never expires; any other
 * partition expires (with its items) `partitionTtlMs` after its last put.
 *
 * Delivery: `get` without `ack` removes items for good (each item is delivered
 * at most once, even to concurrent getters). `get` with `ack` leases items: each
 * carries a lease id; `ack` removes them. An item not acked within
 * `visibilityMs` goes back to its partition at its original position, so it is
 * redelivered BEFORE newer items. An item whose lease expires after it has been
 * delivered `maxDeliveries` times moves to DEAD_LETTER_PARTITION instead.
 *
 * Counting: an item counts toward len() and maxSize from its put until it is
 * removed (plain get, ack, clear, drop, partition expiry), leased items and
 * dead letters included.
 *
 * Idle expiry: a queue may have an idle timeout (idleTimeoutMs, 0 = never).
 * Its lastUsedMs starts at createdAtMs and only moves forward, by touch; no
 * other operation changes it. A backend never drops an idle queue by itself:
 * the service calls dropIfIdle, which checks and drops in one atomic step, so
 * a touch is either before it (and the queue stays) or after it (and finds no
 * queue).
 *
 * Argument checks are made once, by ValidatingQueueBackend (validating.ts),
 * which the server and the queue service put around every backend (and the
 * contract suite too); it checks before the backend is called, so a bad
 * argument fails alike everywhere and before any NOT_FOUND. A backend may take
 * as checked: every queue name; settings (given in full: maxSize
 * 1..MAX_MAX_SIZE, maxDeliveries 1..MAX_MAX_DELIVERIES, idleTimeoutMs 0 or
 * MIN_IDLE_TIMEOUT_MS..MAX_IDLE_TIMEOUT_MS); partitions (a string of at most
 * MAX_PARTITION_KEY_BYTES bytes, never DEAD_LETTER_PARTITION in a put);
 * put's items (1..MAX_ITEMS_PER_PUT Buffers of at most MAX_ITEM_BYTES) and
 * partitionTtlMs (1..MAX_PARTITION_TTL_MS, or absent); get's max
 * (1..MAX_ITEMS_PER_GET) and visibilityMs (1..MAX_VISIBILITY_MS); peek's limit
 * (1..MAX_PAGE_ITEMS) and cursor (one parseCursor reads); lease ids
 * (non-empty, at most 128 characters); touch's atMs and dropIfIdle's nowMs
 * (whole, >= 0). What it must still check is what only its storage knows:
 * that the queue exists (or does not, for create) and that a put fits under
 * maxSize (validate.ts has the errors).
 */
export const MAX_ITEM_BYTES = 1024 * 1024;
export const MAX_PARTITION_KEY_BYTES = 64;
export const MAX_ITEMS_PER_PUT = 5000;
export const MAX_ITEMS_PER_GET = 1000;
export const MAX_PAGE_ITEMS = 1000;
/** Items a get returns at most when it does not say. */
export const DEFAULT_GET_MAX = 1;
/** Items a peek page holds at most when it does not say. */
export const DEFAULT_PEEK_LIMIT = 100;
export const DEFAULT_PARTITION = '';
/** Where items go after maxDeliveries unacked deliveries. Not writable by put. */
export const DEAD_LETTER_PARTITION = '__dead__';
export const DEFAULT_MAX_SIZE = 100_000;
export const MAX_MAX_SIZE = 1_000_000_000;
export const DEFAULT_MAX_DELIVERIES = 5;
export const MAX_MAX_DELIVERIES = 1000;
export const DEFAULT_PARTITION_TTL_MS = 24 * 3600_000;
export const MAX_PARTITION_TTL_MS = 7 * 24 * 3600_000;
export const MAX_VISIBILITY_MS = 12 * 3600_000;
/** Shortest idle timeout of a queue (0, never, is also allowed). */
export const MIN_IDLE_TIMEOUT_MS = 1000;
/** Longest idle timeout: as long as a partition may live, a week. */
export const MAX_IDLE_TIMEOUT_MS = MAX_PARTITION_TTL_MS;
/**
 * Lease expiry is not announced by waitForItems; a blocked get should re-check
 * at least this often so redelivered items are picked up.
 */
export const REDELIVERY_POLL_MS = 1000;

export interface QueueSettings {
  /** Most items the queue holds at once (all partitions, leased and dead included). */
  maxSize: number;
  /** Deliveries of one item in ack mode before it moves to the dead-letter partition. */
  maxDeliveries: number;
  /**
   * Idle time after which dropIfIdle drops the queue: 0 (the default) = never,
   * else MIN_IDLE_TIMEOUT_MS to MAX_IDLE_TIMEOUT_MS.
   */
  idleTimeoutMs: number;
}

export interface QueueInfo extends QueueSettings {
  name: string;
  createdAtMs: number;
  /** Last touch (or creation). */
  lastUsedMs: number;
}

export interface PutOptions {
  partition?: string;
  /** Ignored for the default partition. Defaults to DEFAULT_PARTITION_TTL_MS. */
  partitionTtlMs?: number;
}

export interface GetOptions {
  partition?: string;
  /** 1..MAX_ITEMS_PER_GET, default 1. */
  max?: number;
  /** Lease items instead of removing them. */
  ack?: { visibilityMs: number };
}

export interface DeliveredItem {
  data: Buffer;
  /** Present only in ack mode. */
  leaseId?: string;
  /** How many times this item has been delivered, this time included. */
  deliveries: number;
}

export interface PeekOptions {
  partition?: string;
  /** From a previous page; omit for the first page. */
  cursor?: string;
  /** 1..MAX_PAGE_ITEMS, default 100. */
  limit?: number;
}

export interface PeekPage {
  /** Deliverable items in delivery order (leased items are not shown). */
  items: { data: Buffer; deliveries: number }[];
  /** Pass to the next peek; undefined when this is the last page. */
  cursor?: string;
}

export type LenScope = { partition?: string } | { total: true };
export type ClearScope = { partition?: string } | { all: true };

export interface QueueBackend {
  /** Creates an empty queue. AlreadyExistsError if the name is taken. */
  create(name: string, settings?: Partial<QueueSettings>): Promise<QueueInfo>;
  /** Removes a queue and all its items and leases. NotFoundError if unknown. */
  drop(name: string): Promise<void>;
  /** All queues, sorted by name. */
  list(): Promise<QueueInfo[]>;
  /** Settings of one queue. NotFoundError if unknown. */
  info(name: string): Promise<QueueInfo>;
  /**
   * Marks a queue as used: its lastUsedMs becomes max(lastUsedMs, atMs), atMs
   * defaulting to now. NotFoundError if unknown.
   */
  touch(name: string, atMs?: number): Promise<void>;
  /**
   * Drops the queue with everything drop removes (items, leases, partitions),
   * atomically with the check, if it has an idle timeout and lastUsedMs +
   * idleTimeoutMs <= nowMs (default now). Returns whether it was dropped: false
   * for a queue that is fresh, never expires or does not exist.
   */
  dropIfIdle(name: string, nowMs?: number): Promise<boolean>;
  /**
   * Appends items, in order, to the end of one partition, atomically: all or
   * none. Refreshes the partition's expiry. QueueFullError (nothing written)
   * if the queue would hold more than maxSize items.
   */
  put(name: string, items: Buffer[], options?: PutOptions): Promise<void>;
  /**
   * Up to `max` items from the head of a partition, without waiting: an empty
   * array when none are deliverable. Atomic with respect to other getters.
   */
  get(name: string, options?: GetOptions): Promise<DeliveredItem[]>;
  /**
   * Removes leased items for good. Returns how many leases were still held;
   * unknown or expired lease ids are ignored (the item may be redelivered).
   */
  ack(name: string, leaseIds: string[]): Promise<number>;
  /** Items held by one partition (default '') or by the whole queue. */
  len(name: string, scope?: LenScope): Promise<number>;
  /**
   * The partitions holding items, and how many each holds (as len() counts
   * them; the dead-letter partition is DEAD_LETTER_PARTITION), sorted by name.
   * Expired partitions are not listed.
   */
  partitions(name: string): Promise<{ partition: string; length: number }[]>;
  /** Removes the items (and leases) of one partition or of all partitions. */
  clear(name: string, scope?: ClearScope): Promise<void>;
  /** Reads deliverable items without removing them, one page at a time. */
  peek(name: string, options?: PeekOptions): Promise<PeekPage>;
  /**
   * Resolves after a put to this queue and partition, or when `signal`
   * aborts. Wakes may be spurious: the caller calls get again. To avoid a
   * lost wake-up, call this BEFORE the get that found nothing, and also
   * re-check every REDELIVERY_POLL_MS (lease expiry is not announced).
   * LMDB: an in-process EventEmitter. Redis: the pub/sub channel
   * QUEUE_EVENTS_CHANNEL, published by the put script.
   */
  waitForItems(name: string, partition: string, signal: AbortSignal): Promise<void>;
  close(): Promise<void>;
}
