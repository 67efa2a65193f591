/**
 * DictBackend on Redis (ioredis), for more than one server.
 *
 * Layout: a dict NAME is five keys sharing the hash tag {NAME}, so one dict
 * lives in one Redis Cluster slot and every script touches one slot:
 * - `stowage:dict:{NAME}:meta` hash { createdAtMs, idleTimeoutMs, lastUsedMs }
 *   (the dict exists iff it does)
 * - `stowage:dict:{NAME}:data` hash key → value
 * - `stowage:dict:{NAME}:ver`  hash key → version
 * - `stowage:dict:{NAME}:exp`  sorted set key → expiresAtMs (keys with a TTL only)
 * - `stowage:dict:{NAME}:idx`  sorted set of keys, all with score 0, so that
 *   ZRANGE BYLEX gives scan exact, byte-ordered pages with a key as cursor.
 * `stowage:dicts` (a set, its own slot) names the dicts for list(); create adds
 * to it after the meta key exists and drop removes from it first, and list
 * checks each name's meta key, so a crash between the two steps cannot list a
 * dict that does not exist. dropIfIdle removes the name after its script has
 * dropped the dict, then adds it back if a concurrent create has already made
 * the dict again, so the set neither keeps dropped names nor loses live ones.
 *
 * TTL is emulated per key with the `exp` sorted set (Redis 7.0 has no per-field
 * TTL): reads treat a key whose expiry has passed as absent; every write
 * script first deletes up to 64 expired keys of its dict.
 *
 * Every operation is one Lua script (atomic) whose keys are all given in
 * KEYS; the registry set is touched only by single-key commands, so nothing
 * crosses slots on a Redis Cluster. The client (common/redis-connect.ts: one
 * Redis, or a Cluster for several hosts) is set to fail fast: no offline
 * queue, one retry per command, a bounded wait for a connection, a command
 * timeout. Errors from a missing or unreachable Redis become
 * UnavailableError naming the URL; ioredis keeps reconnecting in the
 * background, so the backend works again as soon as Redis is back. With
 * `wait`, every write is followed by WAIT (common/redis-commands.ts).
 */
import { AlreadyExistsError, InternalError, StowageError, UnavailableError, messageOf } from '../common/errors.js';
import { quote } from '../common/quote.js';
import { RedisCommands, luaScript, type RedisWait, type Reply } from '../common/redis-commands.js';
import { openRedis, type RedisClient } from '../common/redis-connect.js';
import { TRANSIENT_REPLY, redisReady } from '../common/redis-ready.js';
import { redactUrl } from '../common/urls.js';
import * as check from './checks.js';
import { SCRIPTS, type ScriptName } from './redis-scripts.js';
import type { CasResult, DictBackend, DictEntry, DictInfo, ScanPage, VersionedValue } from './types.js';

export interface RedisDictOptions {
  /** How long a call waits for a (re)connection before UnavailableError. Default 1000. */
  connectTimeoutMs?: number;
  /** How long one command may take before UnavailableError. Default 10000. */
  commandTimeoutMs?: number;
  /** Key prefix; default "stowage:". */
  prefix?: string;
  /** A single host is a Redis Cluster seed (several hosts are a Cluster anyway). */
  cluster?: boolean;
  /** WAIT for this many replicas after each write. */
  wait?: RedisWait;
}

/** Scripts that only read: never followed by WAIT. */
const READS: ReadonlySet<ScriptName> = new Set(['get', 'len', 'scan']);

export class RedisDictBackend implements DictBackend {
  private readonly redis: RedisClient;
  private readonly commands: RedisCommands;
  private readonly url: string;
  private readonly prefix: string;
  private readonly connectTimeoutMs: number;
  private closed = false;

  constructor(url: string, opts: RedisDictOptions = {}) {
    this.url = redactUrl(url);
    this.prefix = opts.prefix ?? 'stowage:';
    this.connectTimeoutMs = opts.connectTimeoutMs ?? 1000;
    this.redis = openRedis(url, {
      cluster: opts.cluster,
      connectTimeoutMs: this.connectTimeoutMs,
      commandTimeoutMs: opts.commandTimeoutMs,
    });
    this.commands = new RedisCommands(this.redis, this.url, opts.wait);
  }

  async create(name: string, opts: { existOk?: boolean; idleTimeoutMs?: number } = {}): Promise<boolean> {
    const idle = String(opts.idleTimeoutMs ?? 0);
    const created = (await this.run('create', [this.key(name, 'meta')], [String(Date.now()), idle], name)) === 1;
    await this.command(() => this.commands.command(['SADD', this.registry(), name], true));
    if (!created && !opts.existOk) throw new AlreadyExistsError(`dict ${quote(name)} already exists`);
    return created;
  }

  async drop(name: string): Promise<void> {
    if (!(await this.exists(name))) throw check.dictNotFound(name);
    await this.command(() => this.commands.command(['SREM', this.registry(), name], true));
    await this.script('drop', name, []);
  }

  async list(): Promise<DictInfo[]> {
    const names = (await this.command(() => this.redis.smembers(this.registry()))).sort();
    const infos = await Promise.all(names.map((n) => this.readInfo(n)));
    return infos.filter((i): i is DictInfo => i !== undefined);
  }

  async info(name: string): Promise<DictInfo> {
    const info = await this.readInfo(name);
    if (!info) throw check.dictNotFound(name);
    return info;
  }

  async touch(name: string, atMs?: number): Promise<void> {
    await this.script('touch', name, [String(atMs ?? '')]);
  }

  async dropIfIdle(name: string, nowMs?: number): Promise<boolean> {
    const now = String(nowMs ?? '');
    if ((await this.script('dropIfIdle', name, [now])) !== 1) return false;
    await this.command(() => this.commands.command(['SREM', this.registry(), name], true));
    if (await this.exists(name)) await this.command(() => this.commands.command(['SADD', this.registry(), name], true));
    return true;
  }

  async exists(name: string): Promise<boolean> {
    return (await this.command(() => this.redis.exists(this.key(name, 'meta')))) === 1;
  }

  async get(dict: string, key: Buffer): Promise<VersionedValue | undefined> {
    return (await this.getMany(dict, [key]))[0];
  }

  async getMany(dict: string, keys: readonly Buffer[]): Promise<(VersionedValue | undefined)[]> {
    const r = (await this.script('get', dict, ['1', ...keys])) as Reply[];
    return keys.map((_, i) => {
      const value = r[2 * i];
      return Buffer.isBuffer(value) ? { value, version: Number(r[2 * i + 1]) } : undefined;
    });
  }

  async put(
    dict: string,
    key: Buffer,
    value: Buffer,
    opts: { skipIfExists?: boolean; ttlMs?: number } = {},
  ): Promise<boolean> {
    const ttl = opts.ttlMs ?? 0;
    const r = await this.script('put', dict, [key, value, opts.skipIfExists ? '1' : '0', String(ttl)]);
    return r === 1;
  }

  async contains(dict: string, key: Buffer): Promise<boolean> {
    const r = (await this.script('get', dict, ['0', key])) as Reply[];
    return r[0] === 1;
  }

  async len(dict: string): Promise<number> {
    return Number(await this.script('len', dict, []));
  }

  async update(dict: string, entries: readonly (readonly [Buffer, Buffer])[]): Promise<void> {
    const args = entries.flat();
    await this.script('update', dict, args);
  }

  async pop(dict: string, key: Buffer): Promise<Buffer | undefined> {
    const r = await this.script('pop', dict, [key, '1']);
    return Buffer.isBuffer(r) ? r : undefined;
  }

  async delete(dict: string, key: Buffer): Promise<boolean> {
    return (await this.script('pop', dict, [key, '0'])) === 1;
  }

  async clear(dict: string): Promise<void> {
    await this.script('clear', dict, []);
  }

  async scan(dict: string, opts: { cursor?: string; limit: number }): Promise<ScanPage> {
    const { limit } = opts;
    const start =
      opts.cursor === undefined ? Buffer.from('-') : Buffer.concat([Buffer.from('('), check.decodeCursor(opts.cursor)]);
    const r = (await this.script('scan', dict, [start, String(limit)])) as Reply[];
    const entries: DictEntry[] = [];
    for (let i = 1; i + 2 < r.length; i += 3) {
      entries.push({ key: r[i] as Buffer, value: r[i + 1] as Buffer, version: Number(r[i + 2]) });
    }
    const last = r[0];
    return Buffer.isBuffer(last) ? { entries, cursor: check.encodeCursor(last) } : { entries };
  }

  async incr(dict: string, key: Buffer, by = 1): Promise<number> {
    return Number(String(await this.script('incr', dict, [key, String(by)])));
  }

  async compareAndSet(
    dict: string,
    key: Buffer,
    expectedVersion: number,
    value: Buffer,
    opts: { ttlMs?: number; keepTtl?: boolean } = {},
  ): Promise<CasResult> {
    const ttl = opts.keepTtl ? -1 : (opts.ttlMs ?? 0);
    const r = (await this.script('cas', dict, [key, String(expectedVersion), value, String(ttl)])) as number[];
    return { ok: r[0] === 1, version: Number(r[1]) };
  }

  async close(): Promise<void> {
    this.closed = true;
    this.redis.disconnect();
  }

  /** One dict's meta hash (a single key, so read atomically), or undefined if it does not exist. */
  private async readInfo(name: string): Promise<DictInfo | undefined> {
    const [createdAtMs, idleTimeoutMs, lastUsedMs] = await this.command(() =>
      this.redis.hmget(this.key(name, 'meta'), 'createdAtMs', 'idleTimeoutMs', 'lastUsedMs'),
    );
    if (createdAtMs === null || createdAtMs === undefined) return undefined;
    return {
      name,
      createdAtMs: Number(createdAtMs),
      idleTimeoutMs: Number(idleTimeoutMs ?? 0),
      lastUsedMs: Number(lastUsedMs ?? createdAtMs),
    };
  }

  private key(dict: string, part: string): string {
    return `${this.prefix}dict:{${dict}}:${part}`;
  }

  private registry(): string {
    return `${this.prefix}dicts`;
  }

  /** Runs a dict script (the five keys of `dict`), mapping script errors to typed ones. */
  private script(name: ScriptName, dict: string, args: readonly (Buffer | string)[]): Promise<Reply> {
    const keys = ['meta', 'data', 'ver', 'exp', 'idx'].map((p) => this.key(dict, p));
    return this.run(name, keys, args, dict);
  }

  private async run(name: ScriptName, keys: string[], args: readonly (Buffer | string)[], dict: string): Promise<Reply> {
    return this.command(() => this.commands.script(luaScript(SCRIPTS[name]), keys, args, !READS.has(name)), dict);
  }

  /** Waits (bounded) for a connection, runs `fn`, and turns failures into typed errors. */
  private async command<T>(fn: () => Promise<T>, dict = ''): Promise<T> {
    if (this.closed) throw new UnavailableError(`dict backend for redis at ${this.url} is closed`);
    await this.connected();
    try {
      return await fn();
    } catch (err) {
      if (err instanceof StowageError) throw err;
      const msg = messageOf(err);
      // Redis 7 prefixes a script's error_reply with "ERR ".
      const ours = isReplyError(err) ? /^(?:ERR )?STOWAGE_(\w+)/.exec(msg)?.[1] : undefined;
      if (ours === 'NOTFOUND') throw check.dictNotFound(dict);
      if (ours === 'NOTINT') throw check.notACounter(dict);
      if (ours === 'OVERFLOW') throw check.counterOverflow(dict);
      if (isReplyError(err) && !TRANSIENT_REPLY.test(msg)) {
        throw new InternalError(`redis at ${this.url} refused a dict command: ${msg}`, { cause: err });
      }
      throw new UnavailableError(`redis at ${this.url} is unavailable: ${msg}`, { cause: err });
    }
  }

  private connected(): Promise<void> {
    return redisReady(this.redis, this.url, this.connectTimeoutMs);
  }

}

function isReplyError(err: unknown): boolean {
  return err instanceof Error && err.name === 'ReplyError';
}
