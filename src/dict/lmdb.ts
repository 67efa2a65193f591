/**
 * DictBackend on LMDB (lmdb-js): durable, embedded, one environment.
 *
 * Layout (three databases in one env):
 * - `dicts`:    name → { createdAtMs, idleTimeoutMs, lastUsedMs } (the last two
 *   absent in records written before idle expiry existed: 0 and createdAtMs).
 * - `entries`:  NAME 0x00 K → record, where K is the key itself when it is at
 *   most INLINE_KEY_BYTES long, else its first INLINE_KEY_BYTES+1 bytes and its
 *   SHA-256 (LMDB keys stop at 1978 bytes; the two forms never collide because
 *   their lengths differ). Names never contain 0x00, so one dict's entries are
 *   the contiguous range [NAME 0x00, NAME 0x01).
 *   A record is: version (f64 LE), expiresAtMs (f64 LE, 0 = never), length of
 *   the full key if it is not inline (u32 LE, else 0), that key, the value.
 * - `expiries`: NAME 0x00 expiresAtMs (f64 BE) entry-key → 1 byte, one row per
 *   entry with a TTL. It lets writes sweep expired entries in order and lets
 *   len subtract the expired-but-unswept ones without reading values.
 *
 * Writes run in lmdb-js transactions (serialised, atomic) through LmdbEnv,
 * which turns a commit that fails (a full disk) into an error for that call;
 * reads outside one see a consistent snapshot for the duration of a
 * synchronous call, and go on working when writes cannot.
 */
import { createHash } from 'node:crypto';
import type { Database, RootDatabase } from 'lmdb';
import { AlreadyExistsError } from '../common/errors.js';
import { quote } from '../common/quote.js';
import { LmdbEnv } from '../common/lmdb.js';
import { createLogger, type Logger } from '../common/logger.js';
import * as check from './checks.js';
import type { CasResult, DictBackend, DictEntry, DictInfo, ScanPage, VersionedValue } from './types.js';

const INLINE_KEY_BYTES = 1024;
const HEADER = 20;
/** Expired entries removed per write, so a write never pays for a big sweep. */
const SWEEP_BATCH = 64;
/** Entries a scan page may step over (expired ones) before it returns early. */
const SCAN_VISIT_FACTOR = 4;

interface DictRecord {
  createdAtMs: number;
  idleTimeoutMs?: number;
  lastUsedMs?: number;
}

interface Entry {
  version: number;
  expiresAtMs: number;
  key: Buffer;
  value: Buffer;
}

export class LmdbDictBackend implements DictBackend {
  private readonly env: LmdbEnv;
  private readonly root: RootDatabase;
  private readonly dicts: Database<DictRecord, string>;
  private readonly entries: Database<Buffer, Buffer>;
  private readonly expiries: Database<Buffer, Buffer>;

  constructor(path: string, log: Logger = createLogger('dict')) {
    this.env = new LmdbEnv({ dir: path, what: 'dict store', log });
    this.root = this.env.root;
    this.dicts = this.root.openDB({ name: 'dicts' });
    this.entries = this.root.openDB({ name: 'dict-entries', keyEncoding: 'binary', encoding: 'binary' });
    this.expiries = this.root.openDB({ name: 'dict-expiries', keyEncoding: 'binary', encoding: 'binary' });
  }

  async create(name: string, opts: { existOk?: boolean; idleTimeoutMs?: number } = {}): Promise<boolean> {
    const created = await this.env.transaction(() => {
      if (this.dicts.doesExist(name)) return false;
      const now = Date.now();
      void this.dicts.put(name, { createdAtMs: now, idleTimeoutMs: opts.idleTimeoutMs ?? 0, lastUsedMs: now });
      return true;
    });
    if (!created && !opts.existOk) throw new AlreadyExistsError(`dict ${quote(name)} already exists`);
    return created;
  }

  async drop(name: string): Promise<void> {
    await this.write(name, () => {
      this.removeAll(name);
      void this.dicts.remove(name);
    });
  }

  async list(): Promise<DictInfo[]> {
    const all = [...this.dicts.getRange()].map(({ key, value }) => dictInfo(key, value));
    return all.sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0));
  }

  async info(name: string): Promise<DictInfo> {
    const rec = this.dicts.get(name);
    if (!rec) throw check.dictNotFound(name);
    return dictInfo(name, rec);
  }

  async touch(name: string, atMs?: number): Promise<void> {
    await this.write(name, (now, rec) => {
      const at = atMs ?? now;
      if (at > dictInfo(name, rec).lastUsedMs) void this.dicts.put(name, { ...rec, lastUsedMs: at });
    });
  }

  async dropIfIdle(name: string, nowMs?: number): Promise<boolean> {
    return this.env.transaction(() => {
      const rec = this.dicts.get(name);
      if (!rec) return false;
      const { idleTimeoutMs, lastUsedMs } = dictInfo(name, rec);
      if (idleTimeoutMs === 0 || lastUsedMs + idleTimeoutMs > (nowMs ?? Date.now())) return false;
      this.removeAll(name);
      void this.dicts.remove(name);
      return true;
    });
  }

  async exists(name: string): Promise<boolean> {
    return this.dicts.doesExist(name);
  }

  async get(dict: string, key: Buffer): Promise<VersionedValue | undefined> {
    this.requireDict(dict);
    const e = this.live(this.entryKey(dict, key), Date.now());
    return e && { value: e.value, version: e.version };
  }

  async getMany(dict: string, keys: readonly Buffer[]): Promise<(VersionedValue | undefined)[]> {
    this.requireDict(dict);
    const now = Date.now();
    return keys.map((k) => {
      const e = this.live(this.entryKey(dict, k), now);
      return e && { value: e.value, version: e.version };
    });
  }

  async put(
    dict: string,
    key: Buffer,
    value: Buffer,
    opts: { skipIfExists?: boolean; ttlMs?: number } = {},
  ): Promise<boolean> {
    return this.write(dict, (now) => {
      const ek = this.entryKey(dict, key);
      const old = this.live(ek, now);
      if (old && opts.skipIfExists) return false;
      this.store(dict, ek, key, value, (old?.version ?? 0) + 1, opts.ttlMs ? now + opts.ttlMs : 0);
      return true;
    });
  }

  async contains(dict: string, key: Buffer): Promise<boolean> {
    return (await this.get(dict, key)) !== undefined;
  }

  async len(dict: string): Promise<number> {
    this.requireDict(dict);
    const start = this.prefix(dict, 0);
    const all = this.entries.getKeysCount({ start, end: this.prefix(dict, 1) });
    const expired = this.expiries.getKeysCount({ start, end: Buffer.concat([start, f64be(Date.now() + 1)]) });
    return all - expired;
  }

  async update(dict: string, entries: readonly (readonly [Buffer, Buffer])[]): Promise<void> {
    await this.write(dict, (now) => {
      for (const [key, value] of entries) {
        const ek = this.entryKey(dict, key);
        this.store(dict, ek, key, value, (this.live(ek, now)?.version ?? 0) + 1, 0);
      }
    });
  }

  async pop(dict: string, key: Buffer): Promise<Buffer | undefined> {
    return this.write(dict, (now) => {
      const ek = this.entryKey(dict, key);
      const old = this.live(ek, now);
      this.unstore(dict, ek);
      return old?.value;
    });
  }

  async delete(dict: string, key: Buffer): Promise<boolean> {
    return (await this.pop(dict, key)) !== undefined;
  }

  async clear(dict: string): Promise<void> {
    await this.write(dict, () => this.removeAll(dict));
  }

  async scan(dict: string, opts: { cursor?: string; limit: number }): Promise<ScanPage> {
    const { limit } = opts;
    this.requireDict(dict);
    const start = opts.cursor === undefined ? this.prefix(dict, 0) : this.after(dict, check.decodeCursor(opts.cursor));
    const now = Date.now();
    const out: DictEntry[] = [];
    let visited = 0;
    for (const { key, value } of this.entries.getRange({ start, end: this.prefix(dict, 1) })) {
      visited++;
      const e = decodeEntry(key, value);
      if (e.expiresAtMs === 0 || e.expiresAtMs > now) out.push({ key: e.key, value: e.value, version: e.version });
      if (out.length >= limit || visited >= limit * SCAN_VISIT_FACTOR) {
        return { entries: out, cursor: check.encodeCursor(key.subarray(Buffer.byteLength(dict) + 1)) };
      }
    }
    return { entries: out };
  }

  async incr(dict: string, key: Buffer, by = 1): Promise<number> {
    return this.write(dict, (now) => {
      const ek = this.entryKey(dict, key);
      const old = this.live(ek, now);
      const sum = check.parseCounter(old?.value, dict) + by;
      if (!Number.isSafeInteger(sum)) throw check.counterOverflow(dict);
      this.store(dict, ek, key, Buffer.from(String(sum)), (old?.version ?? 0) + 1, old?.expiresAtMs ?? 0);
      return sum;
    });
  }

  async compareAndSet(
    dict: string,
    key: Buffer,
    expectedVersion: number,
    value: Buffer,
    opts: { ttlMs?: number; keepTtl?: boolean } = {},
  ): Promise<CasResult> {
    const ttl = opts.ttlMs;
    return this.write(dict, (now) => {
      const ek = this.entryKey(dict, key);
      const live = this.live(ek, now);
      const current = live?.version ?? 0;
      if (current !== expectedVersion) return { ok: false, version: current };
      const expiresAtMs = opts.keepTtl ? (live?.expiresAtMs ?? 0) : ttl ? now + ttl : 0;
      this.store(dict, ek, key, value, current + 1, expiresAtMs);
      return { ok: true, version: current + 1 };
    });
  }

  async close(): Promise<void> {
    await this.env.close();
  }

  /**
   * Runs `fn` in a write transaction after checking the dict exists and sweeping
   * a few of its expired entries. An error thrown by `fn` is the call's; `fn`
   * throws before it writes (the sweep's removals are kept either way).
   */
  private async write<T>(dict: string, fn: (now: number, rec: DictRecord) => T): Promise<T> {
    return this.env.transaction(() => {
      const rec = this.dicts.get(dict);
      if (!rec) throw check.dictNotFound(dict);
      const now = Date.now();
      this.sweep(dict, now);
      return fn(now, rec);
    });
  }

  private requireDict(dict: string): void {
    if (!this.dicts.doesExist(dict)) throw check.dictNotFound(dict);
  }

  private sweep(dict: string, now: number): void {
    const start = this.prefix(dict, 0);
    const end = Buffer.concat([start, f64be(now + 1)]);
    for (const row of [...this.expiries.getKeys({ start, end, limit: SWEEP_BATCH })]) {
      void this.expiries.remove(row);
      void this.entries.remove(Buffer.concat([start, row.subarray(start.length + 8)]));
    }
  }

  private removeAll(dict: string): void {
    const range = { start: this.prefix(dict, 0), end: this.prefix(dict, 1) };
    // Collect first: the range is not walked while it is being changed.
    for (const k of [...this.entries.getKeys(range)]) void this.entries.remove(k);
    for (const k of [...this.expiries.getKeys(range)]) void this.expiries.remove(k);
  }

  /** The live entry at an entries key, or undefined if absent or expired. */
  private live(ek: Buffer, now: number): Entry | undefined {
    const raw = this.entries.get(ek);
    if (raw === undefined) return undefined;
    const e = decodeEntry(ek, raw);
    return e.expiresAtMs !== 0 && e.expiresAtMs <= now ? undefined : e;
  }

  private store(dict: string, ek: Buffer, key: Buffer, value: Buffer, version: number, expiresAtMs: number): void {
    this.unstore(dict, ek);
    const inline = key.length <= INLINE_KEY_BYTES;
    const header = Buffer.alloc(HEADER);
    header.writeDoubleLE(version, 0);
    header.writeDoubleLE(expiresAtMs, 8);
    header.writeUInt32LE(inline ? 0 : key.length, 16);
    void this.entries.put(ek, Buffer.concat(inline ? [header, value] : [header, key, value]));
    if (expiresAtMs !== 0) void this.expiries.put(this.expiryKey(dict, ek, expiresAtMs), Buffer.from([1]));
  }

  /** Removes an entry (live or expired) and its expiry row. */
  private unstore(dict: string, ek: Buffer): void {
    const raw = this.entries.get(ek);
    if (raw === undefined) return;
    const expiresAtMs = raw.readDoubleLE(8);
    if (expiresAtMs !== 0) void this.expiries.remove(this.expiryKey(dict, ek, expiresAtMs));
    void this.entries.remove(ek);
  }

  private prefix(dict: string, sep: 0 | 1): Buffer {
    return Buffer.concat([Buffer.from(dict, 'latin1'), Buffer.from([sep])]);
  }

  private entryKey(dict: string, key: Buffer): Buffer {
    const k =
      key.length <= INLINE_KEY_BYTES
        ? key
        : Buffer.concat([key.subarray(0, INLINE_KEY_BYTES + 1), createHash('sha256').update(key).digest()]);
    return Buffer.concat([this.prefix(dict, 0), k]);
  }

  /** The smallest entries key after the stored key form `pos` (a cursor). */
  private after(dict: string, pos: Buffer): Buffer {
    return Buffer.concat([this.prefix(dict, 0), pos, Buffer.from([0])]);
  }

  private expiryKey(dict: string, ek: Buffer, expiresAtMs: number): Buffer {
    const p = this.prefix(dict, 0);
    return Buffer.concat([p, f64be(expiresAtMs), ek.subarray(p.length)]);
  }
}

function dictInfo(name: string, rec: DictRecord): DictInfo {
  return {
    name,
    createdAtMs: rec.createdAtMs,
    idleTimeoutMs: rec.idleTimeoutMs ?? 0,
    lastUsedMs: rec.lastUsedMs ?? rec.createdAtMs,
  };
}

/** Non-negative doubles big-endian sort in numeric order. */
function f64be(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeDoubleBE(n, 0);
  return b;
}

function decodeEntry(ek: Buffer, raw: Buffer): Entry {
  const keyLen = raw.readUInt32LE(16);
  const skip = ek.indexOf(0) + 1;
  return {
    version: raw.readDoubleLE(0),
    expiresAtMs: raw.readDoubleLE(8),
    key: keyLen === 0 ? Buffer.from(ek.subarray(skip)) : Buffer.from(raw.subarray(HEADER, HEADER + keyLen)),
    value: raw.subarray(HEADER + keyLen),
  };
}
