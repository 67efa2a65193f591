/**
 * Lua scripts of the Redis queue backend. Each runs atomically with KEYS[1] =
 * the queue's meta key (for Cluster routing), ARGV[1] = the key prefix
 * `stowage:queue:{NAME}:` and ARGV[2] = NAME; every key a script touches
 * starts with that prefix, so it lives in the same Cluster slot.
 *
 * Keys under the prefix: meta (hash: maxSize, maxDeliveries, idleTimeoutMs,
 * createdAtMs, lastUsedMs, seq, total; the idle fields are absent in queues
 * created before idle expiry existed and read as 0 and createdAtMs), parts
 * (hash partition → item count), expiry (zset partition → expiresAtMs),
 * r:<partition> (zset of deliverable item ids scored by seq, so
 * a redelivered item goes back ahead of newer ones), data / n (hash item id →
 * bytes / deliveries), leases (zset lease id → expiresAtMs), lease (hash lease
 * id → "<item id>:<partition>"). Times come from Redis TIME, so servers with
 * skewed clocks agree; touch and dropIfIdle use a caller's clock reading only
 * when the caller passes one.
 */
import { DEAD_LETTER_PARTITION } from './types.js';

/** Pub/sub channel announcing puts: message "NAME\nPARTITION". */
export const QUEUE_EVENTS_CHANNEL = 'stowage:queue:events';

/** Helpers every queue script may use; touches nothing by itself. */
const HELPERS = `
local P = ARGV[1]
local NAME = ARGV[2]
local DEAD = '${DEAD_LETTER_PARTITION}'
local CHUNK = 1000
local function fmt(x) return string.format('%d', x) end
local function split(v)
  local c = string.find(v, ':', 1, true)
  return string.sub(v, 1, c - 1), string.sub(v, c + 1)
end
local function forget(id)
  redis.call('HDEL', P .. 'data', id)
  redis.call('HDEL', P .. 'n', id)
end
local function dropPart(part)
  for _, id in ipairs(redis.call('ZRANGE', P .. 'r:' .. part, 0, -1)) do forget(id) end
  redis.call('DEL', P .. 'r:' .. part)
  local all = redis.call('HGETALL', P .. 'lease')
  for i = 1, #all, 2 do
    local id, p = split(all[i + 1])
    if p == part then
      forget(id)
      redis.call('HDEL', P .. 'lease', all[i])
      redis.call('ZREM', P .. 'leases', all[i])
    end
  end
  local count = tonumber(redis.call('HGET', P .. 'parts', part) or '0')
  redis.call('HDEL', P .. 'parts', part)
  redis.call('ZREM', P .. 'expiry', part)
  -- fmt: Lua renders -0 as "-0", which HINCRBY refuses.
  redis.call('HINCRBY', P .. 'meta', 'total', fmt(-count))
end
local function redisTime()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function lastUsed()
  local v = redis.call('HMGET', P .. 'meta', 'lastUsedMs', 'createdAtMs')
  return tonumber(v[1] or v[2])
end
local function dropQueue()
  for _, part in ipairs(redis.call('HKEYS', P .. 'parts')) do dropPart(part) end
  redis.call('DEL', P .. 'meta', P .. 'parts', P .. 'expiry', P .. 'data', P .. 'n', P .. 'leases', P .. 'lease')
end
`;

/** Fails for an unknown queue, sets T (Redis time) and applies due partition and lease expiry. */
const PRELUDE = `${HELPERS}
if redis.call('EXISTS', P .. 'meta') == 0 then return redis.error_reply('STOWAGE_NOT_FOUND') end
local T = redisTime()
for _, part in ipairs(redis.call('ZRANGEBYSCORE', P .. 'expiry', '-inf', T)) do dropPart(part) end
local maxd = tonumber(redis.call('HGET', P .. 'meta', 'maxDeliveries'))
for _, lid in ipairs(redis.call('ZRANGEBYSCORE', P .. 'leases', '-inf', T)) do
  local v = redis.call('HGET', P .. 'lease', lid)
  redis.call('HDEL', P .. 'lease', lid)
  redis.call('ZREM', P .. 'leases', lid)
  if v then
    local id, part = split(v)
    if tonumber(redis.call('HGET', P .. 'n', id) or '0') >= maxd then
      redis.call('HINCRBY', P .. 'parts', part, -1)
      redis.call('HINCRBY', P .. 'parts', DEAD, 1)
      part = DEAD
    end
    redis.call('ZADD', P .. 'r:' .. part, tonumber(id), id)
  end
end
`;

export const CREATE = `
local P = ARGV[1]
if redis.call('EXISTS', P .. 'meta') == 1 then return redis.error_reply('STOWAGE_EXISTS') end
redis.call('HSET', P .. 'meta', 'maxSize', ARGV[3], 'maxDeliveries', ARGV[4], 'createdAtMs', ARGV[5],
  'idleTimeoutMs', ARGV[6], 'lastUsedMs', ARGV[5], 'seq', 0, 'total', 0)
return 1
`;

export const DROP = `${PRELUDE}
dropQueue()
return 1
`;

/** ARGV[3] atMs ('' = now). Moves lastUsedMs forward to atMs, never back. */
export const TOUCH = `${PRELUDE}
local at = tonumber(ARGV[3]) or T
if at > lastUsed() then redis.call('HSET', P .. 'meta', 'lastUsedMs', fmt(at)) end
return 1
`;

/**
 * ARGV[3] nowMs ('' = Redis time). Drops the queue if it is idle; returns 1 if
 * it did, 0 if it is fresh, never expires or does not exist (so no PRELUDE,
 * which fails for an unknown queue).
 */
export const DROP_IF_IDLE = `${HELPERS}
if redis.call('EXISTS', P .. 'meta') == 0 then return 0 end
local now = tonumber(ARGV[3]) or redisTime()
local idle = tonumber(redis.call('HGET', P .. 'meta', 'idleTimeoutMs') or '0')
if idle == 0 or lastUsed() + idle > now then return 0 end
dropQueue()
return 1
`;

/** ARGV[3] partition, [4] ttlMs (0: never), [5..] items. */
export const PUT = `${PRELUDE}
local part = ARGV[3]
local ttl = tonumber(ARGV[4])
local k = #ARGV - 4
local total = tonumber(redis.call('HGET', P .. 'meta', 'total'))
local maxSize = tonumber(redis.call('HGET', P .. 'meta', 'maxSize'))
if total + k > maxSize then return redis.error_reply('STOWAGE_FULL ' .. fmt(maxSize - total) .. ' ' .. fmt(k)) end
local seq = redis.call('HINCRBY', P .. 'meta', 'seq', k) - k
-- Variadic writes in slices (Lua's unpack stops near 8,000 values).
for from = 1, k, CHUNK do
  local z, d, n = {}, {}, {}
  for i = from, math.min(k, from + CHUNK - 1) do
    local id = fmt(seq + i)
    table.insert(z, seq + i); table.insert(z, id)
    table.insert(d, id); table.insert(d, ARGV[4 + i])
    table.insert(n, id); table.insert(n, 0)
  end
  redis.call('ZADD', P .. 'r:' .. part, unpack(z))
  redis.call('HSET', P .. 'data', unpack(d))
  redis.call('HSET', P .. 'n', unpack(n))
end
redis.call('HINCRBY', P .. 'parts', part, k)
redis.call('HINCRBY', P .. 'meta', 'total', k)
if ttl > 0 then redis.call('ZADD', P .. 'expiry', T + ttl, part) else redis.call('ZREM', P .. 'expiry', part) end
redis.call('PUBLISH', '${QUEUE_EVENTS_CHANNEL}', NAME .. '\\n' .. part)
return k
`;

/** ARGV[3] partition, [4] max, [5] visibilityMs (0: plain), [6..] fresh lease ids. Returns flat [data, n, leaseId]*. */
export const GET = `${PRELUDE}
local part = ARGV[3]
local vis = tonumber(ARGV[5])
local out = {}
local ids = redis.call('ZRANGE', P .. 'r:' .. part, 0, tonumber(ARGV[4]) - 1)
if #ids == 0 then return out end
redis.call('ZREMRANGEBYRANK', P .. 'r:' .. part, 0, #ids - 1)
local data = redis.call('HMGET', P .. 'data', unpack(ids))
local seen = redis.call('HMGET', P .. 'n', unpack(ids))
local n, leases, expiries = {}, {}, {}
for i, id in ipairs(ids) do
  local count = tonumber(seen[i] or '0') + 1
  local lid = ''
  if vis > 0 then
    lid = ARGV[5 + i]
    table.insert(n, id); table.insert(n, count)
    table.insert(leases, lid); table.insert(leases, id .. ':' .. part)
    table.insert(expiries, T + vis); table.insert(expiries, lid)
  end
  table.insert(out, data[i])
  table.insert(out, count)
  table.insert(out, lid)
end
if vis == 0 then
  redis.call('HDEL', P .. 'data', unpack(ids))
  redis.call('HDEL', P .. 'n', unpack(ids))
  redis.call('HINCRBY', P .. 'parts', part, -#ids)
  redis.call('HINCRBY', P .. 'meta', 'total', -#ids)
else
  redis.call('HSET', P .. 'n', unpack(n))
  redis.call('HSET', P .. 'lease', unpack(leases))
  redis.call('ZADD', P .. 'leases', unpack(expiries))
end
return out
`;

/** ARGV[3..] lease ids. */
export const ACK = `${PRELUDE}
local acked = 0
for i = 3, #ARGV do
  local v = redis.call('HGET', P .. 'lease', ARGV[i])
  if v then
    local id, part = split(v)
    forget(id)
    redis.call('HDEL', P .. 'lease', ARGV[i])
    redis.call('ZREM', P .. 'leases', ARGV[i])
    redis.call('HINCRBY', P .. 'parts', part, -1)
    redis.call('HINCRBY', P .. 'meta', 'total', -1)
    acked = acked + 1
  end
end
return acked
`;

/** ARGV[3] 'total' or 'part', [4] partition. */
export const LEN = `${PRELUDE}
if ARGV[3] == 'total' then return tonumber(redis.call('HGET', P .. 'meta', 'total')) end
return tonumber(redis.call('HGET', P .. 'parts', ARGV[4]) or '0')
`;

/** Flat [partition, count, …] of the partitions holding items. */
export const PARTITIONS = `${PRELUDE}
local out = {}
local flat = redis.call('HGETALL', P .. 'parts')
for i = 1, #flat, 2 do
  if tonumber(flat[i + 1]) > 0 then
    table.insert(out, flat[i])
    table.insert(out, flat[i + 1])
  end
end
return out
`;

/** ARGV[3] 'all' or 'part', [4] partition. */
export const CLEAR = `${PRELUDE}
if ARGV[3] == 'all' then
  for _, part in ipairs(redis.call('HKEYS', P .. 'parts')) do dropPart(part) end
else
  dropPart(ARGV[4])
end
return 1
`;

/** ARGV[3] partition, [4] after seq, [5] limit + 1. Returns flat [id, data, n]*. */
export const PEEK = `${PRELUDE}
local out = {}
local ids = redis.call('ZRANGEBYSCORE', P .. 'r:' .. ARGV[3], '(' .. ARGV[4], '+inf', 'LIMIT', 0, tonumber(ARGV[5]))
for _, id in ipairs(ids) do
  table.insert(out, id)
  table.insert(out, redis.call('HGET', P .. 'data', id))
  table.insert(out, redis.call('HGET', P .. 'n', id))
end
return out
`;

/** Existence check plus expiry, for info(). Returns the meta fields. */
export const INFO = `${PRELUDE}
return redis.call('HMGET', P .. 'meta', 'maxSize', 'maxDeliveries', 'createdAtMs', 'idleTimeoutMs', 'lastUsedMs')
`;
