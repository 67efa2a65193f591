/**
 * The compute bridge on a set of servers: three `stowage serve` processes
 * sharing one Redis (the bridge lease and the calls) and one s3rver bucket,
 * each with its own data dir (and the same admin token). One server runs the
 * bridge; workers and callers connect to the others and are forwarded to it.
 * The leader SIGKILLed with calls queued and running: another server takes
 * the lease within about the lease time and every call finishes, each run
 * once (as test/bridge-faults.test.ts asserts for a restart on one server).
 * A single server without Redis is covered by the other bridge tests.
 * A worker given two servers of the set reconnects through the other when
 * the one its stream went through dies.
 * Then two servers with mutual TLS: the follower reaches the leader as a
 * client trusting STOWAGE_TLS_CA and presenting STOWAGE_TLS_CLIENT_CERT.
 *
 * The code volume is filled through the first server, once it holds the
 * lease, before the others start (the servers share volume heads through the
 * Redis, so the others would see it anyway; that sharing is
 * test/volume-servers.test.ts's subject). Needs `npm run build` first.
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { App, BridgeAdmin, Connection, type ConnectOptions, type FunctionCall } from '../src/client/index.js';
import { CallState } from '../src/gen/stowage/v1/bridge.js';
import { FIXTURE, cleanUpWorkers, startWorker, waitFor, type WorkerProcess } from './support/bridge.js';
import { createCerts } from '../src/server/certs.js';
import { spawnStowage, startS3rver, tempDir, uniqueName, type ChildServer, type S3Server } from './support/processes.js';
import { startRedis, type RedisServer } from './support/redis.js';

const LEASE_MS = 1500;
const LEADER_KEY = '{stowage:bridge}:leader';

type Slept = { slept: number; worker: string; pid: number };
type Squared = { x: number; square: number; worker: string };

/**
 * Servers sharing one Redis (started here) and one s3rver prefix, each with
 * its own data dir holding the same admin token; workers and connections to
 * them; all stopped by PID in stop().
 */
function serverSet(opts: { serveArgs?: string[]; env?: Record<string, string>; connect?: Partial<ConnectOptions>; workerArgs?: string[] } = {}) {
  let redis: RedisServer;
  let s3: S3Server;
  let peek: Redis;
  const servers = new Map<string, ChildServer>();
  const workers = new Map<string, WorkerProcess>();
  const connections: Connection[] = [];
  const token = `stw_${randomBytes(24).toString('base64url')}`;
  const prefix = uniqueName('bridge-servers');
  const set = {
    servers,
    async start() {
      [redis, s3] = await Promise.all([startRedis(), startS3rver()]);
      peek = new Redis(redis.url, { lazyConnect: true });
      await peek.connect();
    },
    async serve(name: string) {
      const dir = tempDir(`serve-${name}`);
      writeFileSync(join(dir, 'token'), `${token}\n`, { mode: 0o600 });
      const args = ['--s3-endpoint', s3.endpoint, '--s3-bucket', s3.bucket, '--s3-prefix', prefix, '--redis-url', redis.url, '--bridge-lease', `${LEASE_MS}ms`, ...(opts.serveArgs ?? [])];
      const s = await spawnStowage(dir, args, { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', ...opts.env });
      servers.set(name, s);
      return s;
    },
    connect(name: string) {
      const c = new Connection({ server: servers.get(name)!.address, token, ...opts.connect });
      connections.push(c);
      return c;
    },
    async startWorker(id: string, server: string, slots = 1) {
      const w = await startWorker({ id, server: servers.get(server)!.address, token, slots, args: opts.workerArgs });
      workers.set(id, w);
      return w;
    },
    /** The server holding the lease, by the address in it. */
    async leader(): Promise<string | undefined> {
      const v = await peek.get(LEADER_KEY);
      if (!v) return undefined;
      const { address } = JSON.parse(v) as { address: string };
      return [...servers].find(([, s]) => s.address === address)?.[0];
    },
    /** Deletes the lease key, as if it had run out in Redis while its holder lives on. */
    async dropLease() {
      await peek.del(LEADER_KEY);
    },
    worker: (id: string) => workers.get(id),
    /** A worker started here by hand, stopped with the set. */
    adopt(id: string, w: WorkerProcess) {
      workers.set(id, w);
    },
    token,
    /** Starts `first`, waits for it to hold the lease, puts the fixture's bundle into the code volume through it, then starts the others. */
    async startServers(first: string, ...others: string[]) {
      await set.serve(first);
      await waitFor(`server ${first} to take the bridge lease`, async () => (await set.leader()) === first, 10_000);
      // Before the others rebuild their indexes from the bucket: they find the code volume there.
      await fixtureFn(new App('servers', { connection: set.connect(first) }), 'sleep').spec();
      await Promise.all(others.map((o) => set.serve(o)));
    },
    async stop() {
      for (const c of connections) c.close();
      await Promise.all([...workers.values()].map((w) => w.kill('SIGKILL')));
      cleanUpWorkers();
      await Promise.all([...servers.values()].map((s) => s.kill('SIGKILL')));
      peek?.disconnect();
      await redis?.stop();
      await s3?.stop();
    },
  };
  return set;
}

const fixtureFn = <A extends unknown[]>(app: App, name: string, opts: Parameters<App['function']>[0] = {}) =>
  app.function<A, unknown>({ ...opts, module: FIXTURE, name }, () => undefined);

describe('compute bridge on three servers sharing one Redis and one bucket', () => {
  const set = serverSet();
  const { servers } = set;

  beforeAll(async () => {
    await set.start();
    await set.startServers('a', 'b', 'c');
  }, 90_000);

  afterAll(() => set.stop());

  it('a worker on server b runs calls submitted through server c, each forwarded to the bridge on a', async () => {
    expect(await set.leader()).toBe('a');
    await set.startWorker('wb', 'b', 2);
    const viaC = set.connect('c');
    const app = new App('servers', { connection: viaC });
    const out = (await fixtureFn<[number]>(app, 'square').map([1, 2, 3, 4, 5, 6])) as Squared[];
    expect(out.map((o) => o.square)).toEqual([1, 4, 9, 16, 25, 36]);
    expect(new Set(out.map((o) => o.worker))).toEqual(new Set(['wb']));
    expect(await fixtureFn<[number, number]>(app, 'add').remote(40, 2)).toBe(42);
    // The same bridge answers through every server.
    for (const s of ['a', 'b', 'c']) {
      const listed = await BridgeAdmin.workers(set.connect(s));
      expect(listed.map((w) => w.workerId)).toEqual(['wb']);
    }
    // Errors keep their code through the forwarding server.
    await expect(BridgeAdmin.call('fc-no-such-call', viaC)).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it('the leader SIGKILLed with calls queued and running: another server takes the lease and every call finishes, each run once', async () => {
    await set.startWorker('wc', 'c');
    const viaB = set.connect('b');
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
    const next = await waitFor('another server to take the lease', () => set.leader(), 15_000);
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

  it('a leader whose lease is taken from it stops at its next renewal: its streams end with UNAVAILABLE and a running call finishes once with the next leader', async () => {
    const was = await waitFor('a leader', () => set.leader());
    const via = set.connect(was === 'b' ? 'c' : 'b');
    const app = new App('servers', { connection: via });
    const call = await fixtureFn<[number]>(app, 'sleep').spawn(2000);
    await waitFor('the call to run', async () => (await BridgeAdmin.call(call.id, via)).state === CallState.CALL_STATE_RUNNING);
    const result = call.get() as Promise<Slept>;
    const before = new Map(['wb', 'wc'].map((w) => [w, set.worker(w)!.stderr().length]));
    await set.dropLease();
    // Both workers' streams went to the old leader (directly, or forwarded): each ended with UNAVAILABLE saying the
    // leader lost its lease, or, through the server that won it, that the bridge now runs there.
    const told = (w: string) => set.worker(w)!.stderr().slice(before.get(w)).match(/stream to the bridge failed \(14 UNAVAILABLE: [^"]*(lost its lease|runs the compute bridge now|moved to server)/);
    await waitFor('both workers to be told the bridge moved', () => told('wb') && told('wc'), 10_000);
    expect((await result).slept).toBe(2000);
    expect(await BridgeAdmin.call(call.id, via)).toMatchObject({ state: CallState.CALL_STATE_SUCCEEDED, attempt: 1 });
    expect(await set.leader()).toBeDefined();
  });

  it('the leader stopped with SIGTERM hands the lease over at once, and calls go on', async () => {
    const leader = await waitFor('a leader', () => set.leader());
    const other = leader === 'b' ? 'c' : 'b';
    const app = new App('servers', { connection: set.connect(other) });
    const stopping = servers.get(leader)!;
    const stoppedAt = Date.now();
    process.kill(stopping.pid, 'SIGTERM');
    await waitFor('the other server to take the lease', async () => (await set.leader()) === other, 10_000);
    // Released as the server stops, not run out: taken at the next try.
    expect(Date.now() - stoppedAt).toBeLessThan(LEASE_MS);
    await stopping.exited;
    servers.delete(leader);
    const out = (await fixtureFn<[number]>(app, 'square').map([7, 8])) as Squared[];
    expect(out.map((o) => o.square)).toEqual([49, 64]);
  });
});

describe('a worker given every server of the set (STOWAGE_SERVER=b,c)', () => {
  const set = serverSet();
  const { servers } = set;

  beforeAll(async () => {
    await set.start();
    await set.startServers('a', 'b', 'c');
  }, 90_000);

  afterAll(() => set.stop());

  it('reconnects through another server of its list when the one it used dies, and runs calls again', async () => {
    expect(await set.leader()).toBe('a');
    // c does not answer while the worker connects, so its stream goes through b.
    const c = servers.get('c')!;
    process.kill(c.pid, 'SIGSTOP');
    let w: WorkerProcess;
    try {
      w = await startWorker({ id: 'wl', server: `${servers.get('b')!.address},${c.address}`, token: set.token, slots: 1 });
    } finally {
      process.kill(c.pid, 'SIGCONT');
    }
    set.adopt('wl', w);
    const app = new App('servers', { connection: set.connect('a') });
    expect(await fixtureFn<[number, number]>(app, 'add').remote(1, 2)).toBe(3);
    await servers.get('b')!.kill('SIGKILL');
    servers.delete('b');
    // Its stream through b broke; the worker registers again through c, the one left in its list.
    await waitFor('the worker to be registered again', async () => (await BridgeAdmin.workers(set.connect('a'))).some((x) => x.workerId === 'wl'), 20_000);
    const out = (await fixtureFn<[number]>(app, 'square').map([3, 4])) as Squared[];
    expect(out.map((o) => o.square)).toEqual([9, 16]);
    expect(new Set(out.map((o) => o.worker))).toEqual(new Set(['wl']));
  });
});

describe('compute bridge on two servers with mutual TLS', () => {
  const certs = tempDir('bridge-certs');
  const file = (name: string) => join(certs, name);
  createCerts({ dir: certs, client: 'peer' });
  const clientTls = { STOWAGE_TLS_CA: file('ca.pem'), STOWAGE_TLS_CLIENT_CERT: file('client.pem'), STOWAGE_TLS_CLIENT_KEY: file('client-key.pem') };
  const set = serverSet({
    serveArgs: ['--tls-cert', file('server.pem'), '--tls-key', file('server-key.pem'), '--tls-client-ca', file('ca.pem')],
    // What the servers present to the leader, as clients.
    env: clientTls,
    connect: { tlsCa: file('ca.pem'), tlsClientCert: file('client.pem'), tlsClientKey: file('client-key.pem') },
    workerArgs: ['--tls-ca', file('ca.pem'), '--tls-client-cert', file('client.pem'), '--tls-client-key', file('client-key.pem')],
  });

  beforeAll(async () => {
    await set.start();
    await set.startServers('a', 'b');
  }, 90_000);

  afterAll(() => set.stop());

  it('a worker on the follower runs calls submitted through it, forwarded over TLS with a client certificate', async () => {
    expect(await set.leader()).toBe('a');
    await set.startWorker('wt', 'b');
    const app = new App('servers', { connection: set.connect('b') });
    expect(await fixtureFn<[number, number]>(app, 'add').remote(1, 2)).toBe(3);
    expect((await BridgeAdmin.workers(set.connect('a'))).map((w) => w.workerId)).toEqual(['wt']);
  });
});
