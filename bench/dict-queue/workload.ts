/** The data every contender moves: the same keys, values and batch sizes. */

/** Distinct dict keys; key(i) cycles through them. */
export const KEYS = 10_000;
/** Entries per dict batch (update / getMany, and the ioredis pipeline). */
export const BATCH = 1000;
/** Messages per queue batch (putMany / getMany, and the ioredis pipeline). */
export const QUEUE_BATCH = 100;
/** Concurrent callers in the "64 callers" cases. */
export const CALLERS = 64;
/** Every value and queue item: a 100-character string (100 bytes; msgpack adds 2 for stowage). */
export const VALUE = 'v'.repeat(36) + '0123456789abcdef'.repeat(4);
export const VALUE_BYTES = Buffer.byteLength(VALUE);

export const key = (i: number): string => `k${i % KEYS}`;
/** The same key for the ioredis peers, in their own namespace. */
export const redisKey = (i: number): string => `bench:${key(i)}`;
export const REDIS_QUEUE = 'bench:queue';
export const REDIS_WAKE = 'bench:wake';
