/**
 * The blocked gets of one server, pooled per queue, partition and delivery
 * mode, so that a put wakes one backend call instead of one per waiter.
 *
 * A pool's loop registers for the partition's wake-up BEFORE each get (so a
 * put between the get and the wait is not missed), asks the backend in one
 * get for as many items as its waiters want, and deals them out first come,
 * first served, as Redis serves BLPOP clients. It waits again when the
 * partition ran dry, re-checking every REDELIVERY_POLL_MS because expired
 * leases are not announced, and ends when no waiter is left.
 *
 * No item is taken for a waiter that has left: a waiter whose timeout passes
 * while no get is in flight leaves at once; while one is in flight, it is
 * answered after it with what that get brought it (possibly a little past its
 * timeout). A caller that disconnects during a get is passed over when the
 * items are dealt; only items left over after every remaining waiter is
 * served would go to it, and they are lost with it, as items popped for a
 * vanished BLPOP client are.
 */
import type { Logger } from '../common/logger.js';
import { MAX_ITEMS_PER_GET, REDELIVERY_POLL_MS, type DeliveredItem, type QueueBackend } from './types.js';
import { pause } from './wake.js';

export interface WaitRequest {
  queue: string;
  partition: string;
  max: number;
  ack?: { visibilityMs: number };
  /** Give up (with no items) after this long; 0: wait as long as it takes. */
  timeoutMs: number;
}

interface Waiter {
  max: number;
  signal: AbortSignal;
  timer: NodeJS.Timeout | undefined;
  /** Timed out or aborted during a get: answered when it returns. */
  leaving: boolean;
  resolve(items: DeliveredItem[]): void;
  reject(err: unknown): void;
  onAbort(): void;
}

interface Pool {
  request: Omit<WaitRequest, 'max' | 'timeoutMs'>;
  waiters: Waiter[];
  inGet: boolean;
}

const poolKey = (queue: string, partition: string, visibilityMs: number) => `${queue}\n${partition}\n${visibilityMs}`;

export class WaitingGets {
  private readonly pools = new Map<string, Pool>();

  constructor(
    private readonly backend: QueueBackend,
    private readonly log: Logger,
  ) {}

  /** Whether gets for these items are waiting already (a newcomer queues behind them). */
  has(queue: string, partition: string, visibilityMs: number): boolean {
    return this.pools.has(poolKey(queue, partition, visibilityMs));
  }

  /** Items for one blocked get: at least one, or none after the timeout or an abort. */
  wait(req: WaitRequest, signal: AbortSignal): Promise<DeliveredItem[]> {
    if (signal.aborted) return Promise.resolve([]);
    const key = poolKey(req.queue, req.partition, req.ack?.visibilityMs ?? 0);
    let pool = this.pools.get(key);
    const start = !pool;
    if (!pool) {
      pool = { request: { queue: req.queue, partition: req.partition, ack: req.ack }, waiters: [], inGet: false };
      this.pools.set(key, pool);
    }
    const p = pool;
    return new Promise<DeliveredItem[]>((resolve, reject) => {
      const w: Waiter = {
        max: req.max,
        signal,
        timer: undefined,
        leaving: false,
        resolve,
        reject,
        onAbort: () => this.leave(p, w),
      };
      if (req.timeoutMs > 0) w.timer = setTimeout(() => this.leave(p, w), req.timeoutMs);
      signal.addEventListener('abort', w.onAbort);
      p.waiters.push(w);
      // The loop's first get waits for the turn to end, so that every waiter
      // of one incoming batch is served by it.
      if (start) setImmediate(() => void this.run(key, p));
    });
  }

  private leave(pool: Pool, w: Waiter): void {
    if (pool.inGet) w.leaving = true;
    else this.finish(pool, w, []);
  }

  private finish(pool: Pool, w: Waiter, items: DeliveredItem[], err?: unknown): void {
    const i = pool.waiters.indexOf(w);
    if (i < 0) return;
    pool.waiters.splice(i, 1);
    clearTimeout(w.timer);
    w.signal.removeEventListener('abort', w.onAbort);
    if (err) w.reject(err);
    else w.resolve(items);
  }

  private async run(key: string, pool: Pool): Promise<void> {
    const { queue, partition, ack } = pool.request;
    try {
      while (pool.waiters.length > 0) {
        const waking = new AbortController();
        const woken = this.backend.waitForItems(queue, partition, waking.signal);
        const present = pool.waiters.slice();
        const want = Math.min(MAX_ITEMS_PER_GET, present.reduce((n, w) => n + w.max, 0));
        let items: DeliveredItem[];
        pool.inGet = true;
        try {
          items = await this.backend.get(queue, { partition, max: want, ack });
        } catch (err) {
          pool.inGet = false;
          waking.abort();
          for (const w of present) this.finish(pool, w, [], err);
          continue;
        }
        pool.inGet = false;
        this.deal(pool, present, items);
        for (const w of pool.waiters.filter((x) => x.leaving)) this.finish(pool, w, []);
        if (pool.waiters.length > 0 && items.length < want) {
          // The partition ran dry: wait for a put, or re-check for expired leases.
          await Promise.race([woken, pause(REDELIVERY_POLL_MS, waking.signal)]);
        }
        waking.abort();
      }
    } finally {
      this.pools.delete(key);
      // A waiter that joined as the loop ended starts the next one.
      if (pool.waiters.length > 0) {
        this.pools.set(key, pool);
        void this.run(key, pool);
      }
    }
  }

  /** First come, first served; a caller that has gone is passed over while anyone else can take items. */
  private deal(pool: Pool, present: Waiter[], items: DeliveredItem[]): void {
    let next = 0;
    const order = [...present.filter((w) => !w.signal.aborted), ...present.filter((w) => w.signal.aborted)];
    for (const w of order) {
      if (next >= items.length) break;
      const take = items.slice(next, next + w.max);
      next += take.length;
      if (w.signal.aborted) this.log.warn({ items: take.length }, 'queue items went to a caller that disconnected during its get');
      this.finish(pool, w, take);
    }
  }
}
