/**
 * CallStore on Redis, for a set of servers electing one active bridge
 * (lease.ts): `{stowage:bridge}:calls` is a hash of call id -> record
 * (msgpack), `{stowage:bridge}:schedules` a hash of name -> Schedule (proto
 * bytes), and each call's kept output `{stowage:bridge}:logs:<id>`, a list
 * of "<bytes of output it stands for>:<LogEntry proto bytes>", beside `{stowage:bridge}:logmeta:<id>`, a hash
 * of its size in bytes and how many were dropped; `{stowage:bridge}:deployments`
 * a hash of app -> DeployAppRequest (proto bytes). Each write is one Lua script, so putCalls writes all of its calls
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
import { DeployAppRequest, LogEntry, Schedule } from '../gen/stowage/v1/bridge.js';
import { BRIDGE_KEY_PREFIX, NOT_LEADER, type BridgeRedis, type RedisArg } from './redis-client.js';
import type { CallRecord, CallStore, KeptLogs } from './types.js';

export const LEADER_KEY = `${BRIDGE_KEY_PREFIX}leader`;
const CALLS_KEY = `${BRIDGE_KEY_PREFIX}calls`;
const SCHEDULES_KEY = `${BRIDGE_KEY_PREFIX}schedules`;
const DEPLOYMENTS_KEY = `${BRIDGE_KEY_PREFIX}deployments`;

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

/** KEYS: leader, hash, then each call's logs and logmeta keys. ARGV: fence, then fields. */
const DELETE_CALLS = `${FENCE}
for i = 2, #ARGV do redis.call('HDEL', KEYS[2], ARGV[i]) end
for i = 3, #KEYS do redis.call('DEL', KEYS[i]) end
return 1`;

/**
 * KEYS: leader, logs list, logmeta hash. ARGV: fence, keep bytes, then
 * entries as "<output bytes>:<proto>" (the prefix is what a dropped entry
 * adds to droppedBytes; Lua cannot read the proto).
 */
const APPEND_LOGS = `${FENCE}
local bytes = tonumber(redis.call('HGET', KEYS[3], 'bytes') or '0')
for i = 3, #ARGV do
  redis.call('RPUSH', KEYS[2], ARGV[i])
  bytes = bytes + #ARGV[i] - string.find(ARGV[i], ':', 1, true)
end
local keep = tonumber(ARGV[2])
local dropped = 0
while bytes > keep do
  local e = redis.call('LPOP', KEYS[2])
  if not e then break end
  local sep = string.find(e, ':', 1, true)
  bytes = bytes - (#e - sep)
  dropped = dropped + tonumber(string.sub(e, 1, sep - 1))
end
redis.call('HSET', KEYS[3], 'bytes', bytes)
if dropped > 0 then redis.call('HINCRBY', KEYS[3], 'dropped', dropped) end
return 1`;

const logsKey = (id: string) => `${BRIDGE_KEY_PREFIX}logs:${id}`;
const logMetaKey = (id: string) => `${BRIDGE_KEY_PREFIX}logmeta:${id}`;

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
    const keys = [LEADER_KEY, CALLS_KEY, ...ids.flatMap((id) => [logsKey(id), logMetaKey(id)])];
    await this.redis.script(DELETE_CALLS, keys, [this.fence, ...ids]);
  }

  async appendLogs(callId: string, entries: readonly LogEntry[], keepBytes: number): Promise<void> {
    if (!entries.length) return;
    const encoded = entries.map((e) => Buffer.concat([Buffer.from(`${e.droppedBytes || e.data.length}:`), LogEntry.encode(e).finish()]));
    await this.redis.script(APPEND_LOGS, [LEADER_KEY, logsKey(callId), logMetaKey(callId)], [this.fence, keepBytes, ...encoded]);
  }

  async readLogs(callId: string): Promise<KeptLogs> {
    const [list, dropped] = await this.redis.call((c) => Promise.all([c.lrangeBuffer(logsKey(callId), 0, -1), c.hget(logMetaKey(callId), 'dropped')]));
    return { entries: list.map((b) => LogEntry.decode(b.subarray(b.indexOf(0x3a) + 1))), droppedBytes: Number(dropped ?? 0) };
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

  async loadDeployments(): Promise<DeployAppRequest[]> {
    const all = await this.redis.call((c) => c.hgetallBuffer(DEPLOYMENTS_KEY));
    return Object.values(all).map((b) => DeployAppRequest.decode(b));
  }

  async putDeployment(deployment: DeployAppRequest): Promise<void> {
    await this.write(HSET_FENCED, DEPLOYMENTS_KEY, [deployment.app, Buffer.from(DeployAppRequest.encode(deployment).finish())]);
  }

  async deleteDeployment(app: string): Promise<boolean> {
    return Number(await this.write(HDEL_FENCED, DEPLOYMENTS_KEY, [app])) > 0;
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
