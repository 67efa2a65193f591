/**
 * Dicts and queues on a real Redis Cluster (3 masters, one replica each,
 * cluster-node-timeout 1000), beyond the shared contract suites:
 * - two `stowage serve` processes on one Cluster (one given every node, one a
 *   single seed with --redis-cluster): a blocking get on one wakes on a put
 *   through the other, for queues on every shard; a dict written through one
 *   is read through the other; a master SIGKILLed: ops settle (ok or
 *   UNAVAILABLE, never a hang) and resume on the promoted replica;
 * - wake-ups survive losing the node the subscriber connection was on;
 * - volume heads shared through the Cluster by two volume servers over one
 *   s3rver bucket: a commit through one is read at once through the other;
 * - --redis-wait: every acknowledged write survives a master's death, and a
 *   WAIT that cannot be met fails UNAVAILABLE saying so.
 * Bounds are generous (the machine is noisy); nothing asserts a duration.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Connection, Dict, Queue, Volume } from '../src/client/index.js';
import { isStowageError } from '../src/common/errors.js';
import { RedisQueueBackend } from '../src/queue/redis.js';
import { removeDir, spawnStowage, startS3rver, tempDir, uniqueName, type ChildServer } from './support/processes.js';
import { startRedisCluster, type RedisCluster } from './support/redis-cluster.js';
import { eventually, sleep, within } from './support/state-servers.js';

const run = promisify(execFile);

/** Names (made with `prefix`) whose keys live on `count` different masters, and the master of each. */
async function namesOnShards(cluster: RedisCluster, kind: 'dict' | 'queue', count: number): Promise<{ name: string; master: number }[]> {
  const found = new Map<number, string>();
  for (let i = 0; found.size < count && i < 200; i++) {
    const name = uniqueName(kind);
    const key = kind === 'dict' ? `stowage:dict:{${name}}:meta` : `stowage:queue:{${name}}:meta`;
    const master = await cluster.masterOf(key);
    if (!found.has(master)) found.set(master, name);
  }
  if (found.size < count) throw new Error(`no ${kind} names on ${count} shards`);
  return [...found].map(([master, name]) => ({ name, master }));
}

/** What a call did: 'ok', a StowageError code, or 'other: …'. */
async function outcome(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (err) {
    return isStowageError(err) ? err.code : `other: ${String(err)}`;
  }
}

async function startServers(args: string[][]): Promise<{ servers: ChildServer[]; connections: [Connection, Connection] }> {
  const servers: ChildServer[] = [];
  for (const a of args) servers.push(await spawnStowage(tempDir('stowage'), ['--only', 'dict,queue', ...a]));
  const [x, y] = servers.map((s) => new Connection({ server: s.address, token: s.token }));
  return { servers, connections: [x!, y!] };
}

describe('two stowage servers on one Redis Cluster', () => {
  let cluster: RedisCluster;
  let servers: ChildServer[] = [];
  let a: Connection;
  let b: Connection;

  beforeAll(async () => {
    cluster = await startRedisCluster();
    // A knows every node; B one seed and --redis-cluster.
    ({ servers, connections: [a, b] } = await startServers([
      ['--redis-url', cluster.url],
      ['--redis-url', cluster.seedUrl, '--redis-cluster'],
    ]));
  });
  afterAll(async () => {
    a?.close();
    b?.close();
    for (const s of servers) await s.kill();
    for (const s of servers) removeDir(s.dataDir);
    await cluster?.stop();
    if (cluster) removeDir(cluster.dir);
  });

  it('wakes a blocking get through A on a put through B, for queues on every shard', async () => {
    for (const { name } of await namesOnShards(cluster, 'queue', 3)) {
      const qa = await Queue.fromName<string>(name, { createIfMissing: true, connection: a });
      const qb = await Queue.fromName<string>(name, { connection: b });
      const got = qa.get({ timeoutMs: 60_000 });
      await sleep(200); // the get is blocked by now (if not, it finds the item at once: fine too)
      await qb.put(`to ${name}`);
      expect(await within(`the get on ${name} to wake`, got, 20_000)).toBe(`to ${name}`);
    }
    // Both servers list every queue, whatever its shard.
    expect((await Queue.list({ connection: b })).length).toBeGreaterThanOrEqual(3);
  });

  it('reads through B what was written through A, for dicts on every shard, and lists them', async () => {
    const names = (await namesOnShards(cluster, 'dict', 3)).map((n) => n.name);
    for (const name of names) {
      const da = await Dict.fromName<string, string>(name, { createIfMissing: true, connection: a });
      await da.put('k', `v of ${name}`);
      await da.update([['x', '1'], ['y', '2']] as const);
      const db = await Dict.fromName<string, string>(name, { connection: b });
      expect(await db.get('k')).toBe(`v of ${name}`);
      expect(await db.len()).toBe(3);
    }
    const listed = (await Dict.list({ connection: b })).map((i) => i.name);
    for (const name of names) expect(listed).toContain(name);
  });

  it('shares volume heads through the Cluster: a commit through one server is read at once through another', async () => {
    const s3 = await startS3rver({ dir: tempDir('s3rver') });
    const token = `stw_${randomBytes(24).toString('base64url')}`;
    const prefix = uniqueName('cluster-heads');
    const volumeServers: ChildServer[] = [];
    const conns: Connection[] = [];
    try {
      for (const url of [[cluster.url], [cluster.seedUrl, '--redis-cluster']]) {
        const dir = tempDir('stowage');
        writeFileSync(join(dir, 'token'), `${token}\n`, { mode: 0o600 });
        const args = ['--only', 'volume', '--redis-url', ...url, '--s3-endpoint', s3.endpoint, '--s3-bucket', s3.bucket, '--s3-prefix', prefix, '--s3-region', 'us-east-1'];
        volumeServers.push(await spawnStowage(dir, args, { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER' }));
      }
      const [onA, onB] = volumeServers.map((s) => new Connection({ server: s.address, token }));
      conns.push(onA!, onB!);
      const name = uniqueName('vol');
      const vol = await Volume.fromName(name, { createIfMissing: true, connection: onA });
      for (let i = 1; i <= 3; i++) {
        expect((await vol.batchUpload().putFile(Buffer.from(`v${i}`), `f${i}.txt`).commit()).version).toBe(i);
        const seen = await Volume.fromName(name, { connection: onB });
        expect((await seen.info()).latestVersion).toBe(i);
        expect((await seen.readBytes(`f${i}.txt`)).toString()).toBe(`v${i}`);
      }
    } finally {
      for (const c of conns) c.close();
      for (const s of volumeServers) {
        await s.kill();
        removeDir(s.dataDir);
      }
      await s3.stop();
      removeDir(s3.dir);
    }
  }, 60_000);

  it('settles every op while a master fails over and resumes on the promoted replica', async () => {
    const [{ name: qname, master }] = await namesOnShards(cluster, 'queue', 1);
    const dname = (await namesOnShards(cluster, 'dict', 3)).find((d) => d.master === master)!.name;
    const q = await Queue.fromName<string>(qname!, { createIfMissing: true, connection: a });
    const d = await Dict.fromName<string, string>(dname, { createIfMissing: true, connection: a });
    await q.put('before');
    await d.put('k', 'before');

    const failover = cluster.kill(master!);
    let done = false;
    void failover.finally(() => (done = true));
    const seen = new Set<string>();
    while (!done) {
      // Each op ends (ok or UNAVAILABLE) well within its bound: none hangs on the dead master.
      seen.add(await within('a dict put during the failover', outcome(d.put('k', 'during')), 20_000));
      seen.add(await within('a queue put during the failover', outcome(q.put('during')), 20_000));
      await sleep(100);
    }
    await failover;
    for (const o of seen) expect(['ok', 'UNAVAILABLE']).toContain(o);

    // Once the replica has taken over, both servers work on that shard again.
    await eventually('dict ops to resume', async () => (await outcome(d.put('k', 'after'))) === 'ok');
    const db = await Dict.fromName<string, string>(dname, { connection: b });
    expect(await db.get('k')).toBe('after');
    await eventually('queue puts to resume', async () => (await outcome(q.put('after'))) === 'ok');
    const qb = await Queue.fromName<string>(qname!, { connection: b });
    const got = qb.get({ timeoutMs: 60_000 });
    expect(await within('a get after the failover', got, 20_000)).toBeTypeOf('string');
    // A blocking get on A still wakes on a put through B.
    await qb.clear();
    const waiting = q.get({ timeoutMs: 60_000 });
    await sleep(200);
    await qb.put('wake');
    expect(await within('a blocking get after the failover', waiting, 20_000)).toBe('wake');
  });
});

describe('wake-ups on a Redis Cluster', () => {
  let cluster: RedisCluster;
  const backends: RedisQueueBackend[] = [];

  beforeAll(async () => {
    cluster = await startRedisCluster();
  });
  afterAll(async () => {
    for (const q of backends) await q.close();
    await cluster?.stop();
    if (cluster) removeDir(cluster.dir);
  });

  /** Ports of the nodes holding a subscribed connection now. */
  async function subscribedNodes(): Promise<number[]> {
    const out: number[] = [];
    for (const n of cluster.nodes.filter((x) => x.pid !== 0)) {
      const list = (await run('redis-cli', ['-p', String(n.port), 'client', 'list'])).stdout;
      if (/ sub=[1-9]/.test(list)) out.push(n.port);
    }
    return out;
  }

  it('survive losing the node the subscriber was on, for puts on every shard from another backend', async () => {
    const getter = await RedisQueueBackend.connect({ url: cluster.url });
    backends.push(getter);
    // The getter's subscription is the only one so far: its node is the one to kill.
    await eventually('the subscription', async () => (await subscribedNodes()).length === 1);
    const [subNode] = await subscribedNodes();
    const putter = await RedisQueueBackend.connect({ url: cluster.seedUrl, cluster: true });
    backends.push(putter);
    const names = (await namesOnShards(cluster, 'queue', 3)).map((n) => n.name);
    for (const name of names) await putter.create(name);

    await cluster.kill(subNode!);
    for (const name of names) {
      // A message published while ioredis resubscribes is lost (WaitingGets' 1 s re-check covers
      // that); once resubscribed, every put wakes a waiter. waitForItems hears only pub/sub.
      await eventually(`a wake-up for ${name} after the failover`, async () => {
        const stop = new AbortController();
        let woken = false;
        const wait = getter.waitForItems(name, '', stop.signal).then(() => (woken = !stop.signal.aborted));
        await sleep(50);
        await putter.put(name, [Buffer.from('x')]).catch(() => undefined);
        await Promise.race([wait, sleep(2000)]);
        stop.abort();
        await wait;
        return woken;
      });
    }
  });
});

describe('--redis-wait on a Redis Cluster', () => {
  let cluster: RedisCluster;
  let servers: ChildServer[] = [];
  let one: Connection;
  let two: Connection;

  beforeAll(async () => {
    cluster = await startRedisCluster();
    ({ servers, connections: [one, two] } = await startServers([
      ['--redis-url', cluster.url, '--redis-wait', '1/2s'],
      ['--redis-url', cluster.url, '--redis-wait', '2/200ms'],
    ]));
  });
  afterAll(async () => {
    one?.close();
    two?.close();
    for (const s of servers) await s.kill();
    for (const s of servers) removeDir(s.dataDir);
    await cluster?.stop();
    if (cluster) removeDir(cluster.dir);
  });

  it('fails a write UNAVAILABLE when fewer replicas than asked acknowledge it', async () => {
    const name = uniqueName('dict');
    const err = await Dict.fromName<string, string>(name, { createIfMissing: true, connection: two }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isStowageError(err, 'UNAVAILABLE'), String(err)).toBe(true);
    expect((err as Error).message).toContain('written to the master but acknowledged by only 1 of 2 replicas within 200 ms; it may be lost at a failover');
    // Reads do not WAIT: the dict (created on the master) is there.
    const d = await Dict.fromName<string, string>(name, { connection: one });
    expect(await d.len()).toBe(0);
  });

  it('keeps every acknowledged write when the master dies mid-loop and its replica takes over', async () => {
    const [{ name: dname, master }] = await namesOnShards(cluster, 'dict', 1);
    const qname = (await namesOnShards(cluster, 'queue', 3)).find((q) => q.master === master)!.name;
    const d = await Dict.fromName<string, number>(dname!, { createIfMissing: true, connection: one });
    const q = await Queue.fromName<number>(qname, { createIfMissing: true, connection: one });
    const ackedKeys: number[] = [];
    const ackedItems: number[] = [];
    let failover: Promise<void> | undefined;
    let done = false;
    // The loop writes on until the failover is over; from then on the shard has no replica left,
    // so writes there fail WAIT (UNAVAILABLE) and the loop stops.
    for (let i = 0; !done; i++) {
      if (i === 50) {
        failover = cluster.kill(master!);
        void failover.finally(() => (done = true));
      }
      if ((await outcome(d.put(`k${i}`, i))) === 'ok') ackedKeys.push(i);
      if ((await outcome(q.put(i))) === 'ok') ackedItems.push(i);
      if (i > 5000) throw new Error('the failover did not end');
    }
    await failover;
    expect(ackedKeys.length).toBeGreaterThanOrEqual(50);
    await eventually('reads on the promoted replica', async () => (await outcome(d.len())) === 'ok');
    const values = await d.getMany(ackedKeys.map((i) => `k${i}`));
    const lost = ackedKeys.filter((i, j) => values[j] !== i);
    expect(lost, 'acknowledged dict writes lost at the failover').toEqual([]);
    // Reads only (iterate peeks): a get is a write, and WAIT fails now that the shard has no replica.
    const items = new Set<number>();
    for await (const x of q.iterate()) items.add(x);
    expect(ackedItems.filter((i) => !items.has(i)), 'acknowledged queue puts lost at the failover').toEqual([]);
  });
});
