/**
 * CallStore on Redis, for a set of servers electing one active bridge
 * (lease.ts): `{stowage:bridge}:calls` is a hash of call id -> record
 * (msgpack), `{stowage:bridge}:schedules` a hash of name -> Schedule (proto
 * bytes). Each write is one Lua script, so putCalls writes all of its calls
 * or none, and it resolves once Redis has accepted it (what survives a Redis
 * crash or failover is Redis' own persistence and replication: see README).
 *
 * Fencing. A store made with `fence` (the lease value of the term it serves)
 * writes only while `{stowage:bridge}:leader` still holds exactly that value,
 * checked inside the same script as the write: a bridge that lost its lease,
 * and has not noticed yet, cannot overwrite what the next leader wrote.
 * Without `fence` (tests of the store alone) writes are not checked.
 */
import { decode, encode } from '@msgpack/msgpack';
import { Schedule } from '../gen/stowage/v1/bridge.js';
import { BRIDGE_KEY_PREFIX, NOT_LEADER, type BridgeRedis, type RedisArg } from './redis-client.js';
import type { CallRecord, CallStore } from './types.js';

export const LEADER_KEY = `${BRIDGE_KEY_PREFIX}leader`;
const CALLS_KEY = `${BRIDGE_KEY_PREFIX}calls`;
const SCHEDULES_KEY = `${BRIDGE_KEY_PREFIX}schedules`;

const FENCE = `if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return redis.error_reply('${NOT_LEADER}') end`;

/** KEYS: leader, hash. ARGV: fence, then field, value pairs. */
const HSET_FENCED = `${FENCE}
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
return 1`;

/** KEYS: leader, hash. ARGV: fence, then fields. Returns how many were there. */
const HDEL_FENCED = `${FENCE}
local n = 0
for i = 2, #ARGV do n = n + redis.call('HDEL', KEYS[2], ARGV[i]) end
return n`;

export class RedisCallStore implements CallStore {
  constructor(
    private readonly redis: BridgeRedis,
    private readonly fence = '',
  ) {}

  async loadCalls(): Promise<CallRecord[]> {
    const all = await this.redis.call((c) => c.hgetallBuffer(CALLS_KEY));
    return Object.values(all).map(decodeCall);
  }

  async putCalls(calls: readonly CallRecord[]): Promise<void> {
    if (!calls.length) return;
    await this.write(HSET_FENCED, CALLS_KEY, calls.flatMap((c) => [c.id, encodeCall(c)]));
  }

  async deleteCalls(ids: string[]): Promise<void> {
    if (!ids.length) return;
    await this.write(HDEL_FENCED, CALLS_KEY, ids);
  }

  async loadSchedules(): Promise<Schedule[]> {
    const all = await this.redis.call((c) => c.hgetallBuffer(SCHEDULES_KEY));
    return Object.values(all).map((b) => Schedule.decode(b));
  }

  async putSchedule(schedule: Schedule): Promise<void> {
    await this.write(HSET_FENCED, SCHEDULES_KEY, [schedule.name, Buffer.from(Schedule.encode(schedule).finish())]);
  }

  async deleteSchedule(name: string): Promise<boolean> {
    return Number(await this.write(HDEL_FENCED, SCHEDULES_KEY, [name])) > 0;
  }

  /** The connection is the server's (shared with the lease): closing a store leaves it open. */
  async close(): Promise<void> {}

  private write(lua: string, key: string, args: RedisArg[]): Promise<unknown> {
    return this.redis.script(lua, [LEADER_KEY, key], [this.fence, ...args]);
  }
}

function encodeCall(call: CallRecord): Buffer {
  // ignoreUndefined: an absent field (value, error, reclaimUntilMs) must come back absent, not null.
  return Buffer.from(encode(call, { ignoreUndefined: true }));
}

function decodeCall(bytes: Buffer): CallRecord {
  const call = decode(bytes) as CallRecord;
  return { ...call, args: Buffer.from(call.args), ...(call.value ? { value: Buffer.from(call.value) } : {}) };
}
