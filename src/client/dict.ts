/**
 * Dict: a named map shared by many workers, shaped like Modal's Dict, with
 * what Modal lacks: getMany, per-key TTL, atomic incr and compare-and-set.
 *
 *   const d = await Dict.fromName('cache', { createIfMissing: true });
 *   await d.put('model', { epoch: 3 });
 *   await d.get('model');                     // { epoch: 3 }
 *   for await (const [k, v] of d.items()) { ... }   // paged, never all in memory
 *
 * Keys and values are msgpack-encoded unless `encoding: 'raw'` (Buffers as
 * they are). Calls made at the same time are batched into one message (see
 * session.ts), so many concurrent callers are cheap.
 */
import { InvalidArgumentError, NotFoundError } from '../common/errors.js';
import { quote, QUOTE_MAX_CHARS } from '../common/quote.js';
import { checkName } from '../common/validate.js';
import { DictOpKind, type DictInfo as DictInfoMessage, type DictOp, type DictResult } from '../gen/stowage/v1/dict.js';
import { MAX_KEY_BYTES, MAX_VALUE_BYTES } from '../dict/types.js';
import { codecFor, type Codec, type Encoding } from './codec.js';
import { dictOp as op, optionalMs } from './ops.js';
import type { Connection } from './connection.js';
import { EPHEMERAL_IDLE_MS, Handle, connectionOf, ephemeralName, openNamed, type EphemeralLife } from './handle.js';

export { MAX_KEY_BYTES, MAX_VALUE_BYTES };

export interface DictInfo {
  name: string;
  createdAt: Date;
  /** 0: never deleted for being idle. */
  idleTimeoutMs: number;
  lastUsedAt: Date;
}

export interface DictOptions {
  connection?: Connection;
  /** How keys and values are turned into bytes (default msgpack). */
  encoding?: Encoding;
}

export interface DictFromNameOptions extends DictOptions {
  createIfMissing?: boolean;
  /** With createIfMissing: delete the dict after this long without use; 0 = never (default). */
  idleTimeoutMs?: number;
}

export interface DictPutOptions {
  /** Store only if the key is absent (or expired). */
  skipIfExists?: boolean;
  /** The key expires this long after the put. */
  ttlMs?: number;
}

export interface CompareAndSetResult {
  ok: boolean;
  /** The key's version after the call: the new one if ok, else the current one (0 if absent). */
  version: number;
}

/** Keys per page when iterating. */
const SCAN_PAGE = 1000;

const toInfo = (m: DictInfoMessage): DictInfo => ({
  name: m.name,
  createdAt: new Date(m.createdAtMs),
  idleTimeoutMs: m.idleTimeoutMs,
  lastUsedAt: new Date(m.lastUsedMs),
});

/** A dict handle; the life cycle (fromName, ephemeral, close) is Handle's (handle.ts). */
export class Dict<K = unknown, V = unknown> extends Handle {
  private readonly codec: Codec;

  private constructor(name: string, conn: Connection, encoding: Encoding | undefined, life?: EphemeralLife) {
    super('dict', name, conn, life);
    this.codec = codecFor(encoding);
  }

  /** Looks a dict up by name; NotFoundError (with the command that creates it) unless createIfMissing. */
  static async fromName<K = unknown, V = unknown>(name: string, opts: DictFromNameOptions = {}): Promise<Dict<K, V>> {
    const conn = await openNamed('dict', name, opts, {
      create: (c) => c.unary(c.dicts.createDict.bind(c.dicts), { name, existOk: true, idleTimeoutMs: opts.idleTimeoutMs ?? 0 }),
      get: (c) => c.unary(c.dicts.getDict.bind(c.dicts), { name }),
    });
    return new Dict<K, V>(name, conn, opts.encoding);
  }

  /** A dict that lives until close() (or until its heartbeats stop for a minute). */
  static async ephemeral<K = unknown, V = unknown>(opts: DictOptions = {}): Promise<Dict<K, V>> {
    const conn = connectionOf(opts);
    const d = conn.dicts;
    const info = await conn.unary(d.createDict.bind(d), { name: ephemeralName(), existOk: false, idleTimeoutMs: EPHEMERAL_IDLE_MS });
    return new Dict<K, V>(info.name, conn, opts.encoding, {
      beat: (c) => c.dictOps.run(op({ kind: DictOpKind.DICT_OP_KIND_TOUCH, dict: info.name })),
      remove: (c) => Dict.delete(info.name, { connection: c }),
      timeoutMs: info.idleTimeoutMs,
    });
  }

  static async list(opts: { connection?: Connection } = {}): Promise<DictInfo[]> {
    const conn = connectionOf(opts);
    const res = await conn.unary(conn.dicts.listDicts.bind(conn.dicts), {});
    return res.dicts.map(toInfo);
  }

  static async delete(name: string, opts: { connection?: Connection } = {}): Promise<void> {
    checkName('dict', name);
    const conn = connectionOf(opts);
    await conn.unary(conn.dicts.deleteDict.bind(conn.dicts), { name });
  }

  async info(): Promise<DictInfo> {
    const conn = this.conn;
    return toInfo(await conn.unary(conn.dicts.getDict.bind(conn.dicts), { name: this.name }));
  }

  /** The value at `key`, or `defaultValue` (undefined if not given) when absent. */
  async get(key: K): Promise<V | undefined>;
  async get<D>(key: K, defaultValue: D): Promise<V | D>;
  async get<D>(key: K, defaultValue?: D): Promise<V | D | undefined> {
    const r = await this.run(op({ kind: DictOpKind.DICT_OP_KIND_GET, dict: this.name, key: this.key(key) }));
    return r.item?.found ? (this.codec.decode(r.item.value) as V) : defaultValue;
  }

  /** The value and its version (for compareAndSet), or undefined when absent. */
  async getWithVersion(key: K): Promise<{ value: V; version: number } | undefined> {
    const r = await this.run(op({ kind: DictOpKind.DICT_OP_KIND_GET, dict: this.name, key: this.key(key) }));
    return r.item?.found ? { value: this.codec.decode(r.item.value) as V, version: r.item.version } : undefined;
  }

  /** Values of many keys from one consistent view, in order; undefined where absent. */
  async getMany(keys: readonly K[]): Promise<(V | undefined)[]> {
    const r = await this.run(op({ kind: DictOpKind.DICT_OP_KIND_GET_MANY, dict: this.name, keys: keys.map((k) => this.key(k)) }));
    return r.items.map((i) => (i.found ? (this.codec.decode(i.value) as V) : undefined));
  }

  /** Stores a value; returns whether it was stored (false only with skipIfExists on a live key). */
  async put(key: K, value: V, opts: DictPutOptions = {}): Promise<boolean> {
    const o = op({
      kind: DictOpKind.DICT_OP_KIND_PUT,
      dict: this.name,
      key: this.key(key),
      value: this.value(value),
      skipIfExists: opts.skipIfExists ?? false,
      ttlMs: optionalMs('ttlMs', opts.ttlMs),
    });
    return (await this.run(o)).ok;
  }

  async contains(key: K): Promise<boolean> {
    return (await this.run(op({ kind: DictOpKind.DICT_OP_KIND_CONTAINS, dict: this.name, key: this.key(key) }))).ok;
  }

  /** Number of live keys. */
  async len(): Promise<number> {
    return (await this.run(op({ kind: DictOpKind.DICT_OP_KIND_LEN, dict: this.name }))).number;
  }

  /** Stores many entries atomically (a Map, an iterable of pairs, or a plain object with string keys). */
  async update(entries: Map<K, V> | Iterable<readonly [K, V]> | Record<string, V>): Promise<void> {
    const pairs: (readonly [unknown, V])[] =
      Symbol.iterator in Object(entries) ? [...(entries as Iterable<readonly [K, V]>)] : Object.entries(entries as Record<string, V>);
    await this.run(
      op({
        kind: DictOpKind.DICT_OP_KIND_UPDATE,
        dict: this.name,
        keys: pairs.map(([k]) => this.key(k as K)),
        values: pairs.map(([, v]) => this.value(v)),
      }),
    );
  }

  /** Removes a key and returns its value; without a default, an absent key is a NotFoundError (as Modal's KeyError). */
  async pop(key: K): Promise<V>;
  async pop<D>(key: K, defaultValue: D): Promise<V | D>;
  async pop<D>(key: K, ...rest: [D?]): Promise<V | D> {
    const r = await this.run(op({ kind: DictOpKind.DICT_OP_KIND_POP, dict: this.name, key: this.key(key) }));
    if (r.item?.found) return this.codec.decode(r.item.value) as V;
    if (rest.length > 0) return rest[0] as D;
    throw new NotFoundError(`key ${this.describe(key)} is not in dict ${this.name}`);
  }

  /** Removes a key; returns whether it was there. */
  async delete(key: K): Promise<boolean> {
    return (await this.run(op({ kind: DictOpKind.DICT_OP_KIND_DELETE, dict: this.name, key: this.key(key) }))).ok;
  }

  /** Removes every key (the dict stays). */
  async clear(): Promise<void> {
    await this.run(op({ kind: DictOpKind.DICT_OP_KIND_CLEAR, dict: this.name }));
  }

  /**
   * Adds `by` to the integer at `key` (0 when absent) atomically and returns the
   * sum. With msgpack encoding `get` reads the counter back as a number; with
   * raw encoding it is stored as decimal digits (as Redis INCRBY).
   */
  async incr(key: K, by = 1): Promise<number> {
    if (!Number.isSafeInteger(by)) throw new InvalidArgumentError(`incr by ${by}: must be a safe integer`);
    const o = op({
      kind: DictOpKind.DICT_OP_KIND_INCR,
      dict: this.name,
      key: this.key(key),
      by,
      msgpack: this.codec.encoding === 'msgpack',
    });
    return (await this.run(o)).number;
  }

  /**
   * Stores `value` only if the key's version is `expectedVersion` (0: the key
   * is absent). Versions come from getWithVersion and from earlier calls.
   */
  async compareAndSet(key: K, expectedVersion: number, value: V, opts: { ttlMs?: number } = {}): Promise<CompareAndSetResult> {
    if (!Number.isSafeInteger(expectedVersion) || expectedVersion < 0) {
      throw new InvalidArgumentError(`expectedVersion must be a non-negative integer, got ${expectedVersion}`);
    }
    const r = await this.run(
      op({
        kind: DictOpKind.DICT_OP_KIND_COMPARE_AND_SET,
        dict: this.name,
        key: this.key(key),
        value: this.value(value),
        expectedVersion,
        ttlMs: optionalMs('ttlMs', opts.ttlMs),
      }),
    );
    return { ok: r.ok, version: r.number };
  }

  /** Every [key, value], a page at a time (never the whole dict in memory). */
  async *items(): AsyncIterableIterator<[K, V]> {
    let cursor = '';
    do {
      const conn = this.conn;
      const page = await conn.unary(conn.dicts.scan.bind(conn.dicts), {
        dict: this.name,
        cursor,
        limit: SCAN_PAGE,
      });
      for (const e of page.entries) yield [this.codec.decode(e.key) as K, this.codec.decode(e.value) as V];
      cursor = page.cursor;
    } while (cursor);
  }

  async *keys(): AsyncIterableIterator<K> {
    for await (const [k] of this.items()) yield k;
  }

  async *values(): AsyncIterableIterator<V> {
    for await (const [, v] of this.items()) yield v;
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<K> {
    return this.keys();
  }

  private async run(o: DictOp): Promise<DictResult> {
    const bytes = o.key.length + o.value.length + o.keys.reduce((n, k) => n + k.length, 0) + o.values.reduce((n, v) => n + v.length, 0);
    return this.conn.dictOps.run(o, bytes);
  }

  private key(key: K): Buffer {
    const b = this.codec.encode(key, 'key');
    if (b.length === 0) throw new InvalidArgumentError('key is empty');
    if (b.length > MAX_KEY_BYTES) {
      throw new InvalidArgumentError(`key of ${b.length} bytes is over the limit of ${MAX_KEY_BYTES} bytes`);
    }
    return b;
  }

  private value(value: V): Buffer {
    const b = this.codec.encode(value, 'value');
    if (b.length > MAX_VALUE_BYTES) {
      throw new InvalidArgumentError(`value of ${b.length} bytes is over the limit of ${MAX_VALUE_BYTES} bytes`);
    }
    return b;
  }

  private describe(key: K): string {
    if (typeof key === 'string' || key instanceof Uint8Array) return quote(key);
    let text: string;
    try {
      text = JSON.stringify(key) ?? String(key);
    } catch {
      text = String(key);
    }
    return text.length <= QUOTE_MAX_CHARS ? text : quote(text);
  }
}
