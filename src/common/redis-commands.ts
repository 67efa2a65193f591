/**
 * Running the state backends' Lua scripts and writes on a Redis or a Redis
 * Cluster, with an optional WAIT for replicas after each write.
 *
 * Scripts: EVALSHA first, the source once on NOSCRIPT (a restarted node, or
 * a Cluster node that never saw the script: each node has its own script
 * cache, and ioredis routes EVALSHA and the EVAL after it by the first KEY to
 * the same node, the master of the slot).
 *
 * WAIT (serve --redis-wait N[/TIMEOUT]): WAIT counts the replicas that have
 * the writes of ITS connection, so it must go down the connection that took
 * the write. The write and WAIT are sent as one pipeline: on a single Redis a
 * pipeline is one connection; on a Cluster ioredis sends a whole pipeline to
 * the node of its keyed commands' slot, and WAIT has no key, so it goes with
 * the script to the slot's master (test/redis-cluster.test.ts checks that an
 * acknowledged write survives the master's death). Fewer acknowledgements
 * than N: UnavailableError, the write stays on the master and may be lost at
 * a failover. Reads never WAIT.
 */
import { createHash } from 'node:crypto';
import { parseDuration } from './duration.js';
import { InvalidArgumentError, UnavailableError, messageOf } from './errors.js';
import { quote } from './quote.js';
import type { RedisClient } from './redis-connect.js';

/** After each write: WAIT until `replicas` replicas have it, for at most `timeoutMs`. */
export interface RedisWait {
  replicas: number;
  timeoutMs: number;
}

/** The timeout of `--redis-wait N` given without one. */
export const DEFAULT_REDIS_WAIT_TIMEOUT_MS = 1000;

/** Parses `N[/TIMEOUT]` (TIMEOUT: a duration, e.g. 500ms, 2s, or milliseconds; default 1 s). */
export function parseRedisWait(flag: string, value: string): RedisWait {
  const [n, timeout, extra] = value.split('/');
  const replicas = Number(n);
  if (extra !== undefined || !/^\d+$/.test(n?.trim() ?? '') || replicas < 1 || replicas > 1000) {
    throw new InvalidArgumentError(`${flag} ${quote(value)}: give N[/TIMEOUT], N replicas (1 or more), e.g. 1 or 1/500ms`);
  }
  const timeoutMs = timeout === undefined ? DEFAULT_REDIS_WAIT_TIMEOUT_MS : parseDuration(`${flag} timeout`, timeout);
  // WAIT with timeout 0 blocks forever: a dead replica would hang every write.
  if (timeoutMs < 1) throw new InvalidArgumentError(`${flag} ${quote(value)}: the timeout must be at least 1 ms`);
  return { replicas, timeoutMs };
}

export type Reply = Buffer | number | null | Reply[];
type Arg = string | Buffer | number;

/** A script with its SHA-1, computed once. */
export interface LuaScript {
  source: string;
  sha: string;
}

const scripts = new Map<string, LuaScript>();

export function luaScript(source: string): LuaScript {
  let s = scripts.get(source);
  if (!s) scripts.set(source, (s = { source, sha: createHash('sha1').update(source).digest('hex') }));
  return s;
}

export class RedisCommands {
  constructor(
    private readonly client: RedisClient,
    /** The redacted URL, for messages. */
    private readonly where: string,
    private readonly wait: RedisWait | undefined,
  ) {}

  /**
   * Runs `script` on `keys` (all in one slot; the first routes it) and returns
   * its reply. `write`: WAIT for replicas afterwards when configured.
   */
  async script(script: LuaScript, keys: readonly string[], args: readonly Arg[], write: boolean): Promise<Reply> {
    const tail: Arg[] = [keys.length, ...keys, ...args];
    try {
      return await this.send(['EVALSHA', script.sha, ...tail], write);
    } catch (err) {
      if (!messageOf(err).startsWith('NOSCRIPT')) throw err;
      return await this.send(['EVAL', script.source, ...tail], write);
    }
  }

  /** One command with keys (e.g. SADD); `write`: WAIT afterwards when configured. */
  command(command: readonly [string, ...Arg[]], write: boolean): Promise<Reply> {
    return this.send(command, write);
  }

  private async send([name, ...args]: readonly [string, ...Arg[]], write: boolean): Promise<Reply> {
    if (!write || !this.wait) return (await this.client.callBuffer(name, ...args)) as Reply;
    const { replicas, timeoutMs } = this.wait;
    const results = await this.client
      .pipeline()
      .callBuffer(name, ...args)
      .call('WAIT', replicas, timeoutMs)
      .exec();
    if (!results || results.length !== 2) throw new UnavailableError(`redis at ${this.where}: a write and its WAIT got no answer`);
    const [[err, reply], [waitErr, acked]] = results as [[Error | null, Reply], [Error | null, number]];
    if (err) throw err;
    if (waitErr) throw waitErr;
    if (Number(acked) < replicas) {
      throw new UnavailableError(
        `redis at ${this.where}: written to the master but acknowledged by only ${Number(acked)} of ${replicas} ` +
          `replica${replicas === 1 ? '' : 's'} within ${timeoutMs} ms; it may be lost at a failover`,
      );
    }
    return reply;
  }
}
