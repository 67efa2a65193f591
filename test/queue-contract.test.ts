/**
 * The QueueBackend contract, run unchanged against LMDB, Redis and a Redis
 * Cluster, each behind ValidatingQueueBackend as the server runs it, and
 * against a Redis in a container (testcontainers), skipped with the reason
 * where Docker or the image is not.
 * Timing-dependent checks poll with a deadline and never assert durations.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isStowageError } from '../src/common/errors.js';
import { LmdbQueueBackend } from '../src/queue/lmdb.js';
import { RedisQueueBackend } from '../src/queue/redis.js';
import { ValidatingQueueBackend } from '../src/queue/validating.js';
import {
  DEAD_LETTER_PARTITION,
  MAX_IDLE_TIMEOUT_MS,
  MAX_ITEM_BYTES,
  MAX_ITEMS_PER_GET,
  MAX_MAX_DELIVERIES,
  MAX_PAGE_ITEMS,
  MAX_PARTITION_KEY_BYTES,
  MAX_PARTITION_TTL_MS,
  MAX_VISIBILITY_MS,
  MIN_IDLE_TIMEOUT_MS,
  type QueueBackend,
  type QueueSettings,
} from '../src/queue/types.js';
import { QueueFullError } from '../src/queue/validate.js';
import { skipWithoutContainers, startRedisContainer } from './support/containers.js';
import { removeDir, tempDir, uniqueName } from './support/processes.js';
import { startRedis, type RedisServer } from './support/redis.js';
import { startRedisCluster } from './support/redis-cluster.js';

interface Setup {
  backend: QueueBackend;
  /** Closes and opens the backend again on the same storage. */
  reopen(): Promise<QueueBackend>;
  /** Redis only: stop and restart the server. */
  redis?: RedisServer;
  teardown(): Promise<void>;
}

const setups: [string, () => Promise<Setup>][] = [
  [
    'lmdb',
    async () => {
      const dir = tempDir('queue-lmdb');
      const s: Setup = {
        backend: new ValidatingQueueBackend(new LmdbQueueBackend(dir)),
        async reopen() {
          await s.backend.close();
          return (s.backend = new ValidatingQueueBackend(new LmdbQueueBackend(dir)));
        },
        async teardown() {
          await s.backend.close();
          removeDir(dir);
        },
      };
      return s;
    },
  ],
  [
    'redis',
    async () => {
      const redis = await startRedis();
      const s: Setup = {
        backend: new ValidatingQueueBackend(await RedisQueueBackend.connect({ url: redis.url })),
        redis,
        async reopen() {
          await s.backend.close();
          return (s.backend = new ValidatingQueueBackend(await RedisQueueBackend.connect({ url: redis.url })));
        },
        async teardown() {
          await s.backend.close();
          await redis.stop();
          removeDir(redis.dir);
        },
      };
      return s;
    },
  ],
  [
    // 3 masters with a replica each; queues of one run hash to different shards.
    'redis-cluster',
    async () => {
      const cluster = await startRedisCluster();
      const s: Setup = {
        backend: new ValidatingQueueBackend(await RedisQueueBackend.connect({ url: cluster.url })),
        async reopen() {
          await s.backend.close();
          return (s.backend = new ValidatingQueueBackend(await RedisQueueBackend.connect({ url: cluster.url })));
        },
        async teardown() {
          await s.backend.close();
          await cluster.stop();
          removeDir(cluster.dir);
        },
      };
      return s;
    },
  ],
];

/** Debian's redis-server in a container of local/redis, started through testcontainers. */
const containerSetups: [string, () => Promise<Setup>][] = [
  [
    'redis in a container',
    async () => {
      const redis = await startRedisContainer();
      let backend: QueueBackend;
      try {
        backend = new ValidatingQueueBackend(await RedisQueueBackend.connect({ url: redis.url }));
      } catch (err) {
        await redis.stop();
        throw err;
      }
      const s: Setup = {
        backend,
        async reopen() {
          await s.backend.close();
          return (s.backend = new ValidatingQueueBackend(await RedisQueueBackend.connect({ url: redis.url })));
        },
        async teardown() {
          try {
            await s.backend.close();
          } finally {
            await redis.stop();
          }
        },
      };
      return s;
    },
  ],
];

const b = (s: string) => Buffer.from(s);
const texts = (items: { data: Buffer }[]) => items.map((i) => i.data.toString());

async function until<T>(what: string, fn: () => Promise<T>, ok: (v: T) => boolean, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    let v: T | undefined;
    let err: unknown;
    try {
      v = await fn();
      if (ok(v)) return v;
    } catch (e) {
      err = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${String(err ?? JSON.stringify(v))}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    return isStowageError(err) ? err.code : `not a StowageError: ${String(err)}`;
  }
  return 'resolved';
}

function contract(kind: string, make: () => Promise<Setup>): void {
  let s: Setup;
  let q: QueueBackend;
  beforeAll(async () => {
    s = await make();
    q = s.backend;
  });
  afterAll(async () => s?.teardown());

  async function fresh(settings?: Partial<QueueSettings>): Promise<string> {
    const name = uniqueName('q');
    await q.create(name, settings);
    return name;
  }

  it('create, info, list, drop; duplicate create and unknown queue', async () => {
    const name = await fresh({ maxSize: 10, maxDeliveries: 2 });
    expect(await q.info(name)).toMatchObject({ name, maxSize: 10, maxDeliveries: 2 });
    expect((await q.list()).map((i) => i.name)).toContain(name);
    expect(await code(q.create(name))).toBe('ALREADY_EXISTS');
    // A partition emptied by get is still dropped cleanly.
    await q.put(name, [b('x')], { partition: 'emptied' });
    await q.get(name, { partition: 'emptied' });
    await q.drop(name);
    expect((await q.list()).map((i) => i.name)).not.toContain(name);
    // Thunks: each call starts only when awaited, so no rejection goes unhandled.
    const ops = [
      () => q.put(name, [b('x')]),
      () => q.get(name),
      () => q.len(name),
      () => q.partitions(name),
      () => q.peek(name),
      () => q.ack(name, ['x']),
      () => q.drop(name),
      () => q.info(name),
      () => q.touch(name),
    ];
    for (const op of ops) expect(await code(op())).toBe('NOT_FOUND');
    await expect(q.get(name)).rejects.toThrow(`(create it with: stowage queue create ${name})`);
  });

  it('stores an idle timeout and shows it in info and list', async () => {
    const before = Date.now();
    const name = uniqueName('q');
    const created = await q.create(name, { idleTimeoutMs: 60_000 });
    expect(created).toMatchObject({ name, idleTimeoutMs: 60_000, lastUsedMs: created.createdAtMs });
    expect(created.createdAtMs).toBeGreaterThanOrEqual(before - 1000);
    expect(await q.info(name)).toEqual(created);
    expect((await q.list()).find((i) => i.name === name)).toEqual(created);
    const never = await fresh();
    expect(await q.info(never)).toMatchObject({ idleTimeoutMs: 0 });
    const longest = await fresh({ idleTimeoutMs: MAX_IDLE_TIMEOUT_MS });
    expect((await q.info(longest)).idleTimeoutMs).toBe(MAX_IDLE_TIMEOUT_MS);
  });

  it('rejects an invalid idle timeout, creating nothing', async () => {
    const name = uniqueName('q');
    for (const bad of [0.5, -1, MIN_IDLE_TIMEOUT_MS - 1, MAX_IDLE_TIMEOUT_MS + 1, NaN]) {
      const err = await q.create(name, { idleTimeoutMs: bad }).catch((e: unknown) => e);
      expect(isStowageError(err, 'INVALID_ARGUMENT'), String(err)).toBe(true);
      expect((err as Error).message).toContain('idleTimeoutMs');
      expect(await code(q.info(name))).toBe('NOT_FOUND');
    }
    await q.create(name, { idleTimeoutMs: MIN_IDLE_TIMEOUT_MS });
    expect((await q.info(name)).idleTimeoutMs).toBe(MIN_IDLE_TIMEOUT_MS);
  });

  it('touch moves lastUsedMs forward, never back', async () => {
    const name = await fresh({ idleTimeoutMs: 60_000 });
    const { lastUsedMs: start } = await q.info(name);
    await q.touch(name, start + 5000);
    expect((await q.info(name)).lastUsedMs).toBe(start + 5000);
    await q.touch(name, start + 1000);
    expect((await q.info(name)).lastUsedMs).toBe(start + 5000);
    await q.touch(name, start + 9000);
    expect((await q.info(name)).lastUsedMs).toBe(start + 9000);
    // Without atMs the clock is now, which is before start + 9000.
    await q.touch(name);
    expect((await q.info(name)).lastUsedMs).toBe(start + 9000);
    expect(await code(q.touch(name, -1))).toBe('INVALID_ARGUMENT');
    expect(await code(q.touch(name, 1.5))).toBe('INVALID_ARGUMENT');
    expect(await code(q.touch('a/b'))).toBe('INVALID_ARGUMENT');
  });

  it('drops an idle queue with its items, leases and partitions, and only then', async () => {
    const idle = 60_000;
    const name = await fresh({ idleTimeoutMs: idle });
    await q.put(name, [b('1'), b('2')]);
    await q.put(name, [b('p')], { partition: 'p', partitionTtlMs: 3_600_000 });
    const [leased] = await q.get(name, { ack: { visibilityMs: 60_000 } });
    const { lastUsedMs } = await q.info(name);
    expect(await q.dropIfIdle(name, lastUsedMs)).toBe(false);
    expect(await q.dropIfIdle(name, lastUsedMs + idle - 1)).toBe(false);
    expect(await q.dropIfIdle(name)).toBe(false);
    // A touch pushes the deadline out.
    await q.touch(name, lastUsedMs + 1000);
    expect(await q.dropIfIdle(name, lastUsedMs + idle)).toBe(false);
    expect(await q.len(name, { total: true })).toBe(3);
    expect(await q.dropIfIdle(name, lastUsedMs + 1000 + idle)).toBe(true);
    expect((await q.list()).map((i) => i.name)).not.toContain(name);
    expect(await code(q.info(name))).toBe('NOT_FOUND');
    expect(await code(q.get(name))).toBe('NOT_FOUND');
    expect(await q.dropIfIdle(name, lastUsedMs + 1000 + idle)).toBe(false);
    // Its items and leases went with it.
    await q.create(name);
    expect(await q.len(name, { total: true })).toBe(0);
    expect(await q.len(name, { partition: 'p' })).toBe(0);
    expect(await q.get(name, { max: 10 })).toEqual([]);
    expect(await q.get(name, { partition: 'p' })).toEqual([]);
    expect(await q.ack(name, [leased!.leaseId!])).toBe(0);
    expect((await q.list()).map((i) => i.name)).toContain(name);
  });

  it('never drops a queue without an idle timeout, nor an unknown one', async () => {
    const name = await fresh();
    await q.put(name, [b('x')]);
    expect(await q.dropIfIdle(name, Number.MAX_SAFE_INTEGER)).toBe(false);
    expect(await q.len(name)).toBe(1);
    expect(await q.dropIfIdle(uniqueName('missing'), Number.MAX_SAFE_INTEGER)).toBe(false);
    expect(await code(q.dropIfIdle('a/b'))).toBe('INVALID_ARGUMENT');
    expect(await code(q.dropIfIdle(name, -5))).toBe('INVALID_ARGUMENT');
  });

  it('is FIFO per partition', async () => {
    const name = await fresh();
    await q.put(name, [b('a1'), b('a2')]);
    await q.put(name, [b('p1')], { partition: 'p' });
    await q.put(name, [b('a3')]);
    await q.put(name, [b('p2'), b('p3')], { partition: 'p' });
    expect(texts(await q.get(name, { max: 10 }))).toEqual(['a1', 'a2', 'a3']);
    expect(texts(await q.get(name, { partition: 'p', max: 2 }))).toEqual(['p1', 'p2']);
    expect(texts(await q.get(name, { partition: 'p', max: 2 }))).toEqual(['p3']);
    expect(await q.get(name)).toEqual([]);
    const bytes = Buffer.from([0, 255, 1, 254]);
    await q.put(name, [bytes]);
    expect((await q.get(name))[0]!.data.equals(bytes)).toBe(true);
  });

  it('delivers each item at most once to concurrent getters in plain mode', async () => {
    const name = await fresh();
    const n = 200;
    await q.put(name, Array.from({ length: n }, (_, i) => b(String(i))));
    const got = (await Promise.all(Array.from({ length: 10 }, () => q.get(name, { max: 30 })))).flat();
    const rest = await q.get(name, { max: 1000 });
    const all = texts([...got, ...rest]);
    expect(all.length).toBe(n);
    expect(new Set(all).size).toBe(n);
    expect(await q.len(name)).toBe(0);
  });

  it('leases each item to one getter at a time in ack mode', async () => {
    const name = await fresh();
    await q.put(name, Array.from({ length: 100 }, (_, i) => b(String(i))));
    const got = (
      await Promise.all(Array.from({ length: 8 }, () => q.get(name, { max: 20, ack: { visibilityMs: 60_000 } })))
    ).flat();
    expect(got.length).toBe(100);
    expect(new Set(texts(got)).size).toBe(100);
    expect(new Set(got.map((i) => i.leaseId)).size).toBe(100);
    expect(await q.get(name, { ack: { visibilityMs: 60_000 } })).toEqual([]);
    expect(await q.ack(name, got.map((i) => i.leaseId!))).toBe(100);
    expect(await q.len(name, { total: true })).toBe(0);
  });

  it('leases in ack mode: acked items are gone, unacked ones come back first, then go to dead letters', async () => {
    const name = await fresh({ maxDeliveries: 2 });
    await q.put(name, [b('a'), b('b'), b('c')]);
    const first = await q.get(name, { max: 2, ack: { visibilityMs: 200 } });
    expect(texts(first)).toEqual(['a', 'b']);
    expect(first.every((i) => typeof i.leaseId === 'string' && i.deliveries === 1)).toBe(true);
    expect(await q.ack(name, [first[0]!.leaseId!, 'no-such-lease'])).toBe(1);
    expect(await q.len(name)).toBe(2);
    // 'b' is redelivered before the newer 'c'.
    const again = await until('redelivery of b', () => q.peek(name), (p) => p.items.length === 2);
    expect(texts(again.items)).toEqual(['b', 'c']);
    const second = await q.get(name, { max: 1, ack: { visibilityMs: 100 } });
    expect(texts(second)).toEqual(['b']);
    expect(second[0]!.deliveries).toBe(2);
    await until('dead letter', () => q.len(name, { partition: DEAD_LETTER_PARTITION }), (n) => n === 1);
    expect(texts((await q.peek(name, { partition: DEAD_LETTER_PARTITION })).items)).toEqual(['b']);
    expect(await q.len(name)).toBe(1);
    expect(await q.len(name, { total: true })).toBe(2);
    expect(await q.partitions(name)).toEqual([
      { partition: '', length: 1 },
      { partition: DEAD_LETTER_PARTITION, length: 1 },
    ]);
    expect(await q.ack(name, [second[0]!.leaseId!])).toBe(0);
    expect(await code(q.put(name, [b('x')], { partition: DEAD_LETTER_PARTITION }))).toBe('INVALID_ARGUMENT');
  });

  it('expires a partition partitionTtlMs after its last put, but not the default partition', async () => {
    const name = await fresh();
    await q.put(name, [b('keep')], { partitionTtlMs: 50 });
    await q.put(name, [b('x')], { partition: 'short', partitionTtlMs: 150 });
    await q.put(name, [b('y')], { partition: 'long', partitionTtlMs: 3_600_000 });
    await until('partition expiry', () => q.len(name, { partition: 'short' }), (n) => n === 0);
    expect(await q.partitions(name)).toEqual([
      { partition: '', length: 1 },
      { partition: 'long', length: 1 },
    ]);
    expect(await q.len(name, { partition: 'long' })).toBe(1);
    expect(await q.len(name)).toBe(1);
    expect(await q.len(name, { total: true })).toBe(2);
    expect(await q.get(name, { partition: 'short' })).toEqual([]);
  });

  it('len and clear by partition and for the whole queue', async () => {
    const name = await fresh();
    await q.put(name, [b('1'), b('2')]);
    await q.put(name, [b('3')], { partition: 'p' });
    await q.get(name, { ack: { visibilityMs: 60_000 } });
    expect(await q.len(name)).toBe(2);
    expect(await q.len(name, { partition: 'p' })).toBe(1);
    expect(await q.len(name, { partition: 'none' })).toBe(0);
    expect(await q.len(name, { total: true })).toBe(3);
    expect(await q.partitions(name)).toEqual([
      { partition: '', length: 2 },
      { partition: 'p', length: 1 },
    ]);
    await q.clear(name, { partition: 'p' });
    expect(await q.partitions(name)).toEqual([{ partition: '', length: 2 }]);
    expect(await q.len(name, { total: true })).toBe(2);
    await q.clear(name);
    expect(await q.len(name, { total: true })).toBe(0);
    await q.put(name, [b('4')], { partition: 'a' });
    await q.put(name, [b('5')], { partition: 'b' });
    await q.clear(name, { all: true });
    expect(await q.partitions(name)).toEqual([]);
    expect(await q.len(name, { total: true })).toBe(0);
    expect(await q.get(name, { partition: 'a' })).toEqual([]);
  });

  it('peeks in pages without removing', async () => {
    const name = await fresh();
    await q.put(name, Array.from({ length: 25 }, (_, i) => b(`i${i}`)));
    const seen: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = await q.peek(name, { limit: 10, cursor });
      seen.push(...texts(page.items));
      cursor = page.cursor;
      pages++;
    } while (cursor !== undefined);
    expect(pages).toBe(3);
    expect(seen).toEqual(Array.from({ length: 25 }, (_, i) => `i${i}`));
    expect(await q.len(name)).toBe(25);
    expect(await code(q.peek(name, { cursor: 'junk' }))).toBe('INVALID_ARGUMENT');
  });

  it('refuses a put that does not fit under maxSize, writing nothing', async () => {
    const name = await fresh({ maxSize: 3 });
    await q.put(name, [b('1'), b('2')]);
    const err = await q.put(name, [b('3'), b('4')]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QueueFullError);
    expect(err).toMatchObject({ free: 1, requested: 2, code: 'FAILED_PRECONDITION' });
    expect(await q.len(name)).toBe(2);
    await q.put(name, [b('3')]);
    await q.get(name);
    await q.put(name, [b('4')], { partition: 'p' });
    expect(await q.len(name, { total: true })).toBe(3);
  });

  it('enforces limits and rejects bad input', async () => {
    const name = await fresh();
    const bad = [
      q.create('bad name'),
      q.create(uniqueName(), { maxSize: 0 }),
      q.get('a/b'),
      q.put(name, []),
      q.put(name, [Buffer.alloc(MAX_ITEM_BYTES + 1)]),
      q.put(name, ['text' as unknown as Buffer]),
      q.put(name, [b('x')], { partition: 'p'.repeat(MAX_PARTITION_KEY_BYTES + 1) }),
      q.put(name, [b('x')], { partition: 'p', partitionTtlMs: 0 }),
      q.get(name, { max: 0 }),
      q.get(name, { ack: { visibilityMs: -1 } }),
      q.peek(name, { limit: 100_000 }),
      q.ack(name, ['']),
    ];
    for (const p of bad) expect(await code(p)).toBe('INVALID_ARGUMENT');
    await q.put(name, [Buffer.alloc(MAX_ITEM_BYTES)], { partition: 'p'.repeat(MAX_PARTITION_KEY_BYTES) });
    const [item] = await q.get(name, { partition: 'p'.repeat(MAX_PARTITION_KEY_BYTES) });
    expect(item!.data.length).toBe(MAX_ITEM_BYTES);
  });

  it('rejects a bad argument with the same words on every backend, before looking the queue up', async () => {
    const missing = uniqueName('missing');
    const long = 'p'.repeat(MAX_PARTITION_KEY_BYTES + 1);
    const tooLong = `partition key is ${MAX_PARTITION_KEY_BYTES + 1} bytes, over the limit of ${MAX_PARTITION_KEY_BYTES}`;
    const cases: [() => Promise<unknown>, string][] = [
      [() => q.put(missing, [b('x')], { partition: DEAD_LETTER_PARTITION }), `partition ${DEAD_LETTER_PARTITION} is reserved for dead letters`],
      [() => q.put(missing, []), 'put needs at least one item'],
      [() => q.put(missing, [b('x')], { partition: 'p', partitionTtlMs: 0 }), `partitionTtlMs must be an integer from 1 to ${MAX_PARTITION_TTL_MS}, got 0`],
      [() => q.get(missing, { max: 0 }), `max must be an integer from 1 to ${MAX_ITEMS_PER_GET}, got 0`],
      [() => q.get(missing, { ack: { visibilityMs: 0 } }), `visibilityMs must be an integer from 1 to ${MAX_VISIBILITY_MS}, got 0`],
      [() => q.get(missing, { partition: long }), tooLong],
      [() => q.len(missing, { partition: long }), tooLong],
      [() => q.clear(missing, { partition: long }), tooLong],
      [() => q.peek(missing, { limit: 0 }), `limit must be an integer from 1 to ${MAX_PAGE_ITEMS}, got 0`],
      [() => q.peek(missing, { cursor: 'x' }), 'invalid cursor "x": pass back the cursor a previous page returned'],
      [() => q.ack(missing, ['']), 'lease ids must be non-empty strings'],
      [() => q.touch(missing, -1), `atMs must be an integer from 0 to ${Number.MAX_SAFE_INTEGER}, got -1`],
      [() => q.create(missing, { maxDeliveries: 0 }), `maxDeliveries must be an integer from 1 to ${MAX_MAX_DELIVERIES}, got 0`],
      [() => q.info('a/b'), 'invalid queue name "a/b": use 1 to 64 characters from A-Z a-z 0-9 . _ - (not "." or "..")'],
    ];
    for (const [call, message] of cases) {
      const err = await call().catch((e: unknown) => e);
      expect(isStowageError(err, 'INVALID_ARGUMENT'), String(err)).toBe(true);
      expect((err as Error).message).toBe(message);
    }
    expect(await code(q.info(missing))).toBe('NOT_FOUND');
  });

  it('wakes a waiter when a put lands in its partition', async () => {
    const name = await fresh();
    const ctl = new AbortController();
    let woke = false;
    const waiting = q.waitForItems(name, 'p', ctl.signal).then(() => (woke = true));
    await q.put(name, [b('other')], { partition: 'q' });
    await new Promise((r) => setTimeout(r, 50));
    expect(woke).toBe(false);
    await q.put(name, [b('mine')], { partition: 'p' });
    await waiting;
    expect(texts(await q.get(name, { partition: 'p' }))).toEqual(['mine']);
    const aborted = new AbortController();
    const w = q.waitForItems(name, 'p', aborted.signal);
    aborted.abort();
    await w;
    ctl.abort();
  });

  it('keeps items and idle settings across close and reopen', async () => {
    const name = await fresh({ idleTimeoutMs: 30_000 });
    await q.put(name, [b('durable1'), b('durable2')], { partition: 'd' });
    await q.touch(name, 4_000_000_000_000);
    const before = await q.info(name);
    q = await s.reopen();
    expect(await q.info(name)).toEqual({ ...before, idleTimeoutMs: 30_000, lastUsedMs: 4_000_000_000_000 });
    expect(texts(await q.get(name, { partition: 'd', max: 5 }))).toEqual(['durable1', 'durable2']);
    expect(await q.dropIfIdle(name, 4_000_000_029_999)).toBe(false);
    expect(await q.dropIfIdle(name, 4_000_000_030_000)).toBe(true);
  });

  // Only Redis can go away under a running backend.
  if (kind === 'redis')
  it('fails fast with UnavailableError naming the URL while Redis is down, and recovers', async () => {
    if (!s.redis) throw new Error('the redis setup has no server handle');
    const name = await fresh();
    await s.redis.stop();
    const err = await q.put(name, [b('x')]).catch((e: unknown) => e);
    expect(isStowageError(err, 'UNAVAILABLE')).toBe(true);
    expect((err as Error).message).toContain(s.redis.url);
    await s.redis.restart();
    // A restarted server without persistence is empty: the queue is gone.
    await until('redis recovery', () => code(q.get(name)), (c) => c === 'NOT_FOUND');
    await q.create(name);
    await q.put(name, [b('back')]);
    expect(texts(await q.get(name))).toEqual(['back']);
    // Wake-ups work again once the subscriber connection is back.
    await until(
      'wake-up after recovery',
      async () => {
        const ctl = new AbortController();
        const timer = setTimeout(() => ctl.abort(), 200);
        let woke = false;
        const waiting = q.waitForItems(name, '', ctl.signal).then(() => (woke = !ctl.signal.aborted));
        await q.put(name, [b('ping')]);
        await waiting;
        clearTimeout(timer);
        return woke;
      },
      (woke) => woke,
    );
  });
}

describe.each(setups)('QueueBackend on %s', contract);
describe.skipIf(skipWithoutContainers('the QueueBackend contract on Redis in a container')).each(containerSetups)(
  'QueueBackend on %s',
  contract,
);
