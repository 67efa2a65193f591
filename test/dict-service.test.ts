/**
 * The dict service end to end: the SDK's Dict against a real stowage server,
 * once with dicts in LMDB, once in a real redis-server, and once with Redis and
 * the server in containers (skipped, with the reason, without Docker or the
 * images). Covers the Modal-like
 * surface, TTLs, counters, compare-and-set, paged iteration, idle expiry and
 * bad input (refused by the SDK and, when the SDK is bypassed, by the server).
 */
import type { CallOptions, Metadata, ServiceError } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  Connection,
  Dict,
  InvalidArgumentError,
  MAX_KEY_BYTES,
  MAX_VALUE_BYTES,
  NotFoundError,
} from '../src/client/index.js';
import { DictOpKind, type ScanRequest, type ScanResponse } from '../src/gen/stowage/v1/dict.js';
import { dictOp } from '../src/client/ops.js';
import { expectFailure } from './support/checks.js';
import { uniqueName } from './support/processes.js';
import { skipWithoutContainers } from './support/containers.js';
import { containerStateSetups, eventually, sleep, stateSetups, type StateServer, type StateSetup } from './support/state-servers.js';

const MiB = 1024 * 1024;

const rawOp = dictOp;

function service(setup: StateSetup): void {
  let stowage: StateServer;
  let connection: Connection;

  beforeAll(async () => {
    stowage = await setup.start({ idle: { flushMs: 50, sweepMs: 100 } });
    connection = stowage.connection;
  });
  afterAll(async () => {
    await setup.stop();
  });

  const open = <K = unknown, V = unknown>(opts: { encoding?: 'raw' | 'msgpack'; idleTimeoutMs?: number } = {}) =>
    Dict.fromName<K, V>(uniqueName('dict'), { createIfMissing: true, connection, ...opts });

  it('fromName of an unknown dict is NOT_FOUND with the command that creates it; createIfMissing creates it', async () => {
    const name = uniqueName('missing');
    await expectFailure(() => Dict.fromName(name, { connection }), NotFoundError, 'NOT_FOUND', /stowage dict create/, new RegExp(name));
    const d = await Dict.fromName(name, { createIfMissing: true, connection });
    expect(d.name).toBe(name);
    // Now it exists: found without createIfMissing, and createIfMissing again keeps its contents.
    await d.put('k', 1);
    const again = await Dict.fromName(name, { connection });
    expect(await again.get('k')).toBe(1);
    const created = await Dict.fromName(name, { createIfMissing: true, connection });
    expect(await created.get('k')).toBe(1);
  });

  it('get with and without a default; put with skipIfExists; contains and len', async () => {
    const d = await open<string, unknown>();
    expect(await d.get('absent')).toBeUndefined();
    expect(await d.get('absent', 'fallback')).toBe('fallback');
    expect(await d.put('a', { x: [1, 2, 3], s: 'text' })).toBe(true);
    expect(await d.get('a', 'fallback')).toEqual({ x: [1, 2, 3], s: 'text' });
    expect(await d.put('a', 'other', { skipIfExists: true })).toBe(false);
    expect(await d.get('a')).toEqual({ x: [1, 2, 3], s: 'text' });
    expect(await d.put('b', 'new', { skipIfExists: true })).toBe(true);
    expect(await d.get('b')).toBe('new');
    expect(await d.contains('a')).toBe(true);
    expect(await d.contains('zzz')).toBe(false);
    expect(await d.len()).toBe(2);
    // null is a value, not an absence.
    await d.put('n', null);
    expect(await d.contains('n')).toBe(true);
    expect(await d.get('n', 'fallback')).toBeNull();
  });

  it('update takes a Map, an array of pairs and a plain object', async () => {
    const d = await open<string, number>();
    await d.update(
      new Map([
        ['m1', 1],
        ['m2', 2],
      ]),
    );
    await d.update([
      ['p1', 10],
      ['p2', 20],
    ]);
    await d.update({ o1: 100, o2: 200 });
    expect(await d.len()).toBe(6);
    expect(await d.getMany(['m1', 'm2', 'p1', 'p2', 'o1', 'o2'])).toEqual([1, 2, 10, 20, 100, 200]);
    // Updating replaces existing values.
    await d.update({ m1: -1 });
    expect(await d.get('m1')).toBe(-1);
  });

  it('pop returns the value, the default, or NotFoundError; delete returns whether the key was there; clear empties', async () => {
    const d = await open<string, string>();
    await d.update({ a: 'A', b: 'B', c: 'C' });
    expect(await d.pop('a')).toBe('A');
    expect(await d.contains('a')).toBe(false);
    expect(await d.pop('a', 'dflt')).toBe('dflt');
    await expectFailure(() => d.pop('a'), NotFoundError, 'NOT_FOUND', /"a"/, new RegExp(d.name));
    expect(await d.delete('b')).toBe(true);
    expect(await d.delete('b')).toBe(false);
    expect(await d.len()).toBe(1);
    await d.clear();
    expect(await d.len()).toBe(0);
    expect(await d.get('c')).toBeUndefined();
    // The dict itself stays after clear.
    await d.put('again', 'x');
    expect(await d.get('again')).toBe('x');
  });

  it('getMany answers in the order asked, undefined where a key is missing', async () => {
    const d = await open<string, number>();
    await d.update({ one: 1, three: 3, five: 5 });
    expect(await d.getMany(['five', 'two', 'one', 'four', 'three', 'one'])).toEqual([5, undefined, 1, undefined, 3, 1]);
    expect(await d.getMany([])).toEqual([]);
  });

  it('a key put with ttlMs is there until the TTL passes and absent after', async () => {
    const d = await open<string, string>();
    await d.put('short', 'lived', { ttlMs: 300 });
    await d.put('long', 'lived', { ttlMs: 600_000 });
    await d.put('forever', 'lived');
    expect(await d.get('short')).toBe('lived');
    await sleep(400);
    await eventually('the short key expires', async () => (await d.get('short')) === undefined);
    expect(await d.contains('short')).toBe(false);
    expect(await d.getMany(['short', 'long', 'forever'])).toEqual([undefined, 'lived', 'lived']);
    expect(await d.len()).toBe(2);
    const keys: string[] = [];
    for await (const k of d.keys()) keys.push(k);
    expect(keys.sort()).toEqual(['forever', 'long']);
  });

  it('incr with msgpack encoding: get reads the counter back as a number', async () => {
    const d = await open<string, number>();
    expect(await d.incr('n')).toBe(1);
    expect(await d.incr('n', 41)).toBe(42);
    expect(await d.incr('n', -2)).toBe(40);
    expect(await d.get('n')).toBe(40);
    await d.put('m', 7);
    expect(await d.incr('m', 3)).toBe(10);
    expect(await d.get('m')).toBe(10);
  });

  it('incr with raw encoding stores decimal digits: get returns the Buffer "5"', async () => {
    const d = await open<Buffer | string, Buffer | string>({ encoding: 'raw' });
    expect(await d.incr('n', 5)).toBe(5);
    const v = await d.get('n');
    expect(Buffer.isBuffer(v)).toBe(true);
    expect((v as Buffer).equals(Buffer.from('5'))).toBe(true);
    await d.put('m', Buffer.from('100'));
    expect(await d.incr('m', -101)).toBe(-1);
    expect((await d.get('m'))?.toString()).toBe('-1');
  });

  it.each(['msgpack', 'raw'] as const)('incr keeps the TTL of a key put with ttlMs (%s)', async (encoding) => {
    const d = await open<string, unknown>({ encoding });
    await d.put('counter', encoding === 'raw' ? '1' : 1, { ttlMs: 300 });
    expect(await d.incr('counter', 2)).toBe(3);
    await sleep(400);
    await eventually('the counter expires as its TTL said', async () => !(await d.contains('counter')), 10_000);
    // Absent now, so incr starts again from 0.
    expect(await d.incr('counter')).toBe(1);
  });

  it.each(['msgpack', 'raw'] as const)('64 concurrent incr of one key give the exact sum (%s)', async (encoding) => {
    const d = await open<string, unknown>({ encoding });
    const results = await Promise.all(Array.from({ length: 64 }, (_, i) => d.incr('counter', i + 1)));
    const total = (64 * 65) / 2;
    // Every call saw a different running sum, and the last one is the total.
    expect(new Set(results).size).toBe(64);
    expect(Math.max(...results)).toBe(total);
    const v = await d.get('counter');
    if (encoding === 'raw') expect((v as Buffer).toString()).toBe(String(total));
    else expect(v).toBe(total);
  });

  it('compareAndSet succeeds with the current version, fails with a stale one (returning the current), 0 means absent', async () => {
    const d = await open<string, string>();
    const first = await d.compareAndSet('k', 0, 'v1');
    expect(first.ok).toBe(true);
    expect(first.version).toBeGreaterThan(0);
    const cur = await d.getWithVersion('k');
    expect(cur).toEqual({ value: 'v1', version: first.version });
    // 0 on a present key fails and reports the current version.
    expect(await d.compareAndSet('k', 0, 'nope')).toEqual({ ok: false, version: first.version });
    const second = await d.compareAndSet('k', cur!.version, 'v2');
    expect(second.ok).toBe(true);
    expect(second.version).toBeGreaterThan(first.version);
    // The version read before the last write is now stale.
    expect(await d.compareAndSet('k', cur!.version, 'stale')).toEqual({ ok: false, version: second.version });
    expect(await d.get('k')).toBe('v2');
    // A plain put moves the version on too.
    await d.put('k', 'v3');
    const after = await d.getWithVersion('k');
    expect(after!.version).toBeGreaterThan(second.version);
    expect((await d.compareAndSet('k', second.version, 'x')).ok).toBe(false);
    expect(await d.getWithVersion('absent')).toBeUndefined();
    expect(await d.compareAndSet('absent', 5, 'x')).toEqual({ ok: false, version: 0 });
    expect(await d.contains('absent')).toBe(false);
  });

  it('raw encoding round-trips arbitrary bytes as keys and values', async () => {
    const d = await open<Buffer, Buffer>({ encoding: 'raw' });
    const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    const pairs: [Buffer, Buffer][] = [
      [Buffer.from([0]), Buffer.from([0, 0, 0])],
      [Buffer.from([0xff, 0xfe, 0x00, 0x80]), all],
      [all, Buffer.alloc(0)],
      [Buffer.from('plain'), Buffer.from([0xc0, 0xc1, 0xd9])],
    ];
    for (const [k, v] of pairs) await d.put(k, v);
    for (const [k, v] of pairs) {
      const got = await d.get(k);
      expect(Buffer.isBuffer(got)).toBe(true);
      expect(got!.equals(v)).toBe(true);
    }
    const seen = new Map<string, string>();
    for await (const [k, v] of d.items()) seen.set(k.toString('hex'), v.toString('hex'));
    expect(seen).toEqual(new Map(pairs.map(([k, v]) => [k.toString('hex'), v.toString('hex')])));
  });

  it('iterating 100,000 keys yields each exactly once, a page of at most 1000 at a time', async () => {
    const N = 100_000;
    const own = new Connection({ server: stowage.server.address, token: stowage.server.token });
    try {
      const d = await Dict.fromName<string, number>(uniqueName('big'), { createIfMissing: true, connection: own });
      for (let start = 0; start < N; start += 5000) {
        await d.update(Array.from({ length: 5000 }, (_, i) => [`key-${start + i}`, start + i] as const));
      }
      expect(await d.len()).toBe(N);

      const pages: number[] = [];
      const original = own.dicts.scan.bind(own.dicts) as (
        req: ScanRequest,
        md: Metadata,
        opts: Partial<CallOptions>,
        cb: (err: ServiceError | null, res: ScanResponse) => void,
      ) => unknown;
      const spy = vi.spyOn(own.dicts, 'scan').mockImplementation(((
        req: ScanRequest,
        md: Metadata,
        opts: Partial<CallOptions>,
        cb: (err: ServiceError | null, res: ScanResponse) => void,
      ) =>
        original(req, md, opts, (err, res) => {
          if (res) pages.push(res.entries.length);
          cb(err, res);
        })) as never);
      try {
        const seen = new Set<string>();
        let yielded = 0;
        let wrong = 0;
        for await (const [k, v] of d.items()) {
          yielded++;
          seen.add(k);
          if (k !== `key-${v}`) wrong++;
        }
        expect(yielded).toBe(N);
        expect(seen.size).toBe(N);
        expect(wrong).toBe(0);
        // Paged: many Scan calls, none returning more than a page.
        expect(spy.mock.calls.length).toBe(pages.length);
        expect(pages.length).toBeGreaterThanOrEqual(N / 1000);
        expect(Math.max(...pages)).toBeLessThanOrEqual(1000);
        expect(pages.reduce((a, b) => a + b, 0)).toBe(N);
        for (const call of spy.mock.calls) expect((call[0] as ScanRequest).limit).toBeLessThanOrEqual(1000);

        // keys() and values() page the same way.
        const callsBefore = spy.mock.calls.length;
        let keyCount = 0;
        for await (const _ of d.keys()) keyCount++;
        expect(keyCount).toBe(N);
        let valueSum = 0;
        for await (const v of d.values()) valueSum += v;
        expect(valueSum).toBe((N * (N - 1)) / 2);
        expect(spy.mock.calls.length - callsBefore).toBeGreaterThanOrEqual((2 * N) / 1000);
      } finally {
        spy.mockRestore();
      }
      await Dict.delete(d.name, { connection: own });
    } finally {
      own.close();
    }
  });

  it('keys(), values(), items() and for-await over a small dict', async () => {
    const d = await open<string, number>();
    await d.update({ a: 1, b: 2, c: 3 });
    const keys: string[] = [];
    for await (const k of d.keys()) keys.push(k);
    const values: number[] = [];
    for await (const v of d.values()) values.push(v);
    const items: [string, number][] = [];
    for await (const kv of d.items()) items.push(kv);
    const plain: string[] = [];
    for await (const k of d) plain.push(k);
    expect(keys.sort()).toEqual(['a', 'b', 'c']);
    expect(values.sort()).toEqual([1, 2, 3]);
    expect(items.sort()).toEqual([
      ['a', 1],
      ['b', 2],
      ['c', 3],
    ]);
    expect(plain.sort()).toEqual(['a', 'b', 'c']);
    const empty = await open();
    const none: unknown[] = [];
    for await (const k of empty.keys()) none.push(k);
    expect(none).toEqual([]);
  });

  it('Dict.list shows dicts and Dict.delete removes one with its keys', async () => {
    const d = await open<string, number>();
    await d.put('k', 1);
    const listed = await Dict.list({ connection });
    const info = listed.find((i) => i.name === d.name);
    expect(info).toBeDefined();
    expect(info!.idleTimeoutMs).toBe(0);
    expect(info!.createdAt.getTime()).toBeGreaterThan(0);
    await Dict.delete(d.name, { connection });
    expect((await Dict.list({ connection })).map((i) => i.name)).not.toContain(d.name);
    await expectFailure(() => d.get('k'), NotFoundError, 'NOT_FOUND', /stowage dict create/);
    await expectFailure(() => Dict.delete(d.name, { connection }), NotFoundError, 'NOT_FOUND');
    // Re-created under the same name, it starts empty.
    const again = await Dict.fromName<string, number>(d.name, { createIfMissing: true, connection });
    expect(await again.len()).toBe(0);
  });

  it('an ephemeral dict exists until close() and is deleted by it', async () => {
    const d = await Dict.ephemeral<string, string>({ connection });
    await d.put('k', 'v');
    expect(await d.get('k')).toBe('v');
    expect((await Dict.list({ connection })).map((i) => i.name)).toContain(d.name);
    await d.close();
    expect((await Dict.list({ connection })).map((i) => i.name)).not.toContain(d.name);
    await expectFailure(() => Dict.fromName(d.name, { connection }), NotFoundError, 'NOT_FOUND');
    await d.close(); // a second close is harmless
  });

  it('a dict with idleTimeoutMs is deleted after going unused, and stays while used', async () => {
    const idle = await open<string, number>({ idleTimeoutMs: 1000 });
    // The busy one gets a longer timeout so that a stalled test machine does not expire it between uses.
    const busy = await open<string, number>({ idleTimeoutMs: 2000 });
    const busySince = Date.now();
    await idle.put('k', 1);
    const names = async () => new Set((await Dict.list({ connection })).map((i) => i.name));
    expect((await names()).has(idle.name)).toBe(true);
    // Keep `busy` in use (a put every 150 ms) until `idle` has been swept.
    let i = 0;
    let busyFailure: unknown;
    await eventually('the unused dict is deleted', async () => {
      await busy.put('tick', i++).catch((err: unknown) => (busyFailure ??= err));
      return !(await names()).has(idle.name);
    });
    // ...and a while longer: well past its own idle timeout, in use all along.
    const until = Math.max(Date.now() + 2500, busySince + 5000);
    while (Date.now() < until) {
      await busy.put('tick', i++);
      await sleep(150);
    }
    expect(busyFailure).toBeUndefined();
    expect((await names()).has(busy.name)).toBe(true);
    expect(await busy.get('tick')).toBe(i - 1);
    await expectFailure(() => idle.get('k'), NotFoundError, 'NOT_FOUND');
    // Once unused, it goes too.
    await eventually('the dict no longer used is deleted', async () => !(await names()).has(busy.name));
  });

  describe('bad input', () => {
    it('a key over 64 KiB and a value over 64 MiB are refused by the SDK', async () => {
      const d = await open<Buffer, Buffer>({ encoding: 'raw' });
      await expectFailure(
        () => d.put(Buffer.alloc(MAX_KEY_BYTES + 1, 1), Buffer.from('v')),
        InvalidArgumentError,
        'INVALID_ARGUMENT',
        /key/,
        new RegExp(String(MAX_KEY_BYTES)),
      );
      await expectFailure(() => d.get(Buffer.alloc(MAX_KEY_BYTES + 1, 1)), InvalidArgumentError, 'INVALID_ARGUMENT');
      await expectFailure(
        () => d.put(Buffer.from('k'), Buffer.alloc(MAX_VALUE_BYTES + 1)),
        InvalidArgumentError,
        'INVALID_ARGUMENT',
        /value/,
        new RegExp(String(MAX_VALUE_BYTES)),
      );
      // A key of exactly the limit is fine.
      const maxKey = Buffer.alloc(MAX_KEY_BYTES, 7);
      expect(await d.put(maxKey, Buffer.from('edge'))).toBe(true);
      expect((await d.get(maxKey))?.toString()).toBe('edge');
      expect(await d.len()).toBe(1);
    });

    it('the server refuses an oversized key or value and an empty key sent around the SDK, each op on its own', async () => {
      const d = await open<string, string>();
      await d.put('keep', 'kept');
      const ops = [
        rawOp({ kind: DictOpKind.DICT_OP_KIND_PUT, dict: d.name, key: Buffer.alloc(MAX_KEY_BYTES + 1, 1), value: Buffer.from('v') }),
        rawOp({ kind: DictOpKind.DICT_OP_KIND_PUT, dict: d.name, key: Buffer.from('big'), value: Buffer.alloc(MAX_VALUE_BYTES + 1) }),
        rawOp({ kind: DictOpKind.DICT_OP_KIND_PUT, dict: d.name, key: Buffer.alloc(0), value: Buffer.from('v') }),
        rawOp({ kind: DictOpKind.DICT_OP_KIND_GET, dict: d.name, key: Buffer.alloc(0) }),
        rawOp({ kind: DictOpKind.DICT_OP_KIND_LEN, dict: d.name }),
      ];
      const res = await connection.unary(connection.dicts.batch.bind(connection.dicts), { id: 7, ops });
      expect(res.id).toBe(7);
      expect(res.results.map((r) => r.error?.code)).toEqual([
        'INVALID_ARGUMENT',
        'INVALID_ARGUMENT',
        'INVALID_ARGUMENT',
        'INVALID_ARGUMENT',
        undefined,
      ]);
      expect(res.results[0]!.error!.message).toMatch(/key/);
      expect(res.results[1]!.error!.message).toMatch(/value/);
      expect(res.results[4]!.number).toBe(1);
      // Through the session stream too: the op fails with the typed error.
      await expectFailure(
        () =>
          connection.dictOps.run(
            rawOp({ kind: DictOpKind.DICT_OP_KIND_PUT, dict: d.name, key: Buffer.from('big2'), value: Buffer.alloc(MAX_VALUE_BYTES + 1) }),
          ),
        InvalidArgumentError,
        'INVALID_ARGUMENT',
        /value/,
      );
      expect(await d.contains('big')).toBe(false);
      expect(await d.contains('big2')).toBe(false);
      expect(await d.len()).toBe(1);
    });

    it('an empty key is refused', async () => {
      const d = await open<Buffer | string, string>({ encoding: 'raw' });
      await expectFailure(() => d.put(Buffer.alloc(0), 'v'), InvalidArgumentError, 'INVALID_ARGUMENT', /empty/);
      await expectFailure(() => d.put('', 'v'), InvalidArgumentError, 'INVALID_ARGUMENT', /empty/);
      await expectFailure(() => d.get(''), InvalidArgumentError, 'INVALID_ARGUMENT', /empty/);
      expect(await d.len()).toBe(0);
    });

    it.each(['', 'a/b', '..', 'x'.repeat(65)])('the dict name %j is refused', async (name) => {
      await expectFailure(
        () => Dict.fromName(name, { createIfMissing: true, connection }),
        InvalidArgumentError,
        'INVALID_ARGUMENT',
        /invalid dict name/,
      );
      await expectFailure(() => Dict.fromName(name, { connection }), InvalidArgumentError, 'INVALID_ARGUMENT');
      expect((await Dict.list({ connection })).map((i) => i.name)).not.toContain(name);
    });

    it('a value of exactly 64 MiB is stored and read back', async () => {
      const d = await open<string, Buffer>({ encoding: 'raw' });
      const big = Buffer.alloc(MAX_VALUE_BYTES);
      for (let i = 0; i < big.length; i += 4096) big.writeUInt32LE(i, i);
      expect(big.length).toBe(64 * MiB);
      expect(await d.put('big', big)).toBe(true);
      const got = await d.get('big');
      expect(got?.length).toBe(big.length);
      expect(got!.equals(big)).toBe(true);
      await d.delete('big');
    });
  });
}

describe.each(stateSetups())('dict service over $name', service);
describe.skipIf(skipWithoutContainers('the dict service on Redis and a server in containers')).each(containerStateSetups())(
  'dict service over $name',
  service,
);
