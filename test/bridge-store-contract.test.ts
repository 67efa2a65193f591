/**
 * The CallStore contract (compute-bridge/types.ts) on both stores: LMDB under
 * a data dir, and Redis (a real redis-server started here). Records come back
 * as they were written (bytes as Buffers, absent fields absent); writes are
 * all-or-nothing per putCalls; a store opened again (another process, after a
 * crash) reads every acknowledged write, deploys included (one record per
 * app, written over by the app's next deploy). Then what only the Redis store
 * promises: a store fenced by a lease value refuses writes once the lease
 * holds another value, and writes nothing of the refused batch.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../src/common/logger.js';
import { openBridgeRedis, type BridgeRedis } from '../src/compute-bridge/redis-client.js';
import { LEADER_KEY, RedisCallStore } from '../src/compute-bridge/redis-store.js';
import { LmdbCallStore } from '../src/compute-bridge/store.js';
import type { CallRecord, CallStore } from '../src/compute-bridge/types.js';
import { LogEntry, LogStream, type DeployAppRequest, type Schedule } from '../src/gen/stowage/v1/bridge.js';
import { tempDir, uniqueName } from './support/processes.js';
import { startRedis, type RedisServer } from './support/redis.js';

const log = createLogger('test');

interface Setup {
  name: string;
  /** A store over fresh, empty storage; `again` opens the same storage a second time (as the next process would). */
  open(): Promise<{ store: CallStore; again(): Promise<CallStore> }>;
  stop(): Promise<void>;
}

function lmdbSetup(): Setup {
  const opened: CallStore[] = [];
  return {
    name: 'lmdb',
    async open() {
      const dir = tempDir('call-store');
      const store = new LmdbCallStore(dir, log);
      opened.push(store);
      return {
        store,
        again: async () => {
          await store.close();
          const s = new LmdbCallStore(dir, log);
          opened.push(s);
          return s;
        },
      };
    },
    async stop() {
      for (const s of opened) await s.close().catch(() => undefined);
    },
  };
}

function redisSetup(): Setup {
  let server: RedisServer | undefined;
  const clients: BridgeRedis[] = [];
  return {
    name: 'redis',
    async open() {
      server ??= await startRedis();
      const redis = await openBridgeRedis(server.url);
      clients.push(redis);
      await redis.call((c) => c.flushall());
      return {
        store: new RedisCallStore(redis),
        again: async () => {
          const r = await openBridgeRedis(server!.url);
          clients.push(r);
          return new RedisCallStore(r);
        },
      };
    },
    async stop() {
      for (const c of clients) c.close();
      await server?.stop();
    },
  };
}

function call(id: string, over: Partial<CallRecord> = {}): CallRecord {
  return {
    id,
    spec: {
      module: 'jobs.mjs',
      function: 'add',
      codeVolume: '__code__',
      bundlePath: '/bundles/x.mjs',
      bundleHash: 'x',
      volumes: { '/data': 'dataset' },
      reads: ['/data/a/*'],
      timeoutMs: 0,
      retries: 1,
      schedule: '',
      retryPolicy: undefined,
      writable: [], image: '', cpu: 0, memoryBytes: 0, gpu: '',
    },
    args: Buffer.from([0x92, 1, 2]),
    reads: ['/data/a/*'],
    versions: { dataset: 3 },
    state: 'queued',
    attempt: 0,
    workerId: '',
    createdAtMs: Date.now(),
    queuedAtMs: Date.now(),
    startedAtMs: 0,
    finishedAtMs: 0,
    decisions: [],
    ...over,
  };
}

const entry = (callId: string, text: string, stream = LogStream.LOG_STREAM_STDOUT): LogEntry => ({ callId, attempt: 1, stream, data: Buffer.from(text), atMs: 7, droppedBytes: 0 });
const texts = (entries: LogEntry[]) => entries.map((e) => Buffer.from(e.data).toString());

const schedule = (name: string): Schedule => ({ name, cron: '* * * * *', timezone: name === 's1' ? 'Europe/Berlin' : '', function: call('s').spec, nextRunMs: 0 });

const deployment = (app: string, names: string[]): DeployAppRequest => ({
  app,
  functions: names.map((name, i) => ({ app, name, function: call(name).spec, cron: i ? '0 3 * * *' : '', timezone: i ? 'Asia/Kolkata' : '', deployedAtMs: 7 })),
});

describe.each([lmdbSetup(), redisSetup()])('CallStore contract: $name', (setup) => {
  afterAll(() => setup.stop());

  it('gives back what was put: bytes as Buffers, absent fields absent', async () => {
    const { store } = await setup.open();
    const done = call('c2', { state: 'succeeded', attempt: 1, workerId: 'w1', value: Buffer.from([0xc3]), finishedAtMs: 5 });
    const running = call('c3', { state: 'running', attempt: 2, reclaimUntilMs: 99, decisions: [{ attempt: 2, atMs: 1, policy: 'ours', workerId: 'w1', reason: 'r', readBytes: 10, candidates: [{ workerId: 'w1', cachedBytes: 10, running: 1, slots: 2 }], waitedMs: 3 }] });
    await store.putCalls([call('c1'), done, running]);
    const got = new Map((await store.loadCalls()).map((c) => [c.id, c]));
    expect(got.size).toBe(3);
    expect(got.get('c1')).toEqual(call('c1', { createdAtMs: got.get('c1')!.createdAtMs, queuedAtMs: got.get('c1')!.queuedAtMs }));
    expect(got.get('c1')!.value).toBeUndefined();
    expect('reclaimUntilMs' in got.get('c1')!).toBe(false);
    expect(Buffer.isBuffer(got.get('c1')!.args)).toBe(true);
    expect(Buffer.isBuffer(got.get('c2')!.value)).toBe(true);
    expect(got.get('c2')).toEqual(done);
    expect(got.get('c3')).toEqual(running);
  });

  it('puts a record again over the old one, deletes by id, and reads every acknowledged write after reopening', async () => {
    const { store, again } = await setup.open();
    await store.putCalls([call('a'), call('b'), call('c')]);
    await store.putCalls([call('a', { state: 'running', attempt: 1, workerId: 'w' })]);
    await store.deleteCalls(['b', 'missing']);
    await store.putSchedule(schedule('s1'));
    await store.putSchedule(schedule('s2'));
    expect(await store.deleteSchedule('s2')).toBe(true);
    expect(await store.deleteSchedule('s2')).toBe(false);
    const reopened = await again();
    const calls = (await reopened.loadCalls()).sort((x, y) => x.id.localeCompare(y.id));
    expect(calls.map((c) => [c.id, c.state, c.attempt])).toEqual([
      ['a', 'running', 1],
      ['c', 'queued', 0],
    ]);
    const schedules = await reopened.loadSchedules();
    expect(schedules).toEqual([schedule('s1')]);
  });

  it('keeps one deploy per app: a deploy written again replaces the app\'s, a deleted one is gone after reopening', async () => {
    const { store, again } = await setup.open();
    await store.putDeployment(deployment('a', ['f', 'g', 'h']));
    await store.putDeployment(deployment('b', ['x']));
    await store.putDeployment(deployment('a', ['f', 'g']));
    await store.putDeployment(deployment('c', ['y']));
    expect(await store.deleteDeployment('c')).toBe(true);
    expect(await store.deleteDeployment('c')).toBe(false);
    const reopened = await again();
    const kept = (await reopened.loadDeployments()).sort((x, y) => x.app.localeCompare(y.app));
    expect(kept).toEqual([deployment('a', ['f', 'g']), deployment('b', ['x'])]);
  });
});

describe.each([lmdbSetup(), redisSetup()])('CallStore contract, call output: $name', (setup) => {
  afterAll(() => setup.stop());

  it('appends output in order, per call, and reads it back after reopening', async () => {
    const { store, again } = await setup.open();
    expect(await store.readLogs('none')).toEqual({ entries: [], droppedBytes: 0 });
    await store.appendLogs('a', [entry('a', 'one\n'), entry('a', 'err\n', LogStream.LOG_STREAM_STDERR)], 1 << 20);
    await store.appendLogs('b', [entry('b', 'other\n')], 1 << 20);
    await store.appendLogs('a', [entry('a', 'two\n')], 1 << 20);
    const reopened = await again();
    const a = await reopened.readLogs('a');
    expect(texts(a.entries)).toEqual(['one\n', 'err\n', 'two\n']);
    expect(a.entries[1]).toEqual({ ...entry('a', 'err\n', LogStream.LOG_STREAM_STDERR), data: a.entries[1]!.data });
    expect(Buffer.isBuffer(a.entries[0]!.data)).toBe(true);
    expect(a.droppedBytes).toBe(0);
    expect(texts((await reopened.readLogs('b')).entries)).toEqual(['other\n']);
  });

  it('keeps the newest entries within the bound, counting the output it dropped', async () => {
    const { store } = await setup.open();
    const e = (i: number) => entry('big', `${String(i).padStart(4, '0')}${'x'.repeat(95)}\n`);
    const size = LogEntry.encode(e(0)).finish().length;
    for (let i = 0; i < 100; i += 10) await store.appendLogs('big', Array.from({ length: 10 }, (_, j) => e(i + j)), 25 * size);
    const kept = await store.readLogs('big');
    expect(kept.entries.length).toBe(25);
    expect(texts(kept.entries)[0]!.slice(0, 4)).toBe('0075');
    expect(texts(kept.entries)[24]!.slice(0, 4)).toBe('0099');
    expect(kept.droppedBytes).toBe(75 * 100);
    // An entry that stood for dropped output adds what it stood for.
    await store.appendLogs('big', [{ ...entry('big', '[dropped]\n'), droppedBytes: 5000 }], 25 * size);
    await store.appendLogs('big', Array.from({ length: 25 }, (_, j) => e(j)), 25 * size);
    expect((await store.readLogs('big')).droppedBytes).toBe(75 * 100 + 25 * 100 + 5000);
  });

  it('deletes a call\'s output with the call', async () => {
    const { store, again } = await setup.open();
    await store.putCalls([call('gone'), call('stays')]);
    await store.appendLogs('gone', [entry('gone', 'bye\n')], 1 << 20);
    await store.appendLogs('stays', [entry('stays', 'hi\n')], 1 << 20);
    await store.deleteCalls(['gone']);
    const reopened = await again();
    expect(await reopened.readLogs('gone')).toEqual({ entries: [], droppedBytes: 0 });
    expect(texts((await reopened.readLogs('stays')).entries)).toEqual(['hi\n']);
  });
});

describe('RedisCallStore fenced by the bridge lease', () => {
  let server: RedisServer;
  let redis: BridgeRedis;
  beforeAll(async () => {
    server = await startRedis();
    redis = await openBridgeRedis(server.url);
  });
  afterAll(async () => {
    redis?.close();
    await server?.stop();
  });

  it('writes while the lease holds its value, and refuses (writing nothing) once it holds another', async () => {
    const term = JSON.stringify({ id: uniqueName('s'), address: '127.0.0.1:1', term: 't1' });
    await redis.call((c) => c.set(LEADER_KEY, term));
    const store = new RedisCallStore(redis, term);
    await store.putCalls([call('x')]);
    await store.putSchedule(schedule('s'));
    await store.putDeployment(deployment('app', ['f']));
    await redis.call((c) => c.set(LEADER_KEY, JSON.stringify({ id: 'other', address: '127.0.0.1:2', term: 't2' })));
    await expect(store.putDeployment(deployment('app', ['g']))).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
    await expect(store.deleteDeployment('app')).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
    await expect(store.putCalls([call('x', { state: 'running' }), call('y')])).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
    await expect(store.deleteCalls(['x'])).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
    await expect(store.deleteSchedule('s')).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
    await expect(store.appendLogs('x', [entry('x', 'late\n')], 1 << 20)).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
    await redis.call((c) => c.del(LEADER_KEY));
    await expect(store.putSchedule(schedule('t'))).rejects.toThrow(/no longer holds the compute bridge lease/);
    const calls = await store.loadCalls();
    expect(calls.map((c) => [c.id, c.state])).toEqual([['x', 'queued']]);
    expect((await store.loadSchedules()).map((s) => s.name)).toEqual(['s']);
    expect((await store.readLogs('x')).entries).toEqual([]);
    expect(await store.loadDeployments()).toEqual([deployment('app', ['f'])]);
  });

  it('fails with UNAVAILABLE naming the Redis while it is down', async () => {
    const store = new RedisCallStore(redis);
    await server.stop();
    try {
      await expect(store.putCalls([call('z')])).rejects.toMatchObject({ code: 'UNAVAILABLE', message: expect.stringContaining(`127.0.0.1:${server.port}`) });
      await expect(store.loadCalls()).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    } finally {
      await server.restart();
    }
  });
});
