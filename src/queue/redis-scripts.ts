/**
 * Lua scripts of the Redis queue backend. Each runs atomically with KEYS =
 * the queue's fixed keys (META, PARTS, EXPIRY, DATA, SEEN, LEASES, LEASE
 * below: meta, parts, expiry, data, n, leases, lease under the prefix),
 * ARGV[1] = the key prefix `stowage:queue:{NAME}:` and ARGV[2] = NAME. The
 * only keys not in KEYS are the partitions' ready lists `r:<partition>`,
 * which depend on the data; they start with the same prefix, so every key a
 * script touches lives in the same Cluster slot.
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
local META, PARTS, EXPIRY, DATA, SEEN, LEASES, LEASE = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local DEAD = '${DEAD_LETTER_PARTITION}'
local CHUNK = 1000
local function fmt(x) return string.format('%d', x) end
local function split(v)
  local c = string.find(v, ':', 1, true)
  return string.sub(v, 1, c - 1), string.sub(v, c + 1)
end
local function forget(id)
  redis.call('HDEL', DATA, id)
  redis.call('HDEL', SEEN, id)
end
local function dropPart(part)
  for _, id in ipairs(redis.call('ZRANGE', P .. 'r:' .. part, 0, -1)) do forget(id) end
  redis.call('DEL', P .. 'r:' .. part)
  local all = redis.call('HGETALL', LEASE)
  for i = 1, #all, 2 do
    local id, p = split(all[i + 1])
    if p == part then
      forget(id)
      redis.call('HDEL', LEASE, all[i])
      redis.call('ZREM', LEASES, all[i])
    end
  end
  local count = tonumber(redis.call('HGET', PARTS, part) or '0')
  redis.call('HDEL', PARTS, part)
  redis.call('ZREM', EXPIRY, part)
  -- fmt: Lua renders -0 as "-0", which HINCRBY refuses.
  redis.call('HINCRBY', META, 'total', fmt(-count))
end
local function redisTime()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function lastUsed()
  local v = redis.call('HMGET', META, 'lastUsedMs', 'createdAtMs')
  return tonumber(v[1] or v[2])
end
local function dropQueue()
  for _, part in ipairs(redis.call('HKEYS', PARTS)) do dropPart(part) end
  redis.call('DEL', META, PARTS, EXPIRY, DATA, SEEN, LEASES, LEASE)
end
`;

/** Fails for an unknown queue, sets T (Redis time) and applies due partition and lease expiry. */
const PRELUDE = `${HELPERS}
if redis.call('EXISTS', META) == 0 then return redis.error_reply('STOWAGE_NOT_FOUND') end
local T = redisTime()
for _, part in ipairs(redis.call('ZRANGEBYSCORE', EXPIRY, '-inf', T)) do dropPart(part) end
local maxd = tonumber(redis.call('HGET', META, 'maxDeliveries'))
for _, lid in ipairs(redis.call('ZRANGEBYSCORE', LEASES, '-inf', T)) do
  local v = redis.call('HGET', LEASE, lid)
  redis.call('HDEL', LEASE, lid)
  redis.call('ZREM', LEASES, lid)
  if v then
    local id, part = split(v)
    if tonumber(redis.call('HGET', SEEN, id) or '0') >= maxd then
      redis.call('HINCRBY', PARTS, part, -1)
      redis.call('HINCRBY', PARTS, DEAD, 1)
      part = DEAD
    end
    redis.call('ZADD', P .. 'r:' .. part, tonumber(id), id)
  end
end
`;

export const CREATE = `
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.error_reply('STOWAGE_EXISTS') end
redis.call('HSET', KEYS[1], 'maxSize', ARGV[3], 'maxDeliveries', ARGV[4], 'createdAtMs', ARGV[5],
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
if at > lastUsed() then redis.call('HSET', META, 'lastUsedMs', fmt(at)) end
return 1
`;

/**
 * ARGV[3] nowMs ('' = Redis time). Drops the queue if it is idle; returns 1 if
 * it did, 0 if it is fresh, never expires or does not exist (so no PRELUDE,
 * which fails for an unknown queue).
 */
export const DROP_IF_IDLE = `${HELPERS}
if redis.call('EXISTS', META) == 0 then return 0 end
local now = tonumber(ARGV[3]) or redisTime()
local idle = tonumber(redis.call('HGET', META, 'idleTimeoutMs') or '0')
if idle == 0 or lastUsed() + idle > now then return 0 end
dropQueue()
return 1
`;

/** ARGV[3] partition, [4] ttlMs (0: never), [5..] items. */
export const PUT = `${PRELUDE}
local part = ARGV[3]
local ttl = tonumber(ARGV[4])
local k = #ARGV - 4
local total = tonumber(redis.call('HGET', META, 'total'))
local maxSize = tonumber(redis.call('HGET', META, 'maxSize'))
if total + k > maxSize then return redis.error_reply('STOWAGE_FULL ' .. fmt(maxSize - total) .. ' ' .. fmt(k)) end
local seq = redis.call('HINCRBY', META, 'seq', k) - k
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
  redis.call('HSET', DATA, unpack(d))
  redis.call('HSET', SEEN, unpack(n))
end
redis.call('HINCRBY', PARTS, part, k)
redis.call('HINCRBY', META, 'total', k)
if ttl > 0 then redis.call('ZADD', EXPIRY, T + ttl, part) else redis.call('ZREM', EXPIRY, part) end
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
local data = redis.call('HMGET', DATA, unpack(ids))
local seen = redis.call('HMGET', SEEN, unpack(ids))
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
  redis.call('HDEL', DATA, unpack(ids))
  redis.call('HDEL', SEEN, unpack(ids))
  redis.call('HINCRBY', PARTS, part, -#ids)
  redis.call('HINCRBY', META, 'total', -#ids)
else
  redis.call('HSET', SEEN, unpack(n))
  redis.call('HSET', LEASE, unpack(leases))
  redis.call('ZADD', LEASES, unpack(expiries))
end
return out
`;

/** ARGV[3..] lease ids. */
export const ACK = `${PRELUDE}
local acked = 0
for i = 3, #ARGV do
  local v = redis.call('HGET', LEASE, ARGV[i])
  if v then
    local id, part = split(v)
    forget(id)
    redis.call('HDEL', LEASE, ARGV[i])
    redis.call('ZREM', LEASES, ARGV[i])
    redis.call('HINCRBY', PARTS, part, -1)
    redis.call('HINCRBY', META, 'total', -1)
    acked = acked + 1
  end
end
return acked
`;

/** ARGV[3] 'total' or 'part', [4] partition. */
export const LEN = `${PRELUDE}
if ARGV[3] == 'total' then return tonumber(redis.call('HGET', META, 'total')) end
return tonumber(redis.call('HGET', PARTS, ARGV[4]) or '0')
`;

/** Flat [partition, count, …] of the partitions holding items. */
export const PARTITIONS = `${PRELUDE}
local out = {}
local flat = redis.call('HGETALL', PARTS)
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
  for _, part in ipairs(redis.call('HKEYS', PARTS)) do dropPart(part) end
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
  table.insert(out, redis.call('HGET', DATA, id))
  table.insert(out, redis.call('HGET', SEEN, id))
end
return out
`;

/** Existence check plus expiry, for info(). Returns the meta fields. */
export const INFO = `${PRELUDE}
return redis.call('HMGET', META, 'maxSize', 'maxDeliveries', 'createdAtMs', 'idleTimeoutMs', 'lastUsedMs')
`;
