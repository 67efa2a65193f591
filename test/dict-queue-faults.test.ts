/**
 * Faults under dicts and queues: Redis going away (and coming back empty), the
 * server SIGKILLed in the middle of a stream of puts (LMDB: every put that was
 * acknowledged is there after a restart), and a wrong token.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Connection, Dict, Queue, UnauthenticatedError, UnavailableError, Volume } from '../src/client/index.js';
import { DictOpKind } from '../src/gen/stowage/v1/dict.js';
import { QueueOpKind } from '../src/gen/stowage/v1/queue.js';
import { escapeRegExp, expectFailure } from './support/checks.js';
import { freePort, removeDir, runCli, spawnStowage, startStowage, tempDir, uniqueName, type ChildServer, type Stowage } from './support/processes.js';
import { startRedis, type RedisServer } from './support/redis.js';
import { sleep, within } from './support/state-servers.js';

describe('Redis goes away under a running server', () => {
  let redis: RedisServer;
  let stowage: Stowage;
  beforeAll(async () => {
    redis = await startRedis();
    stowage = await startStowage({ redisUrl: redis.url });
  });
  afterAll(async () => {
    try {
      await stowage?.stop();
      if (stowage) removeDir(stowage.dataDir);
    } finally {
      await redis?.stop();
      if (redis) removeDir(redis.dir);
    }
  });

  it('dict and queue calls fail with UNAVAILABLE naming Redis, other calls still work, and all work again once Redis is back', async () => {
    const connection = stowage.connection;
    const dictName = uniqueName('redis-down');
    const queueName = uniqueName('redis-down');
    const d = await Dict.fromName<string, string>(dictName, { createIfMissing: true, connection });
    const q = await Queue.fromName<string>(queueName, { createIfMissing: true, connection });
    await d.put('k', 'v');
    await q.put('item');
    const vol = await Volume.fromName(uniqueName('vol'), { createIfMissing: true, connection });

    await redis.stop();
    const where = escapeRegExp(`127.0.0.1:${redis.port}`);
    try {
      await expectFailure(() => d.get('k'), UnavailableError, 'UNAVAILABLE', where);
      await expectFailure(() => d.put('k2', 'v2'), UnavailableError, 'UNAVAILABLE', where);
      await expectFailure(() => q.put('another'), UnavailableError, 'UNAVAILABLE', where);
      await expectFailure(() => q.get({ block: false }), UnavailableError, 'UNAVAILABLE', where);
      await expectFailure(() => Dict.list({ connection }), UnavailableError, 'UNAVAILABLE', where);
      await expectFailure(() => Queue.fromName(queueName, { connection }), UnavailableError, 'UNAVAILABLE', where);
      // The stowage server itself keeps answering.
      expect((await Volume.list({ connection })).map((v) => v.name)).toContain(vol.name);
      // Several failures in a row do not break the session streams either.
      await expectFailure(() => d.get('k'), UnavailableError, 'UNAVAILABLE', where);
    } finally {
      await redis.restart();
    }

    // An empty Redis: the dict and queue are gone; create them again and use them.
    const d2 = await Dict.fromName<string, string>(dictName, { createIfMissing: true, connection });
    expect(await d2.get('k')).toBeUndefined();
    await d2.put('k', 'again');
    expect(await d2.get('k')).toBe('again');
    expect(await d2.incr('n', 3)).toBe(3);
    const q2 = await Queue.fromName<string>(queueName, { createIfMissing: true, connection });
    expect(await q2.len({ total: true })).toBe(0);
    await q2.put('after');
    expect(await q2.get({ block: false })).toBe('after');
    // Blocking gets are woken again by puts from another client.
    const other = new Connection({ server: stowage.server.address, token: stowage.server.token });
    try {
      const blocked = q2.get();
      blocked.catch(() => undefined);
      await sleep(300);
      await (await Queue.fromName<string>(queueName, { connection: other })).put('wake');
      expect(await within('the blocked get after the Redis restart', blocked, 30_000)).toBe('wake');
    } finally {
      other.close();
    }
  });
});

describe('server SIGKILLed during a stream of dict and queue puts (LMDB)', () => {
  const dataDir = tempDir('kill-state');
  let child: ChildServer | undefined;
  afterAll(async () => {
    await child?.kill();
    removeDir(dataDir);
  });

  it('every acknowledged dict put and queue put is there after a restart, queue items in put order', async () => {
    child = await spawnStowage(dataDir);
    const dictName = uniqueName('kill');
    const queueName = uniqueName('kill');
    let conn = new Connection({ server: child.address, token: child.token });
    const ackedKeys = new Map<string, number>();
    const ackedItems: number[] = [];
    const LANES = 16;
    let stopped = false;
    let failures = 0;
    try {
      const d = await Dict.fromName<string, number>(dictName, { createIfMissing: true, connection: conn });
      const q = await Queue.fromName<number>(queueName, { createIfMissing: true, connection: conn, maxSize: 1_000_000 });
      // 16 dict lanes and 16 queue lanes, each one put at a time: ~32 in flight.
      // Queue lane j puts j, j + LANES, j + 2 LANES, ... in order.
      const dictLane = async (lane: number) => {
        for (let i = lane; !stopped; i += LANES) {
          const key = `key-${i}`;
          try {
            await d.put(key, i * 7);
          } catch {
            failures++;
            return;
          }
          ackedKeys.set(key, i * 7);
        }
      };
      const queueLane = async (lane: number) => {
        for (let i = lane; !stopped; i += LANES) {
          try {
            await q.put(i);
          } catch {
            failures++;
            return;
          }
          ackedItems.push(i);
        }
      };
      const lanes = [
        ...Array.from({ length: LANES }, (_, j) => dictLane(j)),
        ...Array.from({ length: LANES }, (_, j) => queueLane(j)),
      ];
      await sleep(1000);
      const ackedBeforeKill = ackedKeys.size + ackedItems.length;
      await child.kill('SIGKILL');
      // Every lane ends: its put in flight fails (or it saw `stopped`).
      await within('the lanes to stop after the kill', Promise.all(lanes), 60_000);
      stopped = true;
      // A real stream was running, and every lane ended on a put the kill cut off.
      expect(ackedBeforeKill).toBeGreaterThan(2 * LANES);
      expect(ackedKeys.size).toBeGreaterThan(LANES);
      expect(ackedItems.length).toBeGreaterThan(LANES);
      expect(failures).toBe(2 * LANES);
    } finally {
      stopped = true;
      conn.close();
    }

    child = await spawnStowage(dataDir);
    conn = new Connection({ server: child.address, token: child.token });
    try {
      const d = await Dict.fromName<string, number>(dictName, { connection: conn });
      const keys = [...ackedKeys.keys()];
      const missing: string[] = [];
      for (let i = 0; i < keys.length; i += 1000) {
        const chunk = keys.slice(i, i + 1000);
        const values = await d.getMany(chunk);
        chunk.forEach((k, j) => {
          if (values[j] !== ackedKeys.get(k)) missing.push(`${k}=${String(values[j])}`);
        });
      }
      expect(missing, `acknowledged keys lost or wrong: ${missing.slice(0, 10).join(', ')}`).toEqual([]);
      // Nothing that was never put.
      for await (const [k, v] of d.items()) {
        expect(k).toBe(`key-${v / 7}`);
      }

      const q = await Queue.fromName<number>(queueName, { connection: conn });
      const drained: number[] = [];
      for (;;) {
        const batch = await q.getMany(1000, { block: false });
        if (batch.length === 0) break;
        drained.push(...batch);
      }
      expect(new Set(drained).size).toBe(drained.length);
      const out = new Set(drained);
      const lost = ackedItems.filter((i) => !out.has(i));
      expect(lost, `acknowledged queue items lost: ${lost.slice(0, 10).join(', ')}`).toEqual([]);
      // Each lane's items come out in the order that lane put them.
      for (let lane = 0; lane < LANES; lane++) {
        const mine = drained.filter((i) => i % LANES === lane);
        expect([...mine].sort((a, b) => a - b)).toEqual(mine);
        // No gaps before an acknowledged item: the lane put one at a time.
        expect(mine).toEqual(mine.map((_, k) => lane + k * LANES));
      }
    } finally {
      conn.close();
    }
  });
});

describe('wrong token', () => {
  let stowage: Stowage;
  beforeAll(async () => {
    stowage = await startStowage();
  });
  afterAll(async () => {
    await stowage?.stop();
    if (stowage) removeDir(stowage.dataDir);
  });

  it('dict and queue calls fail with UNAUTHENTICATED and change nothing', async () => {
    const good = stowage.connection;
    const bad = new Connection({ server: stowage.server.address, token: 'not-the-token' });
    try {
      const d = await Dict.fromName<string, string>(uniqueName('auth'), { createIfMissing: true, connection: good });
      const q = await Queue.fromName<string>(uniqueName('auth'), { createIfMissing: true, connection: good });
      const says = /STOWAGE_TOKEN/;
      await expectFailure(() => Dict.fromName(d.name, { connection: bad }), UnauthenticatedError, 'UNAUTHENTICATED', says);
      await expectFailure(() => Dict.fromName(uniqueName('x'), { createIfMissing: true, connection: bad }), UnauthenticatedError, 'UNAUTHENTICATED');
      await expectFailure(() => Dict.list({ connection: bad }), UnauthenticatedError, 'UNAUTHENTICATED');
      await expectFailure(() => Dict.delete(d.name, { connection: bad }), UnauthenticatedError, 'UNAUTHENTICATED');
      await expectFailure(() => Queue.fromName(q.name, { connection: bad }), UnauthenticatedError, 'UNAUTHENTICATED', says);
      await expectFailure(() => Queue.list({ connection: bad }), UnauthenticatedError, 'UNAUTHENTICATED');
      await expectFailure(() => Queue.delete(q.name, { connection: bad }), UnauthenticatedError, 'UNAUTHENTICATED');
      // Batched operations on the session streams.
      const emptyDictOp = { key: Buffer.alloc(0), value: Buffer.alloc(0), keys: [], values: [], skipIfExists: false, ttlMs: 0, by: 0, expectedVersion: 0, msgpack: false };
      await expectFailure(
        () => bad.dictOps.run({ ...emptyDictOp, kind: DictOpKind.DICT_OP_KIND_PUT, dict: d.name, key: Buffer.from('k'), value: Buffer.from('v') }),
        UnauthenticatedError,
        'UNAUTHENTICATED',
      );
      const emptyQueueOp = { partition: '', items: [], partitionTtlMs: 0, block: false, timeoutMs: 0, max: 0, ack: false, visibilityMs: 0, leaseIds: [], all: false, cursor: '' };
      await expectFailure(
        () => bad.queueOps.run({ ...emptyQueueOp, kind: QueueOpKind.QUEUE_OP_KIND_PUT, queue: q.name, items: [Buffer.from('x')] }),
        UnauthenticatedError,
        'UNAUTHENTICATED',
      );
      await expectFailure(
        () => bad.queueOps.run({ ...emptyQueueOp, kind: QueueOpKind.QUEUE_OP_KIND_GET, queue: q.name, block: true }),
        UnauthenticatedError,
        'UNAUTHENTICATED',
      );
      // Nothing changed.
      expect(await d.len()).toBe(0);
      expect(await q.len({ total: true })).toBe(0);
      expect((await Dict.list({ connection: good })).map((i) => i.name)).toContain(d.name);
      expect((await Queue.list({ connection: good })).map((i) => i.name)).toContain(q.name);
    } finally {
      bad.close();
    }
  });
});

describe('Redis unreachable when the server starts', () => {
  it('stowage serve --redis-url exits with status 6 naming the URL, and leaves nothing running', async () => {
    const dataDir = tempDir('redis-dead');
    try {
      const port = await freePort();
      const r = await within(
        'stowage serve against a dead Redis',
        runCli(['serve', '--port', '0', '--data-dir', dataDir, '--redis-url', `redis://127.0.0.1:${port}`], {}),
        30_000,
      );
      expect(r.code).toBe(6);
      expect(r.stderr).toMatch(escapeRegExp(`127.0.0.1:${port}`));
      expect(r.stderr).toMatch(/unavailable/);
    } finally {
      removeDir(dataDir);
    }
  });
});
