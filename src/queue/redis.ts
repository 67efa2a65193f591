/**
 * QueueBackend on Redis (ioredis), for more than one stowage server. Every
 * operation is one Lua script (redis-scripts.ts) over keys that share the hash
 * tag {NAME}, so a queue lives in one Cluster slot and each operation is
 * atomic. The queue-name index (`stowage:queues`) is a separate set, updated
 * after create/drop, used only by list(). dropIfIdle removes the name after
 * its script has dropped the queue, then adds it back if a concurrent create
 * has already made the queue again, so the set does not lose live names.
 *
 * Redis Cluster: the client comes from common/redis-connect.ts (several
 * hosts, or --redis-cluster). Every script gets the queue's seven fixed keys
 * in KEYS (the first, meta, routes it to the master of the queue's slot).
 * The one kind of key it cannot be given in advance is a partition's list of
 * ready items, `r:<partition>`: which partitions a script touches depends on
 * the data (expired leases go back to their own partitions, a drop empties
 * them all). Those keys are named from the same prefix, so they share the
 * {NAME} hash tag and the slot, and Redis runs them on the same node. The
 * name index is touched only by single-key commands. Nothing crosses slots.
 *
 * Redis away: commands fail fast (no offline queue, one retry) with an
 * UnavailableError naming the URL; the client keeps reconnecting in the
 * background and works again once Redis is back. Scripts are re-sent after a
 * restart (NOSCRIPT), per node. With `wait`, every write is followed by WAIT
 * (common/redis-commands.ts).
 *
 * Wake-ups: PUT publishes on QUEUE_EVENTS_CHANNEL, which a Cluster forwards
 * to every node, so a second connection subscribed on any node (ioredis moves
 * it to another node and subscribes again after a failover) hears puts made
 * through every stowage server on every shard. A message lost in a failover
 * or a reconnect only delays a blocked get: WaitingGets re-checks every
 * REDELIVERY_POLL_MS (1 s) anyway.
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import {
  AlreadyExistsError,
  InternalError,
  StowageError,
  UnavailableError,
  messageOf,
} from '../common/errors.js';
import { RedisCommands, luaScript, type RedisWait } from '../common/redis-commands.js';
import { openRedis, openRedisSubscriber, type RedisClient } from '../common/redis-connect.js';
import { TRANSIENT_REPLY, redisReady } from '../common/redis-ready.js';
import { quote } from '../common/quote.js';
import { redactUrl } from '../common/urls.js';
import * as lua from './redis-scripts.js';
import { waitForPut } from './wake.js';
import {
  DEFAULT_GET_MAX,
  DEFAULT_PARTITION,
  DEFAULT_PEEK_LIMIT,
  type ClearScope,
  type DeliveredItem,
  type GetOptions,
  type LenScope,
  type PeekOptions,
  type PeekPage,
  type PutOptions,
  type QueueBackend,
  type QueueInfo,
  type QueueSettings,
} from './types.js';
import { QueueFullError, parseCursor, partitionTtl, queueNotFound, settingsOf } from './validate.js';

const NAMES_KEY = 'stowage:queues';
/** How long a call waits for a (re)connection before UnavailableError. */
const CONNECT_WAIT_MS = 1000;
type Arg = string | Buffer | number;

export interface RedisQueueOptions {
  /** redis://[user:pass@]host:port[/db], or several host:port (a Redis Cluster) */
  url: string;
  /** A single host is a Redis Cluster seed. */
  cluster?: boolean;
  /** WAIT for this many replicas after each write. */
  wait?: RedisWait;
}

/** The keys every queue script gets, in the order redis-scripts.ts names them (META, PARTS, …). */
const QUEUE_KEYS = ['meta', 'parts', 'expiry', 'data', 'n', 'leases', 'lease'] as const;

/** Scripts that write (followed by WAIT when configured). */
const WRITES: ReadonlySet<string> = new Set([lua.CREATE, lua.DROP, lua.TOUCH, lua.DROP_IF_IDLE, lua.PUT, lua.GET, lua.ACK, lua.CLEAR]);

export class RedisQueueBackend implements QueueBackend {
  private readonly events = new EventEmitter().setMaxListeners(0);
  /** The URL without its password, for error messages. */
  private readonly where: string;
  private readonly commands: RedisCommands;

  private constructor(
    private readonly client: RedisClient,
    private readonly sub: RedisClient,
    url: string,
    wait: RedisWait | undefined,
  ) {
    this.where = redactUrl(url);
    this.commands = new RedisCommands(client, this.where, wait);
  }

  /** Connects (UnavailableError if Redis cannot be reached) and subscribes to put events. */
  static async connect(options: RedisQueueOptions): Promise<RedisQueueBackend> {
    const opts = { cluster: options.cluster, lazyConnect: true, connectTimeoutMs: 3000 };
    const client = openRedis(options.url, opts);
    const sub = openRedisSubscriber(options.url, opts);
    const backend = new RedisQueueBackend(client, sub, options.url, options.wait);
    sub.on('message', (_channel: string, message: string) => backend.events.emit(message));
    try {
      await client.connect();
      await sub.connect();
      await sub.subscribe(lua.QUEUE_EVENTS_CHANNEL);
    } catch (err) {
      client.disconnect();
      sub.disconnect();
      throw backend.unavailable(err);
    }
    return backend;
  }

  async create(name: string, settings?: Partial<QueueSettings>): Promise<QueueInfo> {
    const s = settingsOf(settings);
    const createdAtMs = Date.now();
    await this.run(lua.CREATE, name, [s.maxSize, s.maxDeliveries, createdAtMs, s.idleTimeoutMs]);
    await this.call(() => this.commands.command(['SADD', NAMES_KEY, name], true));
    return { name, ...s, createdAtMs, lastUsedMs: createdAtMs };
  }

  async drop(name: string): Promise<void> {
    await this.run(lua.DROP, name, []);
    await this.call(() => this.commands.command(['SREM', NAMES_KEY, name], true));
  }

  async list(): Promise<QueueInfo[]> {
    const names = (await this.call(() => this.client.smembers(NAMES_KEY))).sort();
    const out: QueueInfo[] = [];
    for (const name of names) {
      try {
        out.push(await this.info(name));
      } catch (err) {
        if (!(err instanceof StowageError && err.code === 'NOT_FOUND')) throw err;
      }
    }
    return out;
  }

  async info(name: string): Promise<QueueInfo> {
    const [maxSize, maxDeliveries, createdAtMs, idleTimeoutMs, lastUsedMs] = (await this.run(
      lua.INFO,
      name,
      [],
    )) as (Buffer | null)[];
    return {
      name,
      maxSize: Number(String(maxSize)),
      maxDeliveries: Number(String(maxDeliveries)),
      idleTimeoutMs: Number(String(idleTimeoutMs ?? 0)),
      createdAtMs: Number(String(createdAtMs)),
      lastUsedMs: Number(String(lastUsedMs ?? createdAtMs)),
    };
  }

  async touch(name: string, atMs?: number): Promise<void> {
    await this.run(lua.TOUCH, name, [atMs ?? '']);
  }

  async dropIfIdle(name: string, nowMs?: number): Promise<boolean> {
    if (Number(await this.run(lua.DROP_IF_IDLE, name, [nowMs ?? ''])) !== 1) return false;
    await this.call(() => this.commands.command(['SREM', NAMES_KEY, name], true));
    const recreated = await this.call(() => this.client.exists(`${this.prefix(name)}meta`));
    if (recreated === 1) await this.call(() => this.commands.command(['SADD', NAMES_KEY, name], true));
    return true;
  }

  async put(name: string, items: Buffer[], options: PutOptions = {}): Promise<void> {
    const partition = options.partition ?? DEFAULT_PARTITION;
    await this.run(lua.PUT, name, [partition, partitionTtl(partition, options.partitionTtlMs), ...items]);
  }

  async get(name: string, options: GetOptions = {}): Promise<DeliveredItem[]> {
    const partition = options.partition ?? DEFAULT_PARTITION;
    const max = options.max ?? DEFAULT_GET_MAX;
    const visibility = options.ack?.visibilityMs ?? 0;
    const leaseIds = visibility === 0 ? [] : Array.from({ length: max }, () => randomUUID());
    const flat = (await this.run(lua.GET, name, [partition, max, visibility, ...leaseIds])) as (Buffer | number)[];
    const out: DeliveredItem[] = [];
    for (let i = 0; i < flat.length; i += 3) {
      const leaseId = String(flat[i + 2]);
      out.push({ data: flat[i] as Buffer, deliveries: Number(flat[i + 1]), ...(leaseId ? { leaseId } : {}) });
    }
    return out;
  }

  async ack(name: string, leaseIds: string[]): Promise<number> {
    return Number(await this.run(lua.ACK, name, leaseIds));
  }

  async len(name: string, scope: LenScope = {}): Promise<number> {
    const args = 'total' in scope ? ['total', ''] : ['part', scope.partition ?? DEFAULT_PARTITION];
    return Number(await this.run(lua.LEN, name, args));
  }

  async partitions(name: string): Promise<{ partition: string; length: number }[]> {
    const flat = (await this.run(lua.PARTITIONS, name, [])) as (Buffer | string)[];
    const out: { partition: string; length: number }[] = [];
    for (let i = 0; i < flat.length; i += 2) out.push({ partition: String(flat[i]), length: Number(String(flat[i + 1])) });
    return out.sort((a, b) => (a.partition < b.partition ? -1 : a.partition > b.partition ? 1 : 0));
  }

  async clear(name: string, scope: ClearScope = {}): Promise<void> {
    const args = 'all' in scope ? ['all', ''] : ['part', scope.partition ?? DEFAULT_PARTITION];
    await this.run(lua.CLEAR, name, args);
  }

  async peek(name: string, options: PeekOptions = {}): Promise<PeekPage> {
    const partition = options.partition ?? DEFAULT_PARTITION;
    const limit = options.limit ?? DEFAULT_PEEK_LIMIT;
    const after = parseCursor(options.cursor);
    const flat = (await this.run(lua.PEEK, name, [partition, after, limit + 1])) as Buffer[];
    const rows: { id: string; data: Buffer; deliveries: number }[] = [];
    for (let i = 0; i < flat.length; i += 3) {
      rows.push({ id: String(flat[i]), data: flat[i + 1]!, deliveries: Number(String(flat[i + 2])) });
    }
    const page = rows.slice(0, limit);
    return {
      items: page.map(({ data, deliveries }) => ({ data, deliveries })),
      cursor: rows.length > limit ? page[page.length - 1]!.id : undefined,
    };
  }

  waitForItems(name: string, partition: string, signal: AbortSignal): Promise<void> {
    return waitForPut(this.events, name, partition, signal);
  }

  async close(): Promise<void> {
    this.client.disconnect();
    this.sub.disconnect();
  }

  /** The key prefix of one queue; the hash tag keeps all its keys in one Cluster slot. */
  private prefix(name: string): string {
    return `stowage:queue:{${name}}:`;
  }

  /** Runs a script for queue `name`, loading it again if Redis forgot it. */
  private async run(script: string, name: string, args: Arg[]): Promise<unknown> {
    const prefix = this.prefix(name);
    try {
      await redisReady(this.client, this.where, CONNECT_WAIT_MS);
      const keys = QUEUE_KEYS.map((k) => prefix + k);
      return await this.commands.script(luaScript(script), keys, [prefix, name, ...args], WRITES.has(script));
    } catch (err) {
      // Redis may or may not prefix a script's error_reply with "ERR ".
      const msg = messageOf(err).replace(/^ERR /, '');
      if (msg.startsWith('STOWAGE_NOT_FOUND')) throw queueNotFound(name);
      if (msg.startsWith('STOWAGE_EXISTS')) throw new AlreadyExistsError(`queue ${quote(name)} already exists`);
      if (msg.startsWith('STOWAGE_FULL')) {
        const [, free, requested] = msg.split(' ');
        throw new QueueFullError(name, Number(free), Number(requested));
      }
      throw this.fail(err);
    }
  }

  private async call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      await redisReady(this.client, this.where, CONNECT_WAIT_MS);
      return await fn();
    } catch (err) {
      throw this.fail(err);
    }
  }

  private fail(err: unknown): StowageError {
    if (err instanceof StowageError) return err;
    if (err instanceof Error && err.name === 'ReplyError' && !TRANSIENT_REPLY.test(err.message)) {
      return new InternalError(`redis at ${this.where}: ${err.message}`, { cause: err });
    }
    return this.unavailable(err);
  }

  private unavailable(err: unknown): UnavailableError {
    return new UnavailableError(`redis at ${this.where} is unavailable: ${messageOf(err)}`, { cause: err });
  }
}
