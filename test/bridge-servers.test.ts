/**
 * The compute bridge on a set of servers: three `stowage serve` processes
 * sharing one Redis (the bridge lease and the calls) and one s3rver bucket,
 * each with its own data dir (and the same admin token). One server runs the
 * bridge; workers and callers connect to the others and are forwarded to it.
 * The leader SIGKILLed with calls queued and running: another server takes
 * the lease within about the lease time and every call finishes, each run
 * once (as test/bridge-faults.test.ts asserts for a restart on one server).
 * A single server without Redis is covered by the other bridge tests.
 *
 * The code volume is filled through the first server before the others
 * start, so that every server's volume index has it (each rebuilds its index
 * from the bucket at start; volume heads shared between servers are not this
 * test's subject). Needs `npm run build` first.
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { App, BridgeAdmin, Connection, type FunctionCall } from '../src/client/index.js';
import { CallState } from '../src/gen/stowage/v1/bridge.js';
import { FIXTURE, cleanUpWorkers, startWorker, waitFor, type WorkerProcess } from './support/bridge.js';
import { spawnStowage, startS3rver, tempDir, uniqueName, type ChildServer, type S3Server } from './support/processes.js';
import { startRedis, type RedisServer } from './support/redis.js';

const LEASE_MS = 1500;
const LEADER_KEY = '{stowage:bridge}:leader';

type Slept = { slept: number; worker: string; pid: number };
type Squared = { x: number; square: number; worker: string };

const fixtureFn = <A extends unknown[]>(app: App, name: string, opts: Parameters<App['function']>[0] = {}) =>
  app.function<A, unknown>({ ...opts, module: FIXTURE, name }, () => undefined);

describe('compute bridge on three servers sharing one Redis and one bucket', () => {
  let redis: RedisServer;
  let s3: S3Server;
  let peek: Redis;
  const servers = new Map<string, ChildServer>();
  const workers = new Map<string, WorkerProcess>();
  const connections: Connection[] = [];
  const token = `stw_${randomBytes(24).toString('base64url')}`;
  const prefix = uniqueName('bridge-servers');

  const serve = async (name: string) => {
    const dir = tempDir(`serve-${name}`);
    writeFileSync(join(dir, 'token'), `${token}\n`, { mode: 0o600 });
    const args = ['--s3-endpoint', s3.endpoint, '--s3-bucket', s3.bucket, '--s3-prefix', prefix, '--redis-url', redis.url, '--bridge-lease', `${LEASE_MS}ms`];
    const s = await spawnStowage(dir, args, { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', STOWAGE_LOG_LEVEL: 'info' });
    servers.set(name, s);
    return s;
  };
  const connect = (name: string) => {
    const c = new Connection({ server: servers.get(name)!.address, token });
    connections.push(c);
    return c;
  };
  const worker = async (id: string, server: string, slots = 1) => {
    const w = await startWorker({ id, server: servers.get(server)!.address, token, slots });
    workers.set(id, w);
    return w;
  };
  /** The server holding the lease, by the address in it. */
  const leader = async (): Promise<string | undefined> => {
    const v = await peek.get(LEADER_KEY);
    if (!v) return undefined;
    const { address } = JSON.parse(v) as { address: string };
    return [...servers].find(([, s]) => s.address === address)?.[0];
  };

  beforeAll(async () => {
    [redis, s3] = await Promise.all([startRedis(), startS3rver()]);
    peek = new Redis(redis.url, { lazyConnect: true });
    await peek.connect();
    await serve('a');
    await waitFor('server a to take the bridge lease', async () => (await leader()) === 'a', 10_000);
    // The fixture's bundle into the code volume, through a, before b and c rebuild their indexes from the bucket.
    await fixtureFn(new App('servers', { connection: connect('a') }), 'sleep').spec();
    await Promise.all([serve('b'), serve('c')]);
  }, 90_000);

  afterAll(async () => {
    for (const c of connections) c.close();
    await Promise.all([...workers.values()].map((w) => w.kill('SIGKILL')));
    cleanUpWorkers();
    await Promise.all([...servers.values()].map((s) => s.kill('SIGKILL')));
    peek?.disconnect();
    await redis?.stop();
    await s3?.stop();
  });

  it('a worker on server b runs calls submitted through server c, each forwarded to the bridge on a', async () => {
    expect(await leader()).toBe('a');
    await worker('wb', 'b', 2);
    const viaC = connect('c');
    const app = new App('servers', { connection: viaC });
    const out = (await fixtureFn<[number]>(app, 'square').map([1, 2, 3, 4, 5, 6])) as Squared[];
    expect(out.map((o) => o.square)).toEqual([1, 4, 9, 16, 25, 36]);
    expect(new Set(out.map((o) => o.worker))).toEqual(new Set(['wb']));
    expect(await fixtureFn<[number, number]>(app, 'add').remote(40, 2)).toBe(42);
    // The same bridge answers through every server.
    for (const s of ['a', 'b', 'c']) {
      const listed = await BridgeAdmin.workers(connect(s));
      expect(listed.map((w) => w.workerId)).toEqual(['wb']);
    }
    // Errors keep their code through the forwarding server.
    await expect(BridgeAdmin.call('fc-no-such-call', viaC)).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it('the leader SIGKILLed with calls queued and running: another server takes the lease and every call finishes, each run once', async () => {
    await worker('wc', 'c');
    const viaB = connect('b');
    const app = new App('servers', { connection: viaB });
    const sleep = fixtureFn<[number]>(app, 'sleep');
    // wb (2 slots) and wc (1 slot) run three; the other three wait in the queue.
    const calls: FunctionCall<unknown>[] = [];
    for (const ms of [2500, 2500, 2500, 400, 400, 400]) calls.push(await sleep.spawn(ms));
    await waitFor('three calls to run', async () => {
      const states = await Promise.all(calls.map(async (c) => (await BridgeAdmin.call(c.id, viaB)).state));
      return states.filter((s) => s === CallState.CALL_STATE_RUNNING).length === 3;
    });
    const results = calls.map((c) => c.get() as Promise<Slept>);
    const killedAt = Date.now();
    await servers.get('a')!.kill('SIGKILL');
    servers.delete('a');
    const next = await waitFor('another server to take the lease', () => leader(), 15_000);
    const tookMs = Date.now() - killedAt;
    expect(['b', 'c']).toContain(next);
    // The lease runs out within LEASE_MS; the others try every LEASE_MS / 3.
    expect(tookMs).toBeLessThan(2 * LEASE_MS + 1000);
    const out = await Promise.all(results);
    expect(out.map((o) => o.slept)).toEqual([2500, 2500, 2500, 400, 400, 400]);
    for (const c of calls) {
      const info = await BridgeAdmin.call(c.id, viaB);
      // Running calls were claimed back by their workers, queued ones placed once: attempt 1 for all.
      expect(info).toMatchObject({ state: CallState.CALL_STATE_SUCCEEDED, attempt: 1 });
      expect(info.decisions).toHaveLength(1);
    }
    // The workers are registered with the new leader, through whichever server they use.
    const listed = await BridgeAdmin.workers(viaB);
    expect(listed.map((w) => w.workerId).sort()).toEqual(['wb', 'wc']);
    console.log(`bridge-servers: lease taken over by ${next} ${tookMs} ms after the leader was killed`);
  });
});
