/**
 * The queue service end to end: the SDK's Queue against a real stowage
 * server, once with queues in LMDB, once in a real redis-server, and once with
 * Redis and the server in containers (skipped, with the reason, without Docker
 * or the images). Covers
 * FIFO order, partitions and their TTL, blocking gets woken from another
 * client (and, on Redis, from another server), at-most-once delivery to
 * concurrent consumers, ack mode with redelivery and dead letters, maxSize
 * back-pressure, and bad input.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  Connection,
  DEAD_LETTER_PARTITION,
  FailedPreconditionError,
  InvalidArgumentError,
  MAX_ITEM_BYTES,
  NotFoundError,
  Queue,
  type QueueFromNameOptions,
} from '../src/client/index.js';
import { QueueOpKind } from '../src/gen/stowage/v1/queue.js';
import { queueOp } from '../src/client/ops.js';
import { expectFailure } from './support/checks.js';
import { removeDir, startStowage, uniqueName, type Stowage } from './support/processes.js';
import { skipWithoutContainers } from './support/containers.js';
import {
  containerStateSetups,
  eventually,
  sleep,
  stateSetups,
  within,
  type StateServer,
  type StateSetup,
} from './support/state-servers.js';

const rawOp = queueOp;

/** Tracks a promise without leaving it unhandled: `settled` flips when it resolves or rejects. */
function track<T>(p: Promise<T>): { promise: Promise<T>; settled: () => boolean } {
  let done = false;
  p.then(
    () => (done = true),
    () => (done = true),
  );
  return { promise: p, settled: () => done };
}

async function drainAll<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

function service(setup: StateSetup): void {
  let stowage: StateServer;
  let connection: Connection;
  const extra: Connection[] = [];

  beforeAll(async () => {
    stowage = await setup.start({ idle: { flushMs: 50, sweepMs: 100 } });
    connection = stowage.connection;
  });
  afterAll(async () => {
    for (const c of extra) c.close();
    await setup.stop();
  });

  const newConnection = () => {
    const c = new Connection({ server: stowage.server.address, token: stowage.server.token });
    extra.push(c);
    return c;
  };
  const open = <T = unknown>(opts: Omit<QueueFromNameOptions, 'createIfMissing'> = {}) =>
    Queue.fromName<T>(uniqueName('queue'), { createIfMissing: true, connection, ...opts });

  it('put, putMany, get and getMany keep FIFO order', async () => {
    const q = await open<number>();
    await q.put(1);
    await q.put(2);
    await q.putMany([3, 4, 5, 6]);
    expect(await q.len()).toBe(6);
    expect(await q.get()).toBe(1);
    expect(await q.getMany(3)).toEqual([2, 3, 4]);
    // getMany returns what there is, up to n.
    expect(await q.getMany(10)).toEqual([5, 6]);
    expect(await q.get({ block: false })).toBeUndefined();
    expect(await q.len()).toBe(0);
    // Structured values survive msgpack.
    const obj = await open<{ a: number[]; b: string }>();
    await obj.put({ a: [1, 2], b: 'x' });
    expect(await obj.get()).toEqual({ a: [1, 2], b: 'x' });
  });

  it('partitions are separate queues; len counts one partition or, with total, all', async () => {
    const q = await open<string>();
    await q.putMany(['d1', 'd2']);
    await q.putMany(['a1', 'a2', 'a3'], { partition: 'a' });
    await q.put('b1', { partition: 'b' });
    expect(await q.len()).toBe(2);
    expect(await q.len({ partition: 'a' })).toBe(3);
    expect(await q.len({ partition: 'b' })).toBe(1);
    expect(await q.len({ partition: 'nobody' })).toBe(0);
    expect(await q.len({ total: true })).toBe(6);
    expect(await q.getMany(10, { partition: 'a' })).toEqual(['a1', 'a2', 'a3']);
    expect(await q.get({ partition: 'a', block: false })).toBeUndefined();
    expect(await q.get({ partition: 'b' })).toBe('b1');
    expect(await q.getMany(10)).toEqual(['d1', 'd2']);
    expect(await q.len({ total: true })).toBe(0);
  });

  it('a partition expires with its items partitionTtlMs after its last put', async () => {
    const q = await open<string>();
    await q.putMany(['x', 'y'], { partition: 'short', partitionTtlMs: 300 });
    await q.put('kept', { partition: 'long', partitionTtlMs: 600_000 });
    await q.put('default');
    expect(await q.len({ partition: 'short' })).toBe(2);
    await sleep(400);
    await eventually('the short partition expires', async () => (await q.len({ partition: 'short' })) === 0);
    expect(await q.get({ partition: 'short', block: false })).toBeUndefined();
    expect(await drainAll(q.iterate({ partition: 'short' }))).toEqual([]);
    expect(await q.len({ total: true })).toBe(2);
    expect(await q.get({ partition: 'long', block: false })).toBe('kept');
    expect(await q.get({ block: false })).toBe('default');
  });

  it('get on an empty queue: block false and a timeout both return undefined', async () => {
    const q = await open<string>();
    expect(await q.get({ block: false })).toBeUndefined();
    expect(await q.getMany(5, { block: false })).toEqual([]);
    expect(await within('get with timeoutMs 200', q.get({ timeoutMs: 200 }), 30_000)).toBeUndefined();
    expect(await within('getMany with timeoutMs 200', q.getMany(3, { timeoutMs: 200 }), 30_000)).toEqual([]);
    // The queue still works after the timed-out gets.
    await q.put('after');
    expect(await q.get({ block: false })).toBe('after');
  });

  it('a get blocked in one client is woken by a put from another client and receives that item', async () => {
    const name = uniqueName('wake');
    const a = await Queue.fromName<string>(name, { createIfMissing: true, connection: newConnection() });
    const b = await Queue.fromName<string>(name, { connection: newConnection() });
    const blocked = track(a.get());
    await sleep(500);
    expect(blocked.settled()).toBe(false);
    await b.put('hello from b');
    expect(await within('the blocked get', blocked.promise, 30_000)).toBe('hello from b');
    expect(await b.len()).toBe(0);
    // A blocked get in a partition is not woken for another partition's item.
    const inP = track(a.get({ partition: 'p' }));
    await b.put('default item');
    await sleep(500);
    expect(inP.settled()).toBe(false);
    await b.put('p item', { partition: 'p' });
    expect(await within('the blocked partition get', inP.promise, 30_000)).toBe('p item');
    expect(await b.get({ block: false })).toBe('default item');
  });

  it('a blocked get whose client goes away takes no item: a later put stays for the next getter', async () => {
    const name = uniqueName('gone');
    const goneConnection = new Connection({ server: stowage.server.address, token: stowage.server.token });
    const gone = await Queue.fromName<string>(name, { createIfMissing: true, connection: goneConnection });
    const other = await Queue.fromName<string>(name, { connection: newConnection() });
    const blocked = track(gone.get());
    await sleep(300);
    goneConnection.close();
    await expect(within('the abandoned get', blocked.promise, 30_000)).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    await sleep(300);
    await other.put('for the living');
    expect(await within('the next get', other.get({ timeoutMs: 10_000 }), 30_000)).toBe('for the living');
  });

  it('a blocked get does not hold up other operations on the same connection', async () => {
    const q = await open<string>();
    const blocked = track(q.get());
    await q.put('other', { partition: 'side' });
    expect(await within('len while a get is blocked', q.len({ partition: 'side' }), 30_000)).toBe(1);
    expect(blocked.settled()).toBe(false);
    await q.put('wake');
    expect(await within('the blocked get', blocked.promise, 30_000)).toBe('wake');
  });

  it('plain mode delivers each item once: 4 concurrent consumers draining 2,000 items', async () => {
    const N = 2000;
    const name = uniqueName('drain');
    const producer = await Queue.fromName<number>(name, { createIfMissing: true, connection });
    await producer.putMany(Array.from({ length: N }, (_, i) => i));
    const consumers = await Promise.all(
      Array.from({ length: 4 }, () => Queue.fromName<number>(name, { connection: newConnection() })),
    );
    const got = await Promise.all(
      consumers.map(async (c, ci) => {
        const mine: number[] = [];
        for (;;) {
          // Mix single gets and small batches.
          const batch = ci % 2 === 0 ? await c.getMany(7, { block: false }) : [await c.get({ block: false })];
          const items = batch.filter((x): x is number => x !== undefined);
          if (items.length === 0) return mine;
          mine.push(...items);
        }
      }),
    );
    const all = got.flat();
    expect(all.length).toBe(N);
    expect(new Set(all).size).toBe(N);
    expect(all.every((x) => Number.isInteger(x) && x >= 0 && x < N)).toBe(true);
    // Each consumer saw its items in queue order.
    for (const mine of got) expect([...mine].sort((x, y) => x - y)).toEqual(mine);
    expect(await producer.len({ total: true })).toBe(0);
  });

  it('ack mode: an item not acked is delivered again (deliveries 2); ack() returns true and removes it', async () => {
    const q = await open<string>();
    await q.putMany(['job', 'later']);
    const first = await q.get({ ack: true, visibilityMs: 300 });
    expect(first?.value).toBe('job');
    expect(first?.deliveries).toBe(1);
    expect(first?.leaseId).toBeTruthy();
    // The leased item still counts.
    expect(await q.len()).toBe(2);
    // Once the lease has run out, the item is redelivered before newer items, at its original position.
    await sleep(500);
    const again = await q.get({ ack: true, visibilityMs: 60_000, block: false });
    expect(again?.value).toBe('job');
    expect(again?.deliveries).toBe(2);
    expect(again?.leaseId).not.toBe(first?.leaseId);
    // The expired lease is no longer held.
    expect(await first!.ack()).toBe(false);
    expect(await again!.ack()).toBe(true);
    expect(await again!.ack()).toBe(false);
    expect(await q.len()).toBe(1);
    const next = await q.get({ ack: true, visibilityMs: 60_000, block: false });
    expect(next?.value).toBe('later');
    expect(next?.deliveries).toBe(1);
    expect(await q.ack([next!])).toBe(1);
    expect(await q.len({ total: true })).toBe(0);
    expect(await q.get({ block: false })).toBeUndefined();
  });

  it('after maxDeliveries unacked deliveries an item moves to the dead-letter partition', async () => {
    const q = await open<string>({ maxDeliveries: 2 });
    expect((await q.info()).maxDeliveries).toBe(2);
    await q.put('poison');
    const d1 = await q.get({ ack: true, visibilityMs: 300 });
    expect(d1?.deliveries).toBe(1);
    const d2 = await within('the second delivery', q.get({ ack: true, visibilityMs: 300, timeoutMs: 30_000 }), 60_000);
    expect(d2?.value).toBe('poison');
    expect(d2?.deliveries).toBe(2);
    await sleep(400);
    await eventually('the item is a dead letter', async () => (await q.len({ partition: DEAD_LETTER_PARTITION })) === 1);
    expect(await q.len()).toBe(0);
    expect(await q.len({ total: true })).toBe(1);
    expect(await q.get({ ack: true, visibilityMs: 300, block: false })).toBeUndefined();
    expect(await drainAll(q.iterate({ partition: DEAD_LETTER_PARTITION }))).toEqual(['poison']);
    // Dead letters can be taken out for inspection.
    expect(await q.get({ partition: DEAD_LETTER_PARTITION, block: false })).toBe('poison');
    expect(await q.len({ total: true })).toBe(0);
    // ...but not put there.
    await expectFailure(() => q.put('x', { partition: DEAD_LETTER_PARTITION }), InvalidArgumentError, 'INVALID_ARGUMENT', /dead/);
  });

  it('maxSize: a full queue refuses put({block:false}) and put({timeoutMs}) with FailedPreconditionError', async () => {
    const q = await open<number>({ maxSize: 3 });
    await q.putMany([1, 2, 3]);
    await expectFailure(() => q.put(4, { block: false }), FailedPreconditionError, 'FAILED_PRECONDITION', /full/);
    const started = Date.now();
    await expectFailure(() => q.put(4, { timeoutMs: 300 }), FailedPreconditionError, 'FAILED_PRECONDITION', /full/);
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    // putMany is all or none.
    await q.get();
    await expectFailure(() => q.putMany([4, 5], { block: false }), FailedPreconditionError, 'FAILED_PRECONDITION');
    expect(await q.len({ total: true })).toBe(2);
    expect(await drainAll(q.iterate())).toEqual([2, 3]);
  });

  it('maxSize: a blocking put waits while the queue is full and completes once a consumer frees room', async () => {
    const name = uniqueName('full');
    const producer = await Queue.fromName<number>(name, { createIfMissing: true, maxSize: 2, connection: newConnection() });
    const consumer = await Queue.fromName<number>(name, { connection: newConnection() });
    await producer.putMany([1, 2]);
    const put = track(producer.put(3));
    await sleep(500);
    expect(put.settled()).toBe(false);
    expect(await consumer.len()).toBe(2);
    expect(await consumer.get()).toBe(1);
    await within('the blocked put', put.promise, 30_000);
    expect(await consumer.getMany(5)).toEqual([2, 3]);
  });

  it('a put blocked on a full queue does not hold up other operations issued with it on the same connection', async () => {
    const q = await open<number>({ maxSize: 1 });
    await q.put(1);
    const put = track(q.put(2));
    // Issued in the same tick as the blocked put: batched with it.
    const len = track(q.len());
    try {
      expect(await within('len issued beside a blocked put', len.promise, 10_000)).toBe(1);
      expect(put.settled()).toBe(false);
    } finally {
      // Free room so that the put (and anything batched with it) completes.
      const other = await Queue.fromName<number>(q.name, { connection: newConnection() });
      expect(await other.get()).toBe(1);
      await within('the blocked put', put.promise, 30_000);
    }
    expect(await q.get()).toBe(2);
  });

  it('iterate() reads every item in order without removing any', async () => {
    const q = await open<number>();
    const N = 2500;
    await q.putMany(Array.from({ length: N }, (_, i) => i));
    await q.putMany([100, 200], { partition: 'p' });
    const seen = await drainAll(q.iterate());
    expect(seen.length).toBe(N);
    expect(seen).toEqual(Array.from({ length: N }, (_, i) => i));
    expect(await drainAll(q.iterate({ partition: 'p' }))).toEqual([100, 200]);
    expect(await q.len()).toBe(N);
    expect(await q.get()).toBe(0);
    expect(await drainAll(q.iterate({ partition: 'empty' }))).toEqual([]);
  });

  it('clear({partition}) empties one partition, clear({all}) every one', async () => {
    const q = await open<string>();
    await q.putMany(['d1', 'd2']);
    await q.put('a1', { partition: 'a' });
    await q.put('b1', { partition: 'b' });
    await q.clear({ partition: 'a' });
    expect(await q.len({ partition: 'a' })).toBe(0);
    expect(await q.len({ total: true })).toBe(3);
    await q.clear();
    expect(await q.len()).toBe(0);
    expect(await q.len({ total: true })).toBe(1);
    await q.put('d3');
    await q.clear({ all: true });
    expect(await q.len({ total: true })).toBe(0);
    expect(await q.get({ partition: 'b', block: false })).toBeUndefined();
    // The queue itself stays.
    await q.put('again');
    expect(await q.get()).toBe('again');
  });

  it('Queue.list shows queues with their settings and Queue.delete removes one', async () => {
    const q = await open<string>({ maxSize: 17, maxDeliveries: 3 });
    await q.put('x');
    const info = (await Queue.list({ connection })).find((i) => i.name === q.name);
    expect(info).toMatchObject({ name: q.name, maxSize: 17, maxDeliveries: 3, idleTimeoutMs: 0 });
    await Queue.delete(q.name, { connection });
    expect((await Queue.list({ connection })).map((i) => i.name)).not.toContain(q.name);
    await expectFailure(() => q.put('y'), NotFoundError, 'NOT_FOUND', /stowage queue create/);
    await expectFailure(() => Queue.delete(q.name, { connection }), NotFoundError, 'NOT_FOUND');
    const again = await Queue.fromName<string>(q.name, { createIfMissing: true, connection });
    expect(await again.len({ total: true })).toBe(0);
  });

  it('a queue with idleTimeoutMs is deleted after going unused, and stays while used', async () => {
    const idle = await open<number>({ idleTimeoutMs: 1000 });
    // The busy one gets a longer timeout so that a stalled test machine does not expire it between uses.
    const busy = await open<number>({ idleTimeoutMs: 2000 });
    const busySince = Date.now();
    expect((await idle.info()).idleTimeoutMs).toBe(1000);
    await idle.put(1);
    const names = async () => new Set((await Queue.list({ connection })).map((i) => i.name));
    let i = 0;
    let busyFailure: unknown;
    await eventually('the unused queue is deleted', async () => {
      await busy.put(i++).catch((err: unknown) => (busyFailure ??= err));
      return !(await names()).has(idle.name);
    });
    const until = Math.max(Date.now() + 2500, busySince + 5000);
    while (Date.now() < until) {
      await busy.put(i++);
      await sleep(150);
    }
    expect(busyFailure).toBeUndefined();
    expect((await names()).has(busy.name)).toBe(true);
    expect(await busy.len()).toBe(i);
    await expectFailure(() => idle.get({ block: false }), NotFoundError, 'NOT_FOUND', /stowage queue create/);
  });

  it('an ephemeral queue exists until close() and is deleted by it', async () => {
    const q = await Queue.ephemeral<string>({ connection });
    await q.put('v');
    expect((await Queue.list({ connection })).map((i) => i.name)).toContain(q.name);
    await q.close();
    expect((await Queue.list({ connection })).map((i) => i.name)).not.toContain(q.name);
    await expectFailure(() => Queue.fromName(q.name, { connection }), NotFoundError, 'NOT_FOUND', /stowage queue create/);
    await q.close();
  });

  describe('bad input', () => {
    it('an item over 1 MiB is refused by the SDK and by the server; exactly 1 MiB works', async () => {
      const q = await open<Buffer>({ encoding: 'raw' });
      await expectFailure(
        () => q.put(Buffer.alloc(MAX_ITEM_BYTES + 1)),
        InvalidArgumentError,
        'INVALID_ARGUMENT',
        new RegExp(String(MAX_ITEM_BYTES)),
      );
      await expectFailure(() => q.putMany([Buffer.from('ok'), Buffer.alloc(MAX_ITEM_BYTES + 1)]), InvalidArgumentError, 'INVALID_ARGUMENT');
      // Around the SDK.
      const res = await connection.unary(connection.queues.batch.bind(connection.queues), {
        id: 3,
        ops: [
          rawOp({ kind: QueueOpKind.QUEUE_OP_KIND_PUT, queue: q.name, items: [Buffer.alloc(MAX_ITEM_BYTES + 1)] }),
          rawOp({ kind: QueueOpKind.QUEUE_OP_KIND_PUT, queue: q.name, items: [Buffer.from('a'), Buffer.alloc(MAX_ITEM_BYTES + 1)] }),
          rawOp({ kind: QueueOpKind.QUEUE_OP_KIND_PUT, queue: q.name, partition: 'p'.repeat(65), items: [Buffer.from('a')] }),
          rawOp({ kind: QueueOpKind.QUEUE_OP_KIND_LEN, queue: q.name, all: true }),
        ],
      });
      expect(res.results.map((r) => r.error?.code)).toEqual(['INVALID_ARGUMENT', 'INVALID_ARGUMENT', 'INVALID_ARGUMENT', undefined]);
      expect(res.results[3]!.number).toBe(0);
      const exact = Buffer.alloc(MAX_ITEM_BYTES);
      for (let i = 0; i < exact.length; i += 1024) exact.writeUInt32LE(i, i);
      await q.put(exact);
      const got = await q.get();
      expect(got?.length).toBe(MAX_ITEM_BYTES);
      expect(got!.equals(exact)).toBe(true);
    });

    it('partition "" and a 65-byte partition are refused', async () => {
      const q = await open<string>();
      await expectFailure(() => q.put('x', { partition: '' }), InvalidArgumentError, 'INVALID_ARGUMENT', /partition/);
      await expectFailure(() => q.get({ partition: '' }), InvalidArgumentError, 'INVALID_ARGUMENT', /partition/);
      const long = 'p'.repeat(65);
      await expectFailure(() => q.put('x', { partition: long }), InvalidArgumentError, 'INVALID_ARGUMENT', /64/);
      await expectFailure(() => q.len({ partition: long }), InvalidArgumentError, 'INVALID_ARGUMENT', /64/);
      // 64 bytes is fine.
      await q.put('x', { partition: 'p'.repeat(64) });
      expect(await q.len({ partition: 'p'.repeat(64) })).toBe(1);
      expect(await q.len({ total: true })).toBe(1);
    });

    it('an unknown queue is NOT_FOUND with the command that creates it', async () => {
      const name = uniqueName('nosuch');
      await expectFailure(() => Queue.fromName(name, { connection }), NotFoundError, 'NOT_FOUND', /stowage queue create/, new RegExp(name));
      // Operations on a queue deleted under an SDK object say the same.
      const q = await Queue.fromName<string>(name, { createIfMissing: true, connection });
      await Queue.delete(name, { connection });
      await expectFailure(() => q.get({ block: false }), NotFoundError, 'NOT_FOUND', /stowage queue create/);
      await expectFailure(() => q.get({ timeoutMs: 200 }), NotFoundError, 'NOT_FOUND', /stowage queue create/);
    });

    it('getMany(0) and other counts that are not positive integers are refused', async () => {
      const q = await open<string>();
      await q.put('x');
      for (const n of [0, -1, 1.5]) {
        await expectFailure(() => q.getMany(n), InvalidArgumentError, 'INVALID_ARGUMENT', /getMany/);
      }
      expect(await q.len()).toBe(1);
    });

    it.each(['', 'a/b', '..', 'x'.repeat(65)])('the queue name %j is refused', async (name) => {
      await expectFailure(
        () => Queue.fromName(name, { createIfMissing: true, connection }),
        InvalidArgumentError,
        'INVALID_ARGUMENT',
        /invalid queue name/,
      );
    });
  });
}

describe.each(stateSetups())('queue service over $name', service);
describe.skipIf(skipWithoutContainers('the queue service on Redis and a server in containers')).each(containerStateSetups())(
  'queue service over $name',
  service,
);

describe('queue service: two stowage servers on one Redis', () => {
  const setup = stateSetups().find((s) => s.name === 'redis')!;
  let first: StateServer;
  let second: Stowage | undefined;

  beforeAll(async () => {
    first = await setup.start();
    second = await startStowage({ redisUrl: setup.redis()!.url });
  });
  afterAll(async () => {
    try {
      await second?.stop();
      if (second) removeDir(second.dataDir);
    } finally {
      await setup.stop();
    }
  });

  it('a get blocked on server 1 is woken by a put through server 2', async () => {
    const name = uniqueName('two-servers');
    const one = await Queue.fromName<string>(name, { createIfMissing: true, connection: first.connection });
    const two = await Queue.fromName<string>(name, { connection: second!.connection });
    const blocked = track(one.get());
    await sleep(500);
    expect(blocked.settled()).toBe(false);
    await two.put('via server 2');
    expect(await within('the get blocked on server 1', blocked.promise, 30_000)).toBe('via server 2');
    // And the other way round, with partitions and ack mode.
    const leased = track(two.get({ partition: 'p', ack: true, visibilityMs: 60_000 }));
    await sleep(500);
    expect(leased.settled()).toBe(false);
    await one.put('via server 1', { partition: 'p' });
    const lease = await within('the get blocked on server 2', leased.promise, 30_000);
    expect(lease?.value).toBe('via server 1');
    expect(await lease!.ack()).toBe(true);
    expect(await one.len({ total: true })).toBe(0);
  });
});
