/**
 * Scoped-token records in Redis, for servers that share their volumes' heads
 * there (common/tokens.ts says how a server uses them), per store: a hash of id ->
 * record (JSON, the secret's hash only), and a channel on which each change
 * names the record changed.
 */
import { openRedis, openRedisSubscriber, type RedisClient } from '../common/redis-connect.js';
import { redisCall } from '../common/redis-ready.js';
import type { SharedTokenRecords, TokenRecord } from '../common/tokens.js';
import { redactUrl } from '../common/urls.js';

/** The records and change channel of one store's servers (bucket and prefix). */
const recordsKey = (store: string) => `{stowage:tokens:${store}}:records`;
const channelOf = (store: string) => `stowage:tokens:${store}:changed`;
const CONNECT_WAIT_MS = 1000;

export class RedisTokenRecords implements SharedTokenRecords {
  private readonly where: string;
  private readonly records: string;
  private readonly channel: string;
  private sub: RedisClient | undefined;

  private constructor(
    private readonly redis: RedisClient,
    private readonly url: string,
    store: string,
    private readonly cluster: boolean,
  ) {
    this.where = redactUrl(url);
    this.records = recordsKey(store);
    this.channel = channelOf(store);
  }

  /** Connects to the records of the servers of `store` (its bucket and prefix). */
  static async connect(url: string, store: string, cluster = false): Promise<RedisTokenRecords> {
    const redis = openRedis(url, { cluster, lazyConnect: true, connectTimeoutMs: 3000, commandTimeoutMs: 3000 });
    const shared = new RedisTokenRecords(redis, url, store, cluster);
    await shared.call(() => redis.connect());
    return shared;
  }

  async all(): Promise<TokenRecord[]> {
    const all = await this.call(() => this.redis.hgetall(this.records));
    return Object.values(all).map((v) => JSON.parse(v) as TokenRecord);
  }

  async get(id: string): Promise<TokenRecord | undefined> {
    const v = await this.call(() => this.redis.hget(this.records, id));
    return v ? (JSON.parse(v) as TokenRecord) : undefined;
  }

  async add(record: TokenRecord): Promise<boolean> {
    const added = (await this.call(() => this.redis.hsetnx(this.records, record.id, JSON.stringify(record)))) === 1;
    if (added) await this.call(() => this.redis.publish(this.channel, record.id));
    return added;
  }

  async put(record: TokenRecord): Promise<void> {
    await this.call(() => this.redis.hset(this.records, record.id, JSON.stringify(record)));
    await this.call(() => this.redis.publish(this.channel, record.id));
  }

  async watch(changed: (id: string) => void): Promise<void> {
    const sub = openRedisSubscriber(this.url, { cluster: this.cluster, lazyConnect: true, connectTimeoutMs: 3000 });
    sub.on('message', (channel: string, id: string) => channel === this.channel && changed(id));
    this.sub = sub;
    await this.call(async () => {
      await sub.connect();
      await sub.subscribe(this.channel);
    });
  }

  async close(): Promise<void> {
    this.sub?.disconnect();
    this.redis.disconnect();
  }

  private call<T>(fn: () => Promise<T>): Promise<T> {
    return redisCall(this.redis, this.where, 'the scoped tokens', CONNECT_WAIT_MS, fn);
  }
}
