/**
 * The peers on the same redis-server: ioredis used plainly (every command
 * awaited), and ioredis pipelined (an explicit `pipeline()` of the same batch
 * size as stowage's, or `enableAutoPipelining` under concurrent callers).
 */
import { Redis } from 'ioredis';
import { BLOCK_SETTLE_MS, latency, sleep, throughput, type Measured, type Timing } from './measure.js';
import { BATCH, KEYS, QUEUE_BATCH, REDIS_QUEUE, REDIS_WAKE, VALUE, redisKey } from './workload.js';

export class IoredisPeer {
  /** Plain: no auto-pipelining; each caller awaits each command. */
  private readonly plain: Redis;
  /** Commands issued in one tick go out in one write. */
  private readonly auto: Redis;
  /** A second connection: the producer of the wake-up case (BLPOP blocks the consumer's). */
  private readonly producer: Redis;

  constructor(url: string) {
    this.plain = new Redis(url);
    this.auto = new Redis(url, { enableAutoPipelining: true });
    this.producer = new Redis(url);
    // Failures reach the commands that meet them; without listeners ioredis would also print them.
    for (const r of [this.plain, this.auto, this.producer]) r.on('error', () => {});
  }

  async ready(): Promise<void> {
    await Promise.all([this.plain.ping(), this.auto.ping(), this.producer.ping()]);
    await this.plain.del(REDIS_QUEUE, REDIS_WAKE);
  }

  async close(): Promise<void> {
    await Promise.all([this.plain, this.auto, this.producer].map((r) => r.quit().catch(() => r.disconnect())));
  }

  async fill(): Promise<void> {
    for (let i = 0; i < KEYS; i += BATCH) await this.plain.mset(...batchPairs(i));
  }

  /** SET by `callers` loops; `pipelined` uses the auto-pipelining client. */
  put(t: Timing, callers: number, pipelined: boolean): Promise<Measured> {
    const r = pipelined ? this.auto : this.plain;
    return throughput(t, callers, async (_, i) => {
      await r.set(redisKey(i), VALUE);
      return 1;
    });
  }

  async get(t: Timing, callers: number, pipelined: boolean): Promise<Measured> {
    const r = pipelined ? this.auto : this.plain;
    let missing = 0;
    const m = await throughput(t, callers, async (_, i) => {
      if ((await r.get(redisKey(i))) === null) missing++;
      return 1;
    });
    return { ...m, detail: { missing } };
  }

  /** BATCH entries a round: a pipeline of BATCH SETs, or (plain) one MSET. */
  update(t: Timing, pipelined: boolean): Promise<Measured> {
    return throughput(t, 1, async (_, i) => {
      const start = (i * BATCH) % KEYS;
      if (pipelined) {
        const p = this.plain.pipeline();
        for (let j = 0; j < BATCH; j++) p.set(redisKey(start + j), VALUE);
        check(await p.exec());
      } else {
        await this.plain.mset(...batchPairs(start));
      }
      return BATCH;
    });
  }

  /** BATCH keys a round: a pipeline of BATCH GETs, or (plain) one MGET. */
  async getMany(t: Timing, pipelined: boolean): Promise<Measured> {
    let missing = 0;
    const m = await throughput(t, 1, async (_, i) => {
      const start = (i * BATCH) % KEYS;
      const keys = Array.from({ length: BATCH }, (_, j) => redisKey(start + j));
      let values: unknown[];
      if (pipelined) {
        const p = this.plain.pipeline();
        for (const k of keys) p.get(k);
        values = check(await p.exec());
      } else {
        values = await this.plain.mget(...keys);
      }
      missing += values.filter((v) => v === null).length;
      return BATCH;
    });
    return { ...m, detail: { missing } };
  }

  getLatency(n: number): Promise<Measured> {
    return latency(n, async (i) => {
      const t0 = performance.now();
      await this.plain.get(redisKey(i));
      return performance.now() - t0;
    });
  }

  /**
   * QUEUE_BATCH messages a round, put then got: a pipeline of RPUSHes then one
   * of LPOPs, or (plain) one variadic RPUSH and one LPOP with a count.
   */
  queueBatch(t: Timing, pipelined: boolean): Promise<Measured> {
    const items = Array.from({ length: QUEUE_BATCH }, () => VALUE);
    return throughput(t, 1, async () => {
      let got = 0;
      if (pipelined) {
        const put = this.plain.pipeline();
        for (const v of items) put.rpush(REDIS_QUEUE, v);
        check(await put.exec());
        const get = this.plain.pipeline();
        for (let j = 0; j < QUEUE_BATCH; j++) get.lpop(REDIS_QUEUE);
        got = check(await get.exec()).filter((v) => v !== null).length;
      } else {
        await this.plain.rpush(REDIS_QUEUE, ...items);
        got = (await this.plain.lpop(REDIS_QUEUE, QUEUE_BATCH))?.length ?? 0;
      }
      return got;
    });
  }

  /** `callers` loops of RPUSH then LPOP, each awaited. */
  queueSingles(t: Timing, callers: number, pipelined: boolean): Promise<Measured> {
    const r = pipelined ? this.auto : this.plain;
    return throughput(t, callers, async () => {
      await r.rpush(REDIS_QUEUE, VALUE);
      return (await r.lpop(REDIS_QUEUE)) === null ? 0 : 1;
    });
  }

  /** BLPOP on an empty list, woken by an RPUSH from the other connection. */
  wake(n: number): Promise<Measured> {
    return latency(n, async () => {
      const got = this.plain.blpop(REDIS_WAKE, 0);
      await sleep(BLOCK_SETTLE_MS);
      const t0 = performance.now();
      const put = this.producer.rpush(REDIS_WAKE, VALUE);
      await got;
      const ms = performance.now() - t0;
      await put;
      return ms;
    });
  }
}

function batchPairs(start: number): string[] {
  const pairs: string[] = [];
  for (let j = 0; j < BATCH; j++) pairs.push(redisKey(start + j), VALUE);
  return pairs;
}

/** The results of a pipeline, or its first error. */
function check(results: [Error | null, unknown][] | null): unknown[] {
  if (!results) throw new Error('pipeline was aborted');
  for (const [err] of results) if (err) throw err;
  return results.map(([, v]) => v);
}
