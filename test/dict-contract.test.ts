/**
 * One contract suite for every DictBackend (LMDB in a temp dir, Redis on a
 * redis-server started here), each behind ValidatingDictBackend as the server
 * runs it, then what only one backend promises: LMDB keeps
 * data across close and reopen; Redis fails fast with UnavailableError while
 * the server is down and works again once it is back. The suite runs on a
 * Redis Cluster too (3 masters, 3 replicas): list() and every script work
 * when dicts hash to different shards; and on a Redis in a container
 * (testcontainers), skipped with the reason where Docker or the image is not.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode, isStowageError } from '../src/common/errors.js';
import { LmdbDictBackend } from '../src/dict/lmdb.js';
import { RedisDictBackend } from '../src/dict/redis.js';
import { ValidatingDictBackend } from '../src/dict/validating.js';
import {
  MAX_BATCH_ENTRIES,
  MAX_KEY_BYTES,
  MAX_SCAN_LIMIT,
  MAX_TTL_MS,
  MAX_VALUE_BYTES,
  MIN_IDLE_TIMEOUT_MS,
  type DictBackend,
  type DictEntry,
} from '../src/dict/types.js';
import { skipWithoutContainers, startRedisContainer, type RedisContainer } from './support/containers.js';
import { removeDir, tempDir, uniqueName } from './support/processes.js';
import { startRedis, type RedisServer } from './support/redis.js';
import { startRedisCluster, type RedisCluster } from './support/redis-cluster.js';

interface Setup {
  name: string;
  start(): Promise<DictBackend>;
  stop(): Promise<void>;
}

function lmdbSetup(): Setup {
  let dir = '';
  return {
    name: 'lmdb',
    async start() {
      dir = tempDir('dict-lmdb');
      return new ValidatingDictBackend(new LmdbDictBackend(dir));
    },
    async stop() {
      removeDir(dir);
    },
  };
}

function redisSetup(): Setup {
  let server: RedisServer | undefined;
  return {
    name: 'redis',
    async start() {
      server = await startRedis();
      return new ValidatingDictBackend(new RedisDictBackend(server.url));
    },
    async stop() {
      await server?.stop();
      if (server) removeDir(server.dir);
    },
  };
}

/** Debian's redis-server in a container of local/redis, started through testcontainers. */
function redisContainerSetup(): Setup {
  let redis: RedisContainer | undefined;
  return {
    name: 'redis in a container',
    async start() {
      redis = await startRedisContainer();
      return new ValidatingDictBackend(new RedisDictBackend(redis.url));
    },
    async stop() {
      await redis?.stop();
    },
  };
}

/** A 3-master Redis Cluster (one replica each), reached through every node as seeds. */
function redisClusterSetup(): Setup {
  let cluster: RedisCluster | undefined;
  return {
    name: 'redis-cluster',
    async start() {
      cluster = await startRedisCluster();
      return new ValidatingDictBackend(new RedisDictBackend(cluster.url));
    },
    async stop() {
      await cluster?.stop();
      if (cluster) removeDir(cluster.dir);
    },
  };
}

const b = (s: string) => Buffer.from(s);

async function rejectsWith(p: Promise<unknown>, code: ErrorCode, text?: string): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isStowageError(err, code), `expected ${code}, got ${String(err)}`).toBe(true);
  if (text !== undefined) expect((err as Error).message).toContain(text);
}

/** Polls `probe` until it returns true, failing after `ms`. */
async function eventually(probe: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

function contract(setup: Setup): void {
  let dicts: DictBackend;
  const created: string[] = [];

  beforeAll(async () => {
    dicts = await setup.start();
  });
  afterEach(async () => {
    for (const name of created.splice(0)) await dicts.drop(name).catch(() => undefined);
  });
  afterAll(async () => {
    try {
      await dicts?.close();
    } finally {
      await setup.stop();
    }
  });

  async function fresh(): Promise<string> {
    const name = uniqueName('dict');
    created.push(name);
    expect(await dicts.create(name)).toBe(true);
    return name;
  }

  it('creates, lists, checks and drops dicts', async () => {
    const d = await fresh();
    expect(await dicts.exists(d)).toBe(true);
    expect((await dicts.list()).map((i) => i.name)).toContain(d);
    await rejectsWith(dicts.create(d), ErrorCode.ALREADY_EXISTS, d);
    expect(await dicts.create(d, { existOk: true })).toBe(false);
    await dicts.put(d, b('k'), b('v'));
    await dicts.drop(d);
    expect(await dicts.exists(d)).toBe(false);
    expect((await dicts.list()).map((i) => i.name)).not.toContain(d);
    await rejectsWith(dicts.drop(d), ErrorCode.NOT_FOUND);
    // A re-created dict starts empty.
    await dicts.create(d);
    expect(await dicts.len(d)).toBe(0);
    expect(await dicts.get(d, b('k'))).toBeUndefined();
  });

  it('rejects every operation on an unknown dict with a hint', async () => {
    const d = uniqueName('missing');
    const ops: (() => Promise<unknown>)[] = [
      () => dicts.drop(d),
      () => dicts.get(d, b('k')),
      () => dicts.getMany(d, [b('k')]),
      () => dicts.put(d, b('k'), b('v')),
      () => dicts.contains(d, b('k')),
      () => dicts.len(d),
      () => dicts.update(d, [[b('k'), b('v')]]),
      () => dicts.pop(d, b('k')),
      () => dicts.delete(d, b('k')),
      () => dicts.clear(d),
      () => dicts.scan(d, { limit: 10 }),
      () => dicts.incr(d, b('k')),
      () => dicts.compareAndSet(d, b('k'), 0, b('v')),
      () => dicts.info(d),
      () => dicts.touch(d),
    ];
    for (const op of ops) await rejectsWith(op(), ErrorCode.NOT_FOUND, `(create it with: stowage dict create ${d})`);
    expect(await dicts.dropIfIdle(d, Number.MAX_SAFE_INTEGER)).toBe(false);
    expect(await dicts.exists(d)).toBe(false);
  });

  it('stores an idle timeout and shows it in info and list', async () => {
    const d = uniqueName('dict');
    created.push(d);
    const before = Date.now();
    expect(await dicts.create(d, { idleTimeoutMs: 60_000 })).toBe(true);
    const info = await dicts.info(d);
    expect(info).toMatchObject({ name: d, idleTimeoutMs: 60_000 });
    expect(info.createdAtMs).toBeGreaterThanOrEqual(before - 1000);
    expect(info.lastUsedMs).toBe(info.createdAtMs);
    expect((await dicts.list()).find((i) => i.name === d)).toEqual(info);
    // existOk keeps the existing settings.
    expect(await dicts.create(d, { existOk: true, idleTimeoutMs: 5000 })).toBe(false);
    expect(await dicts.info(d)).toEqual(info);
    const never = await fresh();
    expect(await dicts.info(never)).toMatchObject({ name: never, idleTimeoutMs: 0 });
    const list = await dicts.list();
    expect(list.map((i) => i.name)).toEqual(list.map((i) => i.name).sort());
    await rejectsWith(dicts.info('a/b'), ErrorCode.INVALID_ARGUMENT);
  });

  it('rejects an invalid idle timeout, creating nothing', async () => {
    const d = uniqueName('dict');
    created.push(d);
    for (const bad of [0.5, -1, MIN_IDLE_TIMEOUT_MS - 1, MAX_TTL_MS + 1, NaN]) {
      await rejectsWith(dicts.create(d, { idleTimeoutMs: bad }), ErrorCode.INVALID_ARGUMENT, 'idleTimeoutMs');
      expect(await dicts.exists(d)).toBe(false);
    }
    expect(await dicts.create(d, { idleTimeoutMs: MIN_IDLE_TIMEOUT_MS })).toBe(true);
    expect((await dicts.info(d)).idleTimeoutMs).toBe(MIN_IDLE_TIMEOUT_MS);
    const longest = uniqueName('dict');
    created.push(longest);
    expect(await dicts.create(longest, { idleTimeoutMs: MAX_TTL_MS })).toBe(true);
    expect((await dicts.info(longest)).idleTimeoutMs).toBe(MAX_TTL_MS);
  });

  it('touch moves lastUsedMs forward, never back', async () => {
    const d = await fresh();
    const { lastUsedMs: start } = await dicts.info(d);
    await dicts.touch(d, start + 5000);
    expect((await dicts.info(d)).lastUsedMs).toBe(start + 5000);
    await dicts.touch(d, start + 1000);
    expect((await dicts.info(d)).lastUsedMs).toBe(start + 5000);
    await dicts.touch(d, start + 9000);
    expect((await dicts.info(d)).lastUsedMs).toBe(start + 9000);
    // Without atMs the clock is now, which is before start + 9000.
    await dicts.touch(d);
    expect((await dicts.info(d)).lastUsedMs).toBe(start + 9000);
    await rejectsWith(dicts.touch(d, -1), ErrorCode.INVALID_ARGUMENT);
    await rejectsWith(dicts.touch(d, 1.5), ErrorCode.INVALID_ARGUMENT);
    await rejectsWith(dicts.touch('a/b'), ErrorCode.INVALID_ARGUMENT);
    const plain = await fresh();
    const before = (await dicts.info(plain)).lastUsedMs;
    await dicts.touch(plain);
    expect((await dicts.info(plain)).lastUsedMs).toBeGreaterThanOrEqual(before);
  });

  it('drops an idle dict with its keys, and only then', async () => {
    const d = uniqueName('dict');
    created.push(d);
    const idle = 60_000;
    await dicts.create(d, { idleTimeoutMs: idle });
    await dicts.update(d, [
      [b('a'), b('1')],
      [b('b'), b('2')],
    ]);
    await dicts.put(d, b('t'), b('3'), { ttlMs: 600_000 });
    const { lastUsedMs } = await dicts.info(d);
    expect(await dicts.dropIfIdle(d, lastUsedMs)).toBe(false);
    expect(await dicts.dropIfIdle(d, lastUsedMs + idle - 1)).toBe(false);
    expect(await dicts.dropIfIdle(d)).toBe(false);
    // A touch pushes the deadline out.
    await dicts.touch(d, lastUsedMs + 1000);
    expect(await dicts.dropIfIdle(d, lastUsedMs + idle)).toBe(false);
    expect(await dicts.len(d)).toBe(3);
    expect(await dicts.dropIfIdle(d, lastUsedMs + 1000 + idle)).toBe(true);
    expect(await dicts.exists(d)).toBe(false);
    expect((await dicts.list()).map((i) => i.name)).not.toContain(d);
    await rejectsWith(dicts.info(d), ErrorCode.NOT_FOUND, `(create it with: stowage dict create ${d})`);
    await rejectsWith(dicts.get(d, b('a')), ErrorCode.NOT_FOUND);
    expect(await dicts.dropIfIdle(d, lastUsedMs + 1000 + idle)).toBe(false);
    // Its keys went with it.
    await dicts.create(d);
    expect(await dicts.len(d)).toBe(0);
    expect(await dicts.get(d, b('a'))).toBeUndefined();
    expect((await dicts.scan(d, { limit: 10 })).entries).toEqual([]);
  });

  it('never drops a dict without an idle timeout', async () => {
    const d = await fresh();
    await dicts.put(d, b('k'), b('v'));
    expect(await dicts.dropIfIdle(d, Number.MAX_SAFE_INTEGER)).toBe(false);
    expect(await dicts.get(d, b('k'))).toEqual({ value: b('v'), version: 1 });
    await rejectsWith(dicts.dropIfIdle('a/b'), ErrorCode.INVALID_ARGUMENT);
    await rejectsWith(dicts.dropIfIdle(d, -5), ErrorCode.INVALID_ARGUMENT);
  });

  it('puts and gets bytes with per-key versions', async () => {
    const d = await fresh();
    const key = Buffer.from([0, 1, 0xff, 0]);
    expect(await dicts.get(d, key)).toBeUndefined();
    expect(await dicts.put(d, key, Buffer.from([9, 0, 9]))).toBe(true);
    expect(await dicts.get(d, key)).toEqual({ value: Buffer.from([9, 0, 9]), version: 1 });
    expect(await dicts.put(d, key, b('second'))).toBe(true);
    expect(await dicts.get(d, key)).toEqual({ value: b('second'), version: 2 });
    expect(await dicts.put(d, key, b('third'), { skipIfExists: true })).toBe(false);
    expect(await dicts.get(d, key)).toEqual({ value: b('second'), version: 2 });
    expect(await dicts.put(d, b('other'), b(''), { skipIfExists: true })).toBe(true);
    expect(await dicts.get(d, b('other'))).toEqual({ value: Buffer.alloc(0), version: 1 });
    expect(await dicts.contains(d, key)).toBe(true);
    expect(await dicts.contains(d, b('nope'))).toBe(false);
    expect(await dicts.getMany(d, [b('nope'), key, b('other')])).toEqual([
      undefined,
      { value: b('second'), version: 2 },
      { value: Buffer.alloc(0), version: 1 },
    ]);
  });

  it('updates, counts, pops, deletes and clears', async () => {
    const d = await fresh();
    await dicts.update(d, [
      [b('a'), b('1')],
      [b('b'), b('2')],
      [b('a'), b('3')],
    ]);
    expect(await dicts.len(d)).toBe(2);
    expect(await dicts.get(d, b('a'))).toEqual({ value: b('3'), version: 2 });
    expect(await dicts.pop(d, b('a'))).toEqual(b('3'));
    expect(await dicts.pop(d, b('a'))).toBeUndefined();
    expect(await dicts.delete(d, b('b'))).toBe(true);
    expect(await dicts.delete(d, b('b'))).toBe(false);
    expect(await dicts.len(d)).toBe(0);
    // A deleted key's version starts again at 1.
    await dicts.put(d, b('a'), b('x'));
    expect((await dicts.get(d, b('a')))?.version).toBe(1);
    await dicts.update(d, [[b('c'), b('c')]]);
    await dicts.clear(d);
    expect(await dicts.len(d)).toBe(0);
    expect(await dicts.exists(d)).toBe(true);
    expect((await dicts.scan(d, { limit: 10 })).entries).toEqual([]);
  });

  it('increments decimal integers atomically', async () => {
    const d = await fresh();
    expect(await dicts.incr(d, b('n'))).toBe(1);
    expect(await dicts.incr(d, b('n'), 41)).toBe(42);
    expect(await dicts.incr(d, b('n'), -50)).toBe(-8);
    expect(await dicts.get(d, b('n'))).toEqual({ value: b('-8'), version: 3 });
    await dicts.put(d, b('s'), b('12'));
    expect(await dicts.incr(d, b('s'), 3)).toBe(15);
    for (const bad of ['x', '1.5', ' 1', '01', '', '99999999999999999999']) {
      await dicts.put(d, b('bad'), b(bad));
      await rejectsWith(dicts.incr(d, b('bad')), ErrorCode.FAILED_PRECONDITION, 'not a decimal integer');
    }
    await dicts.put(d, b('big'), b(String(Number.MAX_SAFE_INTEGER)));
    await rejectsWith(dicts.incr(d, b('big')), ErrorCode.FAILED_PRECONDITION);
    expect(await dicts.get(d, b('big'))).toEqual({ value: b(String(Number.MAX_SAFE_INTEGER)), version: 1 });
    await rejectsWith(dicts.incr(d, b('n'), 1.5), ErrorCode.INVALID_ARGUMENT);

    const n = 300;
    const results = await Promise.all(Array.from({ length: n }, () => dicts.incr(d, b('race'), 2)));
    expect(await dicts.get(d, b('race'))).toEqual({ value: b(String(2 * n)), version: n });
    expect(new Set(results).size).toBe(n);
  });

  it('compares and sets by version', async () => {
    const d = await fresh();
    expect(await dicts.compareAndSet(d, b('k'), 1, b('v'))).toEqual({ ok: false, version: 0 });
    expect(await dicts.compareAndSet(d, b('k'), 0, b('v1'))).toEqual({ ok: true, version: 1 });
    expect(await dicts.compareAndSet(d, b('k'), 0, b('v2'))).toEqual({ ok: false, version: 1 });
    expect(await dicts.compareAndSet(d, b('k'), 1, b('v2'))).toEqual({ ok: true, version: 2 });
    expect(await dicts.get(d, b('k'))).toEqual({ value: b('v2'), version: 2 });

    // Optimistic counters from many concurrent writers lose no update.
    const workers = 20;
    const rounds = 10;
    await Promise.all(
      Array.from({ length: workers }, async () => {
        for (let i = 0; i < rounds; ) {
          const cur = await dicts.get(d, b('c'));
          const next = Buffer.from(String(Number(cur?.value.toString() ?? '0') + 1));
          if ((await dicts.compareAndSet(d, b('c'), cur?.version ?? 0, next)).ok) i++;
        }
      }),
    );
    expect(await dicts.get(d, b('c'))).toEqual({ value: b(String(workers * rounds)), version: workers * rounds });
  });

  it('update applies its entries in order: a key given twice ends with the last value, its version grown twice', async () => {
    const d = await fresh();
    await dicts.put(d, b('a'), b('0'), { ttlMs: 600_000 });
    await dicts.update(d, [
      [b('a'), b('1')],
      [b('new'), b('x')],
      [b('a'), b('2')],
    ]);
    expect(await dicts.getMany(d, [b('a'), b('new'), b('absent')])).toEqual([
      { value: b('2'), version: 3 },
      { value: b('x'), version: 1 },
      undefined,
    ]);
  });

  it('compareAndSet replaces the TTL, or keeps it with keepTtl', async () => {
    const d = await fresh();
    await dicts.put(d, b('kept'), b('1'), { ttlMs: 300 });
    await dicts.put(d, b('replaced'), b('1'), { ttlMs: 300 });
    await dicts.put(d, b('never'), b('1'));
    expect(await dicts.compareAndSet(d, b('kept'), 1, b('2'), { keepTtl: true })).toEqual({ ok: true, version: 2 });
    expect(await dicts.compareAndSet(d, b('replaced'), 1, b('2'))).toEqual({ ok: true, version: 2 });
    expect(await dicts.compareAndSet(d, b('never'), 1, b('2'), { keepTtl: true })).toEqual({ ok: true, version: 2 });
    await eventually(async () => !(await dicts.contains(d, b('kept'))));
    // Well past the first TTL: the replaced TTL and the kept "never" still hold.
    expect(await dicts.get(d, b('replaced'))).toEqual({ value: b('2'), version: 2 });
    expect(await dicts.get(d, b('never'))).toEqual({ value: b('2'), version: 2 });
  });

  it('hides expired keys from every read and sweeps them', async () => {
    const d = await fresh();
    await dicts.put(d, b('stay'), b('s'));
    await dicts.put(d, b('long'), b('l'), { ttlMs: 60_000 });
    await dicts.put(d, b('gone'), b('g'), { ttlMs: 50 });
    await dicts.put(d, b('counter'), b('1'), { ttlMs: 500 });
    expect(await dicts.incr(d, b('counter'))).toBe(2);
    await dicts.put(d, b('cleared'), b('c'), { ttlMs: 50 });
    await dicts.put(d, b('cleared'), b('c2'));
    expect(await dicts.get(d, b('long'))).toEqual({ value: b('l'), version: 1 });

    await eventually(async () => (await dicts.get(d, b('gone'))) === undefined);
    await eventually(async () => !(await dicts.contains(d, b('counter'))));
    expect(await dicts.getMany(d, [b('gone'), b('counter')])).toEqual([undefined, undefined]);
    expect(await dicts.len(d)).toBe(3);
    const page = await dicts.scan(d, { limit: 100 });
    expect(page.entries.map((e) => e.key.toString()).sort()).toEqual(['cleared', 'long', 'stay']);
    expect(await dicts.pop(d, b('gone'))).toBeUndefined();
    expect(await dicts.delete(d, b('counter'))).toBe(false);
    // An expired key is absent to writes too: versions start again.
    expect(await dicts.put(d, b('gone'), b('again'), { skipIfExists: true })).toBe(true);
    expect(await dicts.get(d, b('gone'))).toEqual({ value: b('again'), version: 1 });
    await dicts.put(d, b('cas'), b('x'), { ttlMs: 50 });
    await eventually(async () => !(await dicts.contains(d, b('cas'))));
    expect(await dicts.compareAndSet(d, b('cas'), 0, b('y'))).toEqual({ ok: true, version: 1 });
    expect(await dicts.len(d)).toBe(5);
    await rejectsWith(dicts.put(d, b('k'), b('v'), { ttlMs: 0 }), ErrorCode.INVALID_ARGUMENT);
  });

  it('scans 100,000 keys in bounded pages, each key once', async () => {
    const d = await fresh();
    const total = 100_000;
    for (let start = 0; start < total; start += MAX_BATCH_ENTRIES) {
      const batch = Array.from({ length: MAX_BATCH_ENTRIES }, (_, i) => [b(`key-${start + i}`), b(`v${start + i}`)] as const);
      await dicts.update(d, batch);
    }
    expect(await dicts.len(d)).toBe(total);
    const seen = new Set<string>();
    let cursor: string | undefined;
    let pages = 0;
    let largest = 0;
    let wrong = 0;
    let first: DictEntry[] | undefined;
    do {
      const page = await dicts.scan(d, { cursor, limit: 1000 });
      largest = Math.max(largest, page.entries.length);
      first ??= page.entries;
      for (const e of page.entries) {
        const k = e.key.toString();
        if (e.value.toString() !== `v${k.slice(4)}` || e.version !== 1) wrong++;
        seen.add(k);
      }
      cursor = page.cursor;
      pages++;
    } while (cursor !== undefined);
    expect(largest).toBeLessThanOrEqual(1000);
    expect(wrong).toBe(0);
    expect(seen.size).toBe(total);
    expect(pages).toBeGreaterThanOrEqual(total / 1000);
    // Entries a caller holds stay intact after later calls.
    expect(first!.every((e) => e.value.toString() === `v${e.key.toString().slice(4)}`)).toBe(true);
    await rejectsWith(dicts.scan(d, { cursor: 'not a cursor!', limit: 10 }), ErrorCode.INVALID_ARGUMENT);
    await rejectsWith(dicts.scan(d, { limit: 0 }), ErrorCode.INVALID_ARGUMENT);
    await dicts.clear(d);
    expect(await dicts.len(d)).toBe(0);
    expect(await dicts.scan(d, { limit: 10 })).toEqual({ entries: [] });
  });

  it('scans long keys that share a prefix', async () => {
    const d = await fresh();
    const keys = Array.from({ length: 25 }, (_, i) => Buffer.concat([Buffer.alloc(3000, 'p'), b(String(i))]));
    for (const k of keys) await dicts.put(d, k, k.subarray(-2));
    const got: Buffer[] = [];
    let cursor: string | undefined;
    do {
      const page = await dicts.scan(d, { cursor, limit: 4 });
      got.push(...page.entries.map((e) => e.key));
      cursor = page.cursor;
    } while (cursor);
    expect(got.map((k) => k.toString('hex')).sort()).toEqual(keys.map((k) => k.toString('hex')).sort());
    expect(await dicts.get(d, keys[7]!)).toEqual({ value: keys[7]!.subarray(-2), version: 1 });
  });

  it('rejects a bad argument with the same words on every backend, before looking the dict up', async () => {
    const missing = uniqueName('missing');
    const long = Buffer.alloc(MAX_KEY_BYTES + 1);
    const cases: [() => Promise<unknown>, string][] = [
      [() => dicts.get(missing, Buffer.alloc(0)), 'a dict key must not be empty'],
      [() => dicts.contains(missing, long), `dict key is ${MAX_KEY_BYTES + 1} bytes, over the limit of ${MAX_KEY_BYTES}`],
      [() => dicts.getMany(missing, [b('k'), Buffer.alloc(0)]), 'a dict key must not be empty'],
      [() => dicts.update(missing, [[b('k'), 'v' as unknown as Buffer]]), 'a dict value must be bytes'],
      [() => dicts.put(missing, b('k'), b('v'), { ttlMs: 0 }), `ttlMs must be an integer from 1 to ${MAX_TTL_MS}, not 0`],
      [() => dicts.pop(missing, long), `dict key is ${MAX_KEY_BYTES + 1} bytes, over the limit of ${MAX_KEY_BYTES}`],
      [() => dicts.incr(missing, b('k'), 0.5), 'incr amount must be a safe integer, not 0.5'],
      [() => dicts.compareAndSet(missing, b('k'), -1, b('v')), 'expected version must be an integer >= 0, not -1'],
      // keepTtl ignores ttlMs, but a bad one is still refused.
      [() => dicts.compareAndSet(missing, b('k'), 0, b('v'), { keepTtl: true, ttlMs: 0.5 }), `ttlMs must be an integer from 1 to ${MAX_TTL_MS}, not 0.5`],
      [() => dicts.scan(missing, { limit: 0 }), `scan limit must be an integer from 1 to ${MAX_SCAN_LIMIT}, not 0`],
      [() => dicts.scan(missing, { limit: 10, cursor: '!' }), 'invalid scan cursor: pass back the cursor a previous scan returned'],
      [() => dicts.touch(missing, -1), 'atMs must be an integer >= 0 (ms since the epoch), not -1'],
      [() => dicts.dropIfIdle(missing, 1.5), 'nowMs must be an integer >= 0 (ms since the epoch), not 1.5'],
      [() => dicts.len('a/b'), 'invalid dict name "a/b": use 1 to 64 characters from A-Z a-z 0-9 . _ - (not "." or "..")'],
    ];
    for (const [call, message] of cases) {
      const err = await call().then(() => undefined, (e: unknown) => e);
      expect(isStowageError(err, ErrorCode.INVALID_ARGUMENT), `expected INVALID_ARGUMENT, got ${String(err)}`).toBe(true);
      expect((err as Error).message).toBe(message);
    }
    expect(await dicts.exists(missing)).toBe(false);
  });

  it('enforces the limits', async () => {
    const d = await fresh();
    const maxKey = Buffer.alloc(MAX_KEY_BYTES, 'k');
    expect(await dicts.put(d, maxKey, b('v'))).toBe(true);
    expect(await dicts.get(d, maxKey)).toEqual({ value: b('v'), version: 1 });
    await rejectsWith(dicts.put(d, Buffer.alloc(MAX_KEY_BYTES + 1), b('v')), ErrorCode.INVALID_ARGUMENT, 'key');
    await rejectsWith(dicts.get(d, Buffer.alloc(MAX_KEY_BYTES + 1)), ErrorCode.INVALID_ARGUMENT);
    await rejectsWith(dicts.put(d, Buffer.alloc(0), b('v')), ErrorCode.INVALID_ARGUMENT, 'empty');
    await rejectsWith(dicts.get(d, Buffer.alloc(0)), ErrorCode.INVALID_ARGUMENT);
    const maxValue = Buffer.alloc(MAX_VALUE_BYTES, 7);
    expect(await dicts.put(d, b('big'), maxValue)).toBe(true);
    expect((await dicts.get(d, b('big')))?.value.equals(maxValue)).toBe(true);
    await rejectsWith(dicts.put(d, b('big'), Buffer.alloc(MAX_VALUE_BYTES + 1)), ErrorCode.INVALID_ARGUMENT, 'value');
    await rejectsWith(dicts.update(d, [[b('x'), Buffer.alloc(MAX_VALUE_BYTES + 1)]]), ErrorCode.INVALID_ARGUMENT);
    await rejectsWith(dicts.compareAndSet(d, b('big'), 1, Buffer.alloc(MAX_VALUE_BYTES + 1)), ErrorCode.INVALID_ARGUMENT);
    expect(await dicts.contains(d, b('x'))).toBe(false);
    const tooMany = Array.from({ length: MAX_BATCH_ENTRIES + 1 }, (_, i) => b(`k${i}`));
    await rejectsWith(dicts.getMany(d, tooMany), ErrorCode.INVALID_ARGUMENT);
    for (const bad of ['', 'a/b', 'x'.repeat(65), '..', 'has space', 'tag{x}']) {
      await rejectsWith(dicts.create(bad), ErrorCode.INVALID_ARGUMENT, 'dict name');
      await rejectsWith(dicts.get(bad, b('k')), ErrorCode.INVALID_ARGUMENT);
    }
    expect(await dicts.create('x'.repeat(64), { existOk: true })).toBeTypeOf('boolean');
    await dicts.drop('x'.repeat(64));
  });
}

describe.each([lmdbSetup(), redisSetup(), redisClusterSetup()])('DictBackend contract: $name', contract);
describe.skipIf(skipWithoutContainers('the DictBackend contract on Redis in a container')).each([redisContainerSetup()])(
  'DictBackend contract: $name',
  contract,
);

describe('LmdbDictBackend', () => {
  it('keeps dicts, values, versions and TTLs across close and reopen', async () => {
    const dir = tempDir('dict-lmdb-durable');
    try {
      const first = new LmdbDictBackend(dir);
      const d = uniqueName('dict');
      await first.create(d);
      await first.put(d, b('k'), b('v'));
      await first.put(d, b('k'), b('v2'));
      await first.incr(d, b('n'), 5);
      await first.put(d, b('short'), b('s'), { ttlMs: 50 });
      const idle = uniqueName('dict');
      await first.create(idle, { idleTimeoutMs: 30_000 });
      await first.touch(idle, 4_000_000_000_000);
      const idleInfo = await first.info(idle);
      await first.close();

      const second = new LmdbDictBackend(dir);
      expect((await second.list()).map((i) => i.name)).toEqual([d, idle].sort());
      expect(await second.info(idle)).toEqual({ ...idleInfo, lastUsedMs: 4_000_000_000_000 });
      expect(await second.dropIfIdle(idle, 4_000_000_029_999)).toBe(false);
      expect(await second.dropIfIdle(idle, 4_000_000_030_000)).toBe(true);
      expect(await second.get(d, b('k'))).toEqual({ value: b('v2'), version: 2 });
      expect(await second.incr(d, b('n'))).toBe(6);
      await eventually(async () => (await second.len(d)) === 2);
      await second.close();
    } finally {
      removeDir(dir);
    }
  });
});

describe('RedisDictBackend', () => {
  let server: RedisServer;
  beforeAll(async () => {
    server = await startRedis();
  });
  afterAll(async () => {
    await server.stop();
    removeDir(server.dir);
  });

  it('keeps one dict in one hash slot', async () => {
    const dicts = new RedisDictBackend(server.url);
    const { Redis } = await import('ioredis');
    const raw = new Redis(server.url);
    try {
      const d = uniqueName('dict');
      await dicts.create(d);
      await dicts.put(d, b('k'), b('v'), { ttlMs: 60_000 });
      const keys = (await raw.keys(`stowage:dict:*${d}*`)).sort();
      expect(keys).toEqual(['data', 'exp', 'idx', 'meta', 'ver'].map((p) => `stowage:dict:{${d}}:${p}`));
    } finally {
      raw.disconnect();
      await dicts.close();
    }
  });

  it('with wait, fails a write UNAVAILABLE when the single Redis has too few replicas, and never waits on reads', async () => {
    const plain = new RedisDictBackend(server.url);
    const waiting = new RedisDictBackend(server.url, { wait: { replicas: 1, timeoutMs: 50 } });
    try {
      const d = uniqueName('dict');
      await plain.create(d);
      await rejectsWith(waiting.put(d, b('k'), b('v')), ErrorCode.UNAVAILABLE, 'written to the master but acknowledged by only 0 of 1 replica within 50 ms');
      // The write is on the master all the same; reads do not WAIT.
      expect(await waiting.get(d, b('k'))).toEqual({ value: b('v'), version: 1 });
      await plain.drop(d);
    } finally {
      await plain.close();
      await waiting.close();
    }
  });

  it('fails fast with UnavailableError while redis is down and recovers when it returns', async () => {
    const dicts = new RedisDictBackend(server.url, { connectTimeoutMs: 300 });
    try {
      const d = uniqueName('dict');
      await dicts.create(d);
      await dicts.put(d, b('k'), b('v'));
      await server.stop();
      const started = Date.now();
      await rejectsWith(dicts.get(d, b('k')), ErrorCode.UNAVAILABLE, server.url);
      await rejectsWith(dicts.put(d, b('k'), b('v')), ErrorCode.UNAVAILABLE, server.url);
      await rejectsWith(dicts.list(), ErrorCode.UNAVAILABLE, server.url);
      expect(Date.now() - started).toBeLessThan(5_000);

      await server.restart();
      // The restarted server has no persistence: the dict is gone, the backend works.
      await eventually(async () => dicts.exists(d).then((e) => !e, () => false));
      await dicts.create(d);
      await dicts.put(d, b('k'), b('back'));
      expect(await dicts.get(d, b('k'))).toEqual({ value: b('back'), version: 1 });
    } finally {
      await dicts.close();
    }
  });
});
