/**
 * Stowage servers for the dict and queue service tests: one keeping dicts and
 * queues in LMDB, one keeping them in a real redis-server started here. Both
 * are stopped (by PID for Redis) in stop().
 */
import type { IdleOptions } from '../../src/common/idle.js';
import { removeDir, startStowage, type Stowage } from './processes.js';
import { startRedis, type RedisServer } from './redis.js';

export interface StateSetup {
  name: 'lmdb' | 'redis';
  start(opts?: { idle?: IdleOptions }): Promise<Stowage>;
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

/** Fresh setups for describe.each (each describe block gets its own servers). */
export function stateSetups(): StateSetup[] {
  return [setup('lmdb'), setup('redis')];
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
