/**
 * stowage as a contender: a server in this process (Redis or LMDB backend)
 * and the SDK talking to it over gRPC with explicit Connections. The
 * consumer and producer of the wake-up case use two Connections, as two
 * workers would.
 */
import { mkdirSync } from 'node:fs';
import { pino } from 'pino';
import { Connection, Dict, Queue } from '../../src/client/index.js';
import { startServer, type RunningServer } from '../../src/server/server.js';
import { BLOCK_SETTLE_MS, latency, sleep, throughput, type Measured, type Timing } from './measure.js';
import { BATCH, KEYS, QUEUE_BATCH, VALUE, key } from './workload.js';

export class StowageContender {
  private constructor(
    private readonly server: RunningServer,
    private readonly conn: Connection,
    private readonly producerConn: Connection,
    private readonly dict: Dict<string, string>,
    private readonly queue: Queue<string>,
    private readonly wakeQueue: Queue<string>,
    private readonly wakeProducer: Queue<string>,
  ) {}

  /** Starts a server on `dataDir` (dicts and queues in LMDB there, or in `redisUrl`). */
  static async start(dataDir: string, redisUrl?: string): Promise<StowageContender> {
    mkdirSync(dataDir, { recursive: true });
    const server = await startServer({
      dataDir,
      host: '127.0.0.1',
      port: 0,
      redisUrl,
      only: ['dict', 'queue'],
      log: pino({ name: 'stowage', level: 'warn' }),
    });
    const conns: Connection[] = [];
    try {
      const conn = new Connection({ server: server.address, token: server.token });
      conns.push(conn);
      const producerConn = new Connection({ server: server.address, token: server.token });
      conns.push(producerConn);
      const dict = await Dict.fromName<string, string>('bench-dict', { createIfMissing: true, connection: conn });
      await dict.clear();
      const queue = await Queue.fromName<string>('bench-queue', { createIfMissing: true, connection: conn });
      const wakeQueue = await Queue.fromName<string>('bench-wake', { createIfMissing: true, connection: conn });
      await Promise.all([queue.clear(), wakeQueue.clear()]);
      const wakeProducer = await Queue.fromName<string>('bench-wake', { connection: producerConn });
      return new StowageContender(server, conn, producerConn, dict, queue, wakeQueue, wakeProducer);
    } catch (err) {
      for (const c of conns) c.close();
      await server.stop();
      throw err;
    }
  }

  get address(): string {
    return this.server.address;
  }

  get state(): string {
    return this.server.stateDescription;
  }

  async stop(): Promise<void> {
    this.conn.close();
    this.producerConn.close();
    await this.server.stop();
  }

  /** Puts every key once, so that gets find values. */
  async fill(): Promise<void> {
    for (let i = 0; i < KEYS; i += BATCH) await this.dict.update(batchEntries(i));
  }

  put(t: Timing, callers: number): Promise<Measured> {
    return throughput(t, callers, async (_, i) => {
      await this.dict.put(key(i), VALUE);
      return 1;
    });
  }

  async get(t: Timing, callers: number): Promise<Measured> {
    let missing = 0;
    const m = await throughput(t, callers, async (_, i) => {
      if ((await this.dict.get(key(i))) === undefined) missing++;
      return 1;
    });
    return withDetail(m, { missing });
  }

  update(t: Timing): Promise<Measured> {
    return throughput(t, 1, async (_, i) => {
      await this.dict.update(batchEntries((i * BATCH) % KEYS));
      return BATCH;
    });
  }

  async getMany(t: Timing): Promise<Measured> {
    let missing = 0;
    const m = await throughput(t, 1, async (_, i) => {
      const start = (i * BATCH) % KEYS;
      const values = await this.dict.getMany(Array.from({ length: BATCH }, (_, j) => key(start + j)));
      missing += values.filter((v) => v === undefined).length;
      return BATCH;
    });
    return withDetail(m, { missing });
  }

  getLatency(n: number): Promise<Measured> {
    return latency(n, async (i) => {
      const t0 = performance.now();
      await this.dict.get(key(i));
      return performance.now() - t0;
    });
  }

  /** putMany of QUEUE_BATCH items, then getMany of as many; units are messages got. */
  queueBatch(t: Timing): Promise<Measured> {
    const items = Array.from({ length: QUEUE_BATCH }, () => VALUE);
    return throughput(t, 1, async () => {
      await this.queue.putMany(items);
      let got = 0;
      while (got < QUEUE_BATCH) got += (await this.queue.getMany(QUEUE_BATCH - got)).length;
      return got;
    });
  }

  /**
   * `callers` loops of one put and one get: blocking (the default), or with
   * `block: false` (which may find nothing: units count the messages got).
   */
  async queueSingles(t: Timing, callers: number, block = true): Promise<Measured> {
    let empty = 0;
    const m = await throughput(t, callers, async () => {
      await this.queue.put(VALUE);
      if ((await this.queue.get({ block })) !== undefined) return 1;
      empty++;
      return 0;
    });
    await this.queue.clear();
    return block ? m : withDetail(m, { emptyGets: empty });
  }

  /** A get blocked on an empty queue, woken by a put from the other connection: put start → get return. */
  wake(n: number): Promise<Measured> {
    return latency(n, async () => {
      const got = this.wakeQueue.get();
      await sleep(BLOCK_SETTLE_MS);
      const t0 = performance.now();
      const put = this.wakeProducer.put(VALUE);
      await got;
      const ms = performance.now() - t0;
      await put;
      return ms;
    });
  }
}

function batchEntries(start: number): Map<string, string> {
  return new Map(Array.from({ length: BATCH }, (_, j) => [key(start + j), VALUE] as const));
}

function withDetail(m: Measured, detail: Record<string, unknown>): Measured {
  return { ...m, detail: { ...m.detail, ...detail } };
}
