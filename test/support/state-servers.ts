/**
 * Stowage servers for the dict and queue service tests: one keeping dicts and
 * queues in LMDB, one keeping them in a real redis-server started here (both
 * in this process), and one with both Redis and the server in containers
 * (testcontainers, from the images of scripts/image.sh). All are stopped in
 * stop() (by PID for Redis; containers are stopped and removed).
 */
import type { IdleOptions } from '../../src/common/idle.js';
import type { Connection } from '../../src/client/index.js';
import type { RunningServer } from '../../src/server/server.js';
import { startRedisContainer, startStowageContainer, type RedisContainer, type StowageContainer } from './containers.js';
import { removeDir, startStowage, type Stowage } from './processes.js';
import { startRedis, type RedisServer } from './redis.js';

/** What the service suites use of a running server, wherever it runs. */
export interface StateServer {
  server: Pick<RunningServer, 'address' | 'token'>;
  connection: Connection;
}

export interface StateSetup {
  name: 'lmdb' | 'redis' | 'redis and server in containers';
  /** `idle` shortens idle sweeps; a server in a container keeps its defaults (1 s flush, 5 s sweep). */
  start(opts?: { idle?: IdleOptions }): Promise<StateServer>;
  /** The Redis under the server (redis setup only, after start). */
  redis(): RedisServer | undefined;
  stop(): Promise<void>;
}

function setup(name: 'lmdb' | 'redis'): StateSetup {
  let redis: RedisServer | undefined;
  let stowage: Stowage | undefined;
  return {
    name,
    async start(opts = {}) {
      if (name === 'redis') redis = await startRedis();
      stowage = await startStowage({ ...opts, redisUrl: redis?.url });
      return stowage;
    },
    redis: () => redis,
    async stop() {
      try {
        await stowage?.stop();
      } finally {
        if (stowage) removeDir(stowage.dataDir);
        await redis?.stop();
        if (redis) removeDir(redis.dir);
      }
    },
  };
}

/** Redis (local/redis) and `stowage serve --redis-url` (stowage:latest), each in a container on the host's network. */
function containerSetup(): StateSetup {
  let redis: RedisContainer | undefined;
  let stowage: StowageContainer | undefined;
  return {
    name: 'redis and server in containers',
    async start() {
      redis = await startRedisContainer();
      stowage = await startStowageContainer({ redisUrl: redis.url });
      return { server: { address: stowage.address, token: stowage.token }, connection: stowage.connection };
    },
    redis: () => undefined,
    async stop() {
      try {
        await stowage?.stop();
      } finally {
        await redis?.stop();
      }
    },
  };
}

/** Fresh setups for describe.each (each describe block gets its own servers). */
export function stateSetups(): StateSetup[] {
  return [setup('lmdb'), setup('redis')];
}

/** The container setup, for describe.skipIf(skipWithoutContainers(...)).each. */
export function containerStateSetups(): StateSetup[] {
  return [containerSetup()];
}

/** Polls `probe` until it returns true; throws after `ms` (generous: the machine is noisy). */
export async function eventually(what: string, probe: () => Promise<boolean> | boolean, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Settles `p` within `ms` or fails with `what`. The timer is cleared either
 * way; `p` always has a handler attached, so it never rejects unhandled.
 */
export async function within<T>(what: string, p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
