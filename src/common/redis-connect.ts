/**
 * The one place a Redis URL becomes an ioredis client, for both state
 * backends (dict and queue).
 *
 * URL, as JuiceFS writes it: `redis[s]://[user:pass@]host:port[/db]` is one
 * Redis (ioredis `Redis`); several hosts, `redis://[user:pass@]h1:p1,h2:p2,h3:p3`,
 * are the seed nodes of a Redis Cluster (ioredis `Cluster`, which finds the
 * rest of the nodes and the slot map itself). `cluster: true` (serve
 * --redis-cluster) makes a single host a Cluster seed. A Cluster has only
 * database 0, so a `/db` other than 0 is refused.
 *
 * Command clients fail fast: no offline queue, one retry per command, a
 * command timeout; redisReady bounds the wait for a (re)connection, and
 * ioredis keeps reconnecting (in Cluster: refreshing the slot map and
 * following a promoted replica) in the background. Subscriber clients keep
 * their offline queue and reconnect forever, so a subscription survives a
 * restart or a failover (ioredis Cluster moves its subscriber connection to
 * another node and subscribes again).
 */
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import { InvalidArgumentError } from './errors.js';
import { redisRetryStrategy } from './redis-ready.js';
import { redactUrl } from './urls.js';

export type RedisClient = Redis | Cluster;

export interface RedisConnectOptions {
  /** Treat a single host as a Cluster seed (--redis-cluster). Several hosts are a Cluster anyway. */
  cluster?: boolean;
  /** How long one connection attempt may take. Default 1000 ms. */
  connectTimeoutMs?: number;
  /** How long one command may take. Default 10000 ms. */
  commandTimeoutMs?: number;
  /** Do not connect until connect() (or the first command). */
  lazyConnect?: boolean;
}

export interface RedisEndpoint {
  /** Whether this is a Cluster (several hosts, or `cluster` forced). */
  cluster: boolean;
  tls: boolean;
  hosts: { host: string; port: number }[];
  username?: string;
  password?: string;
  db: number;
}

const URL_PATTERN = /^(rediss?):\/\/(?:([^@/]*)@)?([^/?#]+)(?:\/(\d*))?$/;

/** Parses a redis:// URL with one or several hosts; InvalidArgumentError (URL redacted) if malformed. */
export function parseRedisUrl(url: string, forceCluster = false): RedisEndpoint {
  const bad = (why: string) => new InvalidArgumentError(`redis URL ${redactUrl(url)}: ${why} (expected redis://[user:pass@]host:port[,host:port...][/db])`);
  const m = URL_PATTERN.exec(url.trim());
  if (!m) throw bad('not a redis:// or rediss:// URL');
  const [, scheme, auth, hostList, db] = m;
  const hosts = hostList!.split(',').map((h) => {
    const hp = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(h.trim());
    if (!hp) throw bad(`bad host ${JSON.stringify(h)}`);
    const port = Number(hp[2] ?? 6379);
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw bad(`bad port in ${JSON.stringify(h)}`);
    return { host: hp[1]!.replace(/^\[(.*)\]$/, '$1'), port };
  });
  let username: string | undefined;
  let password: string | undefined;
  if (auth) {
    const colon = auth.indexOf(':');
    username = decodeURIComponent(colon < 0 ? auth : auth.slice(0, colon)) || undefined;
    password = colon < 0 ? undefined : decodeURIComponent(auth.slice(colon + 1));
  }
  const cluster = forceCluster || hosts.length > 1;
  const dbNumber = db ? Number(db) : 0;
  if (cluster && dbNumber !== 0) throw bad('a Redis Cluster has only database 0');
  return { cluster, tls: scheme === 'rediss', hosts, username, password, db: dbNumber };
}

/** A command client: a single-node Redis, or a Cluster for several hosts (or `cluster`). */
export function openRedis(url: string, opts: RedisConnectOptions = {}): RedisClient {
  return open(url, opts, false);
}

/** A client for SUBSCRIBE: queues commands while offline and reconnects (and resubscribes) forever. */
export function openRedisSubscriber(url: string, opts: RedisConnectOptions = {}): RedisClient {
  return open(url, opts, true);
}

function open(url: string, opts: RedisConnectOptions, subscriber: boolean): RedisClient {
  const endpoint = parseRedisUrl(url, opts.cluster);
  const node: RedisOptions = {
    connectTimeout: opts.connectTimeoutMs ?? 1000,
    ...(subscriber ? {} : { commandTimeout: opts.commandTimeoutMs ?? 10_000, maxRetriesPerRequest: 1 }),
    ...(endpoint.username !== undefined ? { username: endpoint.username } : {}),
    ...(endpoint.password !== undefined ? { password: endpoint.password } : {}),
    ...(endpoint.tls ? { tls: {} } : {}),
  };
  let client: RedisClient;
  if (!endpoint.cluster) {
    // One host: ioredis parses the URL itself (db, auth, rediss), as before Cluster support.
    client = new Redis(url, {
      ...node,
      retryStrategy: redisRetryStrategy,
      enableOfflineQueue: subscriber,
      lazyConnect: opts.lazyConnect ?? false,
    });
  } else {
    const cluster: ClusterOptions = {
      redisOptions: node,
      enableOfflineQueue: subscriber,
      lazyConnect: opts.lazyConnect ?? false,
      // Find the slot map again quickly when every node was away; never give up.
      clusterRetryStrategy: redisRetryStrategy,
      slotsRefreshTimeout: opts.connectTimeoutMs ?? 1000,
      // A master that goes away makes ioredis refresh the slot map and retry, at
      // most maxRedirections times, retryDelayOnFailover apart: about 3 s, a
      // failover with cluster-node-timeout 1000 fits; longer ones fail UNAVAILABLE.
      retryDelayOnFailover: 200,
      retryDelayOnClusterDown: 200,
      retryDelayOnTryAgain: 200,
      maxRedirections: 16,
    };
    client = new Cluster(endpoint.hosts, cluster);
  }
  // Connection errors surface through the calls that need the connection.
  client.on('error', () => {});
  return client;
}
