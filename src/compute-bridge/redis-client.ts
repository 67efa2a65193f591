/**
 * The bridge's one Redis connection (the lease and the call store share it),
 * and how both run commands: each waits a moment for a reconnect
 * (common/redis-ready.ts), then fails with UnavailableError naming the URL;
 * a script's own refusal comes back as the error it names. Every key of the
 * bridge is under the hash tag {stowage:bridge}, so each script touches one
 * Redis Cluster slot.
 *
 * The client comes from common's openRedis (a single node, or a Cluster).
 */
import { FailedPreconditionError, InternalError, StowageError, UnavailableError, messageOf } from '../common/errors.js';
import { RedisCommands, luaScript } from '../common/redis-commands.js';
import { openRedis, type RedisClient } from '../common/redis-connect.js';
import { redisReady } from '../common/redis-ready.js';
import { redactUrl } from '../common/urls.js';

/** Prefix of every bridge key; the braces make it the Cluster hash tag. */
export const BRIDGE_KEY_PREFIX = '{stowage:bridge}:';
/** How long a command waits for a (re)connection before UnavailableError. */
const CONNECT_WAIT_MS = 1000;

/** What a script returns with redis.error_reply when the caller's lease term is over. */
export const NOT_LEADER = 'STOWAGE_NOT_LEADER';

export type RedisArg = string | Buffer | number;

/** Connects to `url` (UnavailableError if it cannot be reached). */
export async function openBridgeRedis(url: string, cluster = false): Promise<BridgeRedis> {
  // Errors surface on the commands; the client reconnects by itself.
  const client = openRedis(url, { cluster, lazyConnect: true, connectTimeoutMs: 3000 });
  const redis = new BridgeRedis(client, url);
  try {
    await client.connect();
  } catch (err) {
    client.disconnect();
    throw redis.unavailable(err);
  }
  return redis;
}

export class BridgeRedis {
  /** The URL without its password, for messages. */
  readonly where: string;
  /** Scripts run through the state backends' runner (EVALSHA, EVAL on NOSCRIPT, per node); the bridge never WAITs. */
  private readonly commands: RedisCommands;

  constructor(
    private readonly client: RedisClient,
    url: string,
  ) {
    this.where = redactUrl(url);
    this.commands = new RedisCommands(client, this.where, undefined);
  }

  /** Runs a Lua script (EVALSHA, EVAL when Redis does not have it yet). */
  async script(lua: string, keys: string[], args: RedisArg[]): Promise<unknown> {
    return this.call(() => this.commands.script(luaScript(lua), keys, args, false));
  }

  /** One command on the client, with the bridge's error mapping. */
  async call<T>(fn: (client: RedisClient) => Promise<T>): Promise<T> {
    try {
      await redisReady(this.client, this.where, CONNECT_WAIT_MS);
      return await fn(this.client);
    } catch (err) {
      throw this.fail(err);
    }
  }

  close(): void {
    this.client.disconnect();
  }

  unavailable(err: unknown): UnavailableError {
    return new UnavailableError(`redis at ${this.where} is unavailable: ${messageOf(err)}`, { cause: err });
  }

  private fail(err: unknown): StowageError {
    if (err instanceof StowageError) return err;
    if (err instanceof Error && err.name === 'ReplyError') {
      // Redis may or may not prefix a script's error_reply with "ERR ".
      const msg = err.message.replace(/^ERR /, '');
      if (msg.startsWith(NOT_LEADER)) {
        return new FailedPreconditionError(`this server no longer holds the compute bridge lease in redis at ${this.where}: another server's bridge owns the calls now`);
      }
      return new InternalError(`redis at ${this.where}: ${err.message}`, { cause: err });
    }
    return this.unavailable(err);
  }
}
