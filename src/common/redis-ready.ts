/**
 * Waiting, bounded, for an ioredis connection to be ready: both Redis
 * backends call this before each command, so a call made just after Redis
 * comes back waits for the reconnect instead of failing, and a call made
 * while Redis is away fails after `timeoutMs` with an error naming the URL.
 */
import type { Cluster, Redis } from 'ioredis';
import { UnavailableError, messageOf } from './errors.js';

/**
 * Replies that mean "not now" rather than "no": loading, busy, a Cluster
 * failing over or resharding (CLUSTERDOWN, TRYAGAIN, MOVED/ASK ioredis did
 * not follow, READONLY from a demoted master). They become UnavailableError.
 */
export const TRANSIENT_REPLY = /^(LOADING|BUSY|MASTERDOWN|TRYAGAIN|CLUSTERDOWN|MOVED|ASK|READONLY|NOREPLICAS)\b/;

/** Pause between reconnect attempts: short, so a returning Redis is found quickly. */
export const redisRetryStrategy = (attempt: number): number => Math.min(50 * attempt, 250);

const waiting = new WeakMap<Redis | Cluster, Promise<void>>();

export function redisReady(redis: Redis | Cluster, where: string, timeoutMs: number): Promise<void> {
  if (redis.status === 'ready') return Promise.resolve();
  let wait = waiting.get(redis);
  if (!wait) {
    wait = new Promise<void>((resolve, reject) => {
      const onReady = () => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        redis.off('ready', onReady);
        reject(
          new UnavailableError(`redis at ${where} is unavailable: no connection within ${timeoutMs} ms (status ${redis.status})`),
        );
      }, timeoutMs);
      redis.once('ready', onReady);
    }).finally(() => waiting.delete(redis));
    waiting.set(redis, wait);
  }
  return wait;
}

/**
 * Runs one command on `redis` once it is ready (bounded by `timeoutMs`); any
 * failure becomes an UnavailableError naming the URL and what Redis holds
 * for us (`holds`, e.g. "the volumes' heads"). A client not yet connected
 * (lazyConnect, status 'wait') runs `fn` at once: that is its connect.
 */
export async function redisCall<T>(redis: Redis | Cluster, where: string, holds: string, timeoutMs: number, fn: () => Promise<T>): Promise<T> {
  try {
    if (redis.status !== 'wait') await redisReady(redis, where, timeoutMs);
    return await fn();
  } catch (err) {
    if (err instanceof UnavailableError) throw err;
    throw new UnavailableError(`redis at ${where}, which holds ${holds}, is unavailable: ${messageOf(err)}`);
  }
}
