/**
 * Lua scripts for RedisDictBackend. Every script takes the five keys of one
 * dict (all with the same {NAME} hash tag, so one cluster slot) in this order:
 * meta, data, ver, exp, idx. Time comes from Redis (TIME), not from clients,
 * so servers with skewed clocks agree on what has expired; touch and dropIfIdle
 * use a caller's clock reading only when the caller passes one.
 *
 * Errors a script raises start with "STOWAGE_" and are mapped to typed errors
 * by the backend.
 */

const PRELUDE = `
local meta, data, ver, exp, idx = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
if redis.call('EXISTS', meta) == 0 then return redis.error_reply('STOWAGE_NOTFOUND') end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function version(k)
  local v = redis.call('HGET', ver, k)
  if not v then return 0 end
  local e = redis.call('ZSCORE', exp, k)
  if e and tonumber(e) <= now then return 0 end
  return tonumber(v)
end
local function remove(k)
  redis.call('HDEL', data, k)
  redis.call('HDEL', ver, k)
  redis.call('ZREM', exp, k)
  redis.call('ZREM', idx, k)
end
-- expiresAt: 0 = no TTL, -1 = keep the current TTL
local function store(k, value, v, expiresAt)
  redis.call('HSET', data, k, value)
  redis.call('HSET', ver, k, v)
  redis.call('ZADD', idx, 0, k)
  if expiresAt > 0 then redis.call('ZADD', exp, expiresAt, k)
  elseif expiresAt == 0 then redis.call('ZREM', exp, k) end
end
local function sweep()
  for _, k in ipairs(redis.call('ZRANGEBYSCORE', exp, '-inf', now, 'LIMIT', 0, 64)) do remove(k) end
end
-- ttl: ms from now; 0: never expires; -1: keep the key's current expiry.
local function expiry(ttl)
  ttl = tonumber(ttl)
  if ttl > 0 then return now + ttl end
  return ttl
end
`;

/**
 * ARGV: withValues (0/1), then keys. Returns value, version pairs (nil, nil for
 * absent keys; value 1 instead of the bytes when withValues is 0).
 */
const GET = `
local out = {}
for from = 2, #ARGV, 1000 do
  local ks = {}
  for i = from, math.min(#ARGV, from + 999) do ks[#ks + 1] = ARGV[i] end
  local vers = redis.call('HMGET', ver, unpack(ks))
  local exps = redis.call('ZMSCORE', exp, unpack(ks))
  local vals = ARGV[1] == '1' and redis.call('HMGET', data, unpack(ks)) or {}
  for i = 1, #ks do
    local v = tonumber(vers[i]) or 0
    if exps[i] and tonumber(exps[i]) <= now then v = 0 end
    local j = 2 * (from - 2 + i)
    if v == 0 then out[j - 1] = false; out[j] = false
    elseif ARGV[1] == '1' then out[j - 1] = vals[i]; out[j] = v
    else out[j - 1] = 1; out[j] = v end
  end
end
return out
`;

/** ARGV: key, value, skipIfExists (0/1), ttlMs (0 = none). Returns 1 if stored. */
const PUT = `
sweep()
local k = ARGV[1]
local v = version(k)
if v > 0 and ARGV[3] == '1' then return 0 end
store(k, ARGV[2], v + 1, expiry(ARGV[4]))
return 1
`;

/** ARGV: key1, value1, key2, value2, ... */
/**
 * ARGV: key, value pairs. The same as one put per pair, in order (a key given
 * twice ends with its last value, its version grown twice), but with a few
 * variadic calls per slice of keys instead of five calls per key.
 */
const UPDATE = `
sweep()
local last, times, order = {}, {}, {}
for i = 1, #ARGV, 2 do
  local k = ARGV[i]
  if not times[k] then
    times[k] = 0
    order[#order + 1] = k
  end
  times[k] = times[k] + 1
  last[k] = ARGV[i + 1]
end
-- Slices keep each call's arguments well under Lua's unpack limit.
for from = 1, #order, 1000 do
  local ks = {}
  for i = from, math.min(#order, from + 999) do ks[#ks + 1] = order[i] end
  local vers = redis.call('HMGET', ver, unpack(ks))
  local exps = redis.call('ZMSCORE', exp, unpack(ks))
  local d, v, z = {}, {}, {}
  for i, k in ipairs(ks) do
    local cur = tonumber(vers[i]) or 0
    if exps[i] and tonumber(exps[i]) <= now then cur = 0 end
    d[#d + 1] = k
    d[#d + 1] = last[k]
    v[#v + 1] = k
    v[#v + 1] = cur + times[k]
    z[#z + 1] = 0
    z[#z + 1] = k
  end
  redis.call('HSET', data, unpack(d))
  redis.call('HSET', ver, unpack(v))
  redis.call('ZADD', idx, unpack(z))
  redis.call('ZREM', exp, unpack(ks))
end
return 1
`;

/** ARGV: key, returnValue (0/1). Returns the old value (or 1) if the key was live, else nil (or 0). */
const POP = `
sweep()
local k = ARGV[1]
local live = version(k) > 0
local value = false
if live and ARGV[2] == '1' then value = redis.call('HGET', data, k) end
remove(k)
if ARGV[2] == '1' then return value end
if live then return 1 end
return 0
`;

const CLEAR = `
redis.call('UNLINK', data, ver, exp, idx)
return 1
`;

const DROP = `
redis.call('UNLINK', meta, data, ver, exp, idx)
return 1
`;

const LEN = `
return redis.call('HLEN', data) - redis.call('ZCOUNT', exp, '-inf', now)
`;

/**
 * ARGV: start (a ZRANGE BYLEX bound: '-' or '(' .. lastKey), limit.
 * Returns lastVisitedKey (nil when the range is exhausted), then key, value,
 * version triples of the live entries.
 */
const SCAN = `
local limit = tonumber(ARGV[2])
local keys = redis.call('ZRANGE', idx, ARGV[1], '+', 'BYLEX', 'LIMIT', 0, limit)
local out = { false }
if #keys == limit then out[1] = keys[#keys] end
for _, k in ipairs(keys) do
  local v = version(k)
  if v > 0 then
    out[#out + 1] = k
    out[#out + 1] = redis.call('HGET', data, k)
    out[#out + 1] = v
  end
end
return out
`;

/** ARGV: key, by. Returns the new value as a decimal string. Keeps the key's TTL. */
const INCR = `
sweep()
local k = ARGV[1]
local v = version(k)
local n = 0
if v > 0 then
  local s = redis.call('HGET', data, k)
  if not (string.match(s, '^%-?0$') or string.match(s, '^%-?[1-9]%d*$')) or #s > 17 then
    return redis.error_reply('STOWAGE_NOTINT')
  end
  n = tonumber(s)
end
local sum = n + tonumber(ARGV[2])
if sum > 9007199254740991 or sum < -9007199254740991 then return redis.error_reply('STOWAGE_OVERFLOW') end
local text = string.format('%d', sum)
store(k, text, v + 1, -1)
return text
`;

/** ARGV: key, expectedVersion, value, ttlMs (-1: keep the TTL). Returns { ok (0/1), version }. */
const CAS = `
sweep()
local k = ARGV[1]
local v = version(k)
if v ~= tonumber(ARGV[2]) then return { 0, v } end
store(k, ARGV[3], v + 1, expiry(ARGV[4]))
return { 1, v + 1 }
`;

/** KEYS: meta. ARGV: createdAtMs, idleTimeoutMs. Returns 1 if created (an existing dict is left as it is). */
const CREATE = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'createdAtMs', ARGV[1], 'idleTimeoutMs', ARGV[2], 'lastUsedMs', ARGV[1])
return 1
`;

/**
 * The idle-expiry fields of a meta hash; lastUsedMs defaults to createdAtMs and
 * idleTimeoutMs to 0 for dicts created before idle expiry existed.
 */
const IDLE = `
local function lastUsed()
  local v = redis.call('HMGET', meta, 'lastUsedMs', 'createdAtMs')
  return tonumber(v[1] or v[2])
end
local function idleTimeout()
  return tonumber(redis.call('HGET', meta, 'idleTimeoutMs') or '0')
end
`;

/** ARGV: atMs ('' = now). Moves lastUsedMs forward to atMs, never back. */
const TOUCH = `
local at = tonumber(ARGV[1]) or now
if at > lastUsed() then redis.call('HSET', meta, 'lastUsedMs', string.format('%d', at)) end
return 1
`;

/**
 * ARGV: nowMs ('' = Redis time). Drops the dict if it is idle; returns 1 if it
 * did, 0 if the dict is fresh, never expires or does not exist. Not built on
 * PRELUDE: an unknown dict is 0 here, not an error.
 */
const DROP_IF_IDLE = `
local meta, data, ver, exp, idx = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
if redis.call('EXISTS', meta) == 0 then return 0 end
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
${IDLE}
local idle = idleTimeout()
if idle == 0 or lastUsed() + idle > now then return 0 end
redis.call('UNLINK', meta, data, ver, exp, idx)
return 1
`;

export const SCRIPTS = {
  get: PRELUDE + GET,
  put: PRELUDE + PUT,
  update: PRELUDE + UPDATE,
  pop: PRELUDE + POP,
  clear: PRELUDE + CLEAR,
  drop: PRELUDE + DROP,
  len: PRELUDE + LEN,
  scan: PRELUDE + SCAN,
  incr: PRELUDE + INCR,
  cas: PRELUDE + CAS,
  touch: PRELUDE + IDLE + TOUCH,
  dropIfIdle: DROP_IF_IDLE,
  create: CREATE,
} as const;
export type ScriptName = keyof typeof SCRIPTS;
