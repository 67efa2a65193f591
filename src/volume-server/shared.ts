/**
 * What several volume servers over one bucket share, in Redis: which volume
 * a name means, each volume's record and head (its newest version record),
 * the commit lock of each volume, and the heartbeats of ephemeral volumes. With it,
 * each server's LMDB index is only a cache (catalog.ts refreshes it from here
 * before it answers), and any number of servers can serve one bucket.
 *
 * A commit moves a head by compare-and-swap (`advance`): it names the version
 * it built on and holds the volume's commit lock, and it fails if either
 * changed. The winner's version record goes into Redis in that same step,
 * then into the store; a server that finds a head whose record the store
 * lacks (its committer died in between) writes it (catalog.ts).
 *
 * Every key of one store shares the hash tag {stowage:volumes:BUCKET/PREFIX}: one Cluster slot, so each
 * script is atomic and names only declared keys. That puts the volume
 * metadata of a cluster on one shard; it is small (a record and a head per
 * volume) and is written once per commit.
 */
import { UnavailableError } from '../common/errors.js';
import { openRedis, type RedisClient } from '../common/redis-connect.js';
import { redisCall } from '../common/redis-ready.js';
import { redactUrl } from '../common/urls.js';
import type { VersionRecord } from './versions.js';

/** The keys of one store's volumes: under one hash tag naming the store (bucket and prefix), so that stores sharing a Redis never meet. */
function keysOf(store: string) {
  const tag = `{stowage:volumes:${store}}`;
  return {
    names: `${tag}:names`,
    records: `${tag}:records`,
    heads: `${tag}:heads`,
    locks: `${tag}:locks`,
    heartbeats: `${tag}:heartbeats`,
  };
}
const CONNECT_WAIT_MS = 1000;

/** A volume as the shared heads hold it: its stored record (JSON) and its head's record (undefined: no version newer than the caller knows, or none). */
export interface SharedVolume {
  record: string;
  head?: VersionRecord;
}

/**
 * What the catalogue asks of shared heads: in Redis (here), or in the store
 * itself by conditional writes (store-heads.ts). `known` tells a backend
 * which version of a volume the caller holds already (the store's backend
 * looks only past it).
 */
export interface SharedHeads {
  describe(): string;
  sync(name: string, known: (id: string) => number): Promise<SharedVolume | undefined>;
  all(known: (id: string) => number): Promise<SharedVolume[]>;
  create(name: string, id: string, record: string): Promise<boolean>;
  seed(name: string, id: string, record: string, head: VersionRecord | undefined): Promise<boolean>;
  rename(name: string, newName: string, id: string, record: string): Promise<'ok' | 'gone' | 'taken'>;
  update(name: string, id: string, record: string): Promise<boolean>;
  remove(name: string, id: string): Promise<boolean>;
  lock(id: string, token: string, ttlMs: number): Promise<boolean>;
  unlock(id: string, token: string): Promise<void>;
  advance(name: string, id: string, expected: number, head: VersionRecord, token: string): Promise<void>;
  heartbeat(id: string, atMs: number): Promise<void>;
  heartbeats(): Promise<Map<string, number>>;
  close(): Promise<void>;
}

const SCRIPTS = {
  /** KEYS names records heads; ARGV name -> {record, head} or {} */
  sync: {
    keys: 3,
    lua: `local id = redis.call('HGET', KEYS[1], ARGV[1])
if not id then return {} end
local rec = redis.call('HGET', KEYS[2], id)
if not rec then return {} end
return {rec, redis.call('HGET', KEYS[3], id) or ''}`,
  },
  /** KEYS names records heads -> flat list of record, head */
  all: {
    keys: 3,
    lua: `local out = {}
local names = redis.call('HGETALL', KEYS[1])
for i = 1, #names, 2 do
  local id = names[i + 1]
  local rec = redis.call('HGET', KEYS[2], id)
  if rec then
    out[#out + 1] = rec
    out[#out + 1] = redis.call('HGET', KEYS[3], id) or ''
  end
end
return out`,
  },
  /** KEYS names records; ARGV name id record -> 1 created, 0 taken */
  create: {
    keys: 2,
    lua: `if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 1`,
  },
  /** KEYS names records heads; ARGV name id record head -> 1 seeded, 0 (the name or the volume is known already) */
  seed: {
    keys: 3,
    lua: `if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 or redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[3], ARGV[2], ARGV[4]) end
return 1`,
  },
  /** KEYS names records; ARGV old new id record -> 'ok' | 'gone' | 'taken' */
  rename: {
    keys: 2,
    lua: `if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[3] then return 'gone' end
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1 then return 'taken' end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
return 'ok'`,
  },
  /** KEYS names records; ARGV name id record -> 1 | 0 (the name means another volume now) */
  update: {
    keys: 2,
    lua: `if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 1`,
  },
  /** KEYS names records heads heartbeats; ARGV name id -> 1 | 0 */
  remove: {
    keys: 4,
    lua: `if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
for i = 2, 4 do redis.call('HDEL', KEYS[i], ARGV[2]) end
return 1`,
  },
  /** KEYS locks; ARGV id token ttlMs -> 1 held (taken or renewed), 0 held by another */
  lock: {
    keys: 1,
    lua: `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local sep = string.find(cur, '|', 1, true)
  local owner = string.sub(cur, 1, sep - 1)
  local expires = tonumber(string.sub(cur, sep + 1))
  if owner ~= ARGV[2] and expires > now then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. (now + tonumber(ARGV[3])))
return 1`,
  },
  /** KEYS locks; ARGV id token */
  unlock: {
    keys: 1,
    lua: `local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and string.sub(cur, 1, #ARGV[2] + 1) == ARGV[2] .. '|' then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1`,
  },
  /**
   * KEYS heads locks names; ARGV id expected head token name
   * -> 'ok' | 'moved:<v>' | 'lock' | 'gone'
   */
  advance: {
    keys: 3,
    lua: `if redis.call('HGET', KEYS[3], ARGV[5]) ~= ARGV[1] then return 'gone' end
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local v = 0
if cur then v = cjson.decode(cur).version end
if v ~= tonumber(ARGV[2]) then return 'moved:' .. v end
local lock = redis.call('HGET', KEYS[2], ARGV[1])
if not lock or string.sub(lock, 1, #ARGV[4] + 1) ~= ARGV[4] .. '|' then return 'lock' end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 'ok'`,
  },
} as const;
type ScriptName = keyof typeof SCRIPTS;

export class RedisSharedVolumes implements SharedHeads {
  /** The Redis URL without its password, for messages. */
  readonly where: string;

  private readonly keys: ReturnType<typeof keysOf>;

  private constructor(
    private readonly redis: RedisClient,
    url: string,
    store: string,
  ) {
    this.where = redactUrl(url);
    this.keys = keysOf(store);
    for (const [name, s] of Object.entries(SCRIPTS)) this.redis.defineCommand(`stowage_volumes_${name}`, { numberOfKeys: s.keys, lua: s.lua });
  }

  /** Connects (UnavailableError naming Redis when it cannot be reached); `store` names the bucket and prefix whose volumes these are. */
  static async connect(url: string, store: string, cluster = false): Promise<RedisSharedVolumes> {
    // The command timeout: a Redis that hangs (stopped, partitioned) fails calls instead of holding them.
    const redis = openRedis(url, { cluster, lazyConnect: true, connectTimeoutMs: 3000, commandTimeoutMs: 3000 });
    const shared = new RedisSharedVolumes(redis, url, store);
    try {
      await shared.call(() => redis.connect());
    } catch (err) {
      redis.disconnect();
      throw err;
    }
    return shared;
  }

  describe(): string {
    return `redis at ${this.where}`;
  }

  async sync(name: string, _known?: (id: string) => number): Promise<SharedVolume | undefined> {
    const r = (await this.script('sync', [this.keys.names, this.keys.records, this.keys.heads], [name])) as string[];
    return r.length === 0 ? undefined : shared(r[0]!, r[1]!);
  }

  async all(_known?: (id: string) => number): Promise<SharedVolume[]> {
    const r = (await this.script('all', [this.keys.names, this.keys.records, this.keys.heads], [])) as string[];
    const out: SharedVolume[] = [];
    for (let i = 0; i < r.length; i += 2) out.push(shared(r[i]!, r[i + 1]!));
    return out;
  }

  async create(name: string, id: string, record: string): Promise<boolean> {
    return (await this.script('create', [this.keys.names, this.keys.records], [name, id, record])) === 1;
  }

  /** Makes a volume that only the store knew (a server that ran alone before) known, unless its name or id is taken. */
  async seed(name: string, id: string, record: string, head: VersionRecord | undefined): Promise<boolean> {
    return (await this.script('seed', [this.keys.names, this.keys.records, this.keys.heads], [name, id, record, head ? JSON.stringify(head) : ''])) === 1;
  }

  async rename(name: string, newName: string, id: string, record: string): Promise<'ok' | 'gone' | 'taken'> {
    return (await this.script('rename', [this.keys.names, this.keys.records], [name, newName, id, record])) as 'ok' | 'gone' | 'taken';
  }

  /** Replaces a volume's record while its name still means it; false otherwise. */
  async update(name: string, id: string, record: string): Promise<boolean> {
    return (await this.script('update', [this.keys.names, this.keys.records], [name, id, record])) === 1;
  }

  async remove(name: string, id: string): Promise<boolean> {
    return (await this.script('remove', [this.keys.names, this.keys.records, this.keys.heads, this.keys.heartbeats], [name, id])) === 1;
  }

  /** Takes or renews a volume's commit lock for `ttlMs`; false while another holds it. */
  async lock(id: string, token: string, ttlMs: number): Promise<boolean> {
    return (await this.script('lock', [this.keys.locks], [id, token, ttlMs])) === 1;
  }

  async unlock(id: string, token: string): Promise<void> {
    await this.script('unlock', [this.keys.locks], [id, token]);
  }

  /**
   * Moves a volume's head from version `expected` to `head` while `token`
   * holds its commit lock and the name still means the volume; an
   * UnavailableError saying why it did not land otherwise.
   */
  async advance(name: string, id: string, expected: number, head: VersionRecord, token: string): Promise<void> {
    const r = String(await this.script('advance', [this.keys.heads, this.keys.locks, this.keys.names], [id, expected, JSON.stringify(head), token, name]));
    if (r === 'ok') return;
    const why =
      r === 'lock'
        ? 'this server lost the volume\'s commit lock (it held it too long)'
        : r === 'gone'
          ? 'the volume was deleted or renamed meanwhile'
          : `another commit moved the volume to version ${r.slice('moved:'.length)} meanwhile`;
    throw new UnavailableError(`commit to volume "${name}" did not land: ${why}; nothing of it is visible, retry it`);
  }

  async heartbeat(id: string, atMs: number): Promise<void> {
    await this.call(() => this.redis.hset(this.keys.heartbeats, id, String(atMs)));
  }

  async heartbeats(): Promise<Map<string, number>> {
    const all = await this.call(() => this.redis.hgetall(this.keys.heartbeats));
    return new Map(Object.entries(all).map(([id, ms]) => [id, Number(ms)]));
  }

  async close(): Promise<void> {
    this.redis.disconnect();
  }

  private script(name: ScriptName, keys: string[], args: (string | number)[]): Promise<unknown> {
    const cmd = (this.redis as unknown as Record<string, (...a: (string | number)[]) => Promise<unknown>>)[`stowage_volumes_${name}`]!;
    return this.call(() => cmd.call(this.redis, ...keys, ...args));
  }

  private call<T>(fn: () => Promise<T>): Promise<T> {
    return redisCall(this.redis, this.where, "the volumes' heads", CONNECT_WAIT_MS, fn);
  }
}

function shared(record: string, head: string): SharedVolume {
  return { record, head: head ? (JSON.parse(head) as VersionRecord) : undefined };
}
