/**
 * The QueueService gRPC handlers over one QueueBackend (always behind
 * ValidatingQueueBackend, whatever it is given). Operations come in
 * batches (a unary Batch call or a Session stream), each failing on its own.
 *
 * Blocking: gets with `block` wait in a pool per partition (waiting-gets.ts):
 * one backend get per wake-up, items dealt out first come, first served. A
 * put with `block` on a full queue retries with a growing pause: no backend
 * announces free room, and back-pressure only needs to be eventually prompt.
 */
import { InvalidArgumentError } from '../common/errors.js';
import { addToGroup, settleOps } from '../common/batch.js';
import { toOpError } from '../common/grpc-errors.js';
import { authCheck, session, unary } from '../common/grpc-server.js';
import type { Authenticator } from '../common/tokens.js';
import { IdleTracker, type IdleOptions } from '../common/idle.js';
import type { Logger } from '../common/logger.js';
import type { OpCounter } from '../common/metrics.js';
import {
  QueueOpKind,
  type QueueBatch,
  type QueueBatchResult,
  type QueueInfo as QueueInfoMessage,
  type QueueOp,
  type QueueResult,
  type QueueServiceServer,
} from '../gen/stowage/v1/queue.js';
import {
  MAX_ITEMS_PER_GET,
  MAX_ITEMS_PER_PUT,
  type DeliveredItem, type QueueBackend, type QueueInfo } from './types.js';
import { QueueFullError, checkMax } from './validate.js';
import { validatedQueueBackend } from './validating.js';
import { WaitingGets } from './waiting-gets.js';
import { pause } from './wake.js';

/** The label of each op kind in the metrics (QUEUE_OP_KIND_GET: get). */
const KIND_LABELS = new Map<number, string>(
  Object.entries(QueueOpKind)
    .filter((e): e is [string, number] => typeof e[1] === 'number')
    .map(([k, v]) => [v, k.replace('QUEUE_OP_KIND_', '').toLowerCase()]),
);

/** Most operations in one batch message. */
export const MAX_OPS_PER_BATCH = 1000;
/** Pauses of a blocked put between tries, growing to the last. */
const PUT_RETRY_MS = [2, 5, 10, 20, 50, 100];

const result = (r: Partial<QueueResult>): QueueResult => ({ error: undefined, items: [], number: 0, cursor: '', ...r });

const infoMessage = (i: QueueInfo): QueueInfoMessage => ({
  name: i.name,
  createdAtMs: i.createdAtMs,
  maxSize: i.maxSize,
  maxDeliveries: i.maxDeliveries,
  idleTimeoutMs: i.idleTimeoutMs,
  lastUsedMs: i.lastUsedMs,
});

const itemMessage = (i: DeliveredItem) => ({ data: i.data, leaseId: i.leaseId ?? '', deliveries: i.deliveries });

export class QueueService {
  readonly idle: IdleTracker;
  private readonly waiting: WaitingGets;

  private readonly backend: QueueBackend;

  constructor(
    backend: QueueBackend,
    private readonly log: Logger,
    idle?: IdleOptions,
    /** Told of every operation run (the server's metrics). */
    private readonly ops?: OpCounter,
  ) {
    this.backend = validatedQueueBackend(backend);
    this.idle = new IdleTracker(this.backend, 'queue', log, idle);
    this.waiting = new WaitingGets(this.backend, log);
  }

  handlers(token: Authenticator | string): QueueServiceServer {
    const check = authCheck(token);
    const log = this.log;
    const b = this.backend;
    return {
      createQueue: unary(check, log, async (r) => {
        const settings = {
          maxSize: r.maxSize || undefined,
          maxDeliveries: r.maxDeliveries || undefined,
          idleTimeoutMs: r.idleTimeoutMs || undefined,
        };
        try {
          return infoMessage(await b.create(r.name, settings));
        } catch (err) {
          if (r.existOk && (err as { code?: string }).code === 'ALREADY_EXISTS') return infoMessage(await b.info(r.name));
          throw err;
        }
      }),
      getQueue: unary(check, log, async (r) => infoMessage(await b.info(r.name))),
      listQueues: unary(check, log, async () => ({ queues: (await b.list()).map(infoMessage) })),
      deleteQueue: unary(check, log, async (r) => {
        await b.drop(r.name);
        return {};
      }),
      batch: unary(check, log, (r, call) => {
        const aborter = new AbortController();
        call.on('cancelled', () => aborter.abort());
        return this.runBatch(r, aborter.signal);
      }),
      session: session(check, log, (r, signal, sendEarly) => this.runBatch(r, signal, sendEarly)),
    };
  }

  /**
   * Runs a batch. With `sendEarly` (a session), ops that may wait (blocking
   * gets and puts) do not hold up the rest: a batch that holds one is
   * answered in parts, each part carrying the ops that finished in one turn.
   */
  runBatch(batch: QueueBatch, signal: AbortSignal): Promise<QueueBatchResult>;
  runBatch(
    batch: QueueBatch,
    signal: AbortSignal,
    sendEarly: (part: QueueBatchResult) => void,
  ): Promise<QueueBatchResult | undefined>;
  async runBatch(
    batch: QueueBatch,
    signal: AbortSignal,
    sendEarly?: (part: QueueBatchResult) => void,
  ): Promise<QueueBatchResult | undefined> {
    if (batch.ops.length > MAX_OPS_PER_BATCH) {
      const error = toOpError(new InvalidArgumentError(`a batch holds at most ${MAX_OPS_PER_BATCH} operations`));
      return { id: batch.id, results: batch.ops.map(() => result({ error })), indexes: [] };
    }
    if (this.ops) for (const op of batch.ops) this.ops.count(KIND_LABELS.get(op.kind) ?? 'unknown', op.queue);
    const results: Promise<QueueResult>[] = new Array(batch.ops.length);
    // Puts to one partition and non-blocking gets from one partition are
    // folded into one backend call each, in the order of the batch: as if the
    // ops ran one after another with nothing in between.
    // Gets start after the batch's puts are under way, so that a caller's
    // put-then-get finds its item without a wake-up round.
    const puts = new Map<string, number[]>();
    const gets = new Map<string, number[]>();
    batch.ops.forEach((op, i) => {
      if (op.kind === QueueOpKind.QUEUE_OP_KIND_PUT) addToGroup(puts, `${op.queue}\n${op.partition}\n${op.partitionTtlMs}`, i);
      else if (op.kind === QueueOpKind.QUEUE_OP_KIND_GET) {
        addToGroup(gets, `${op.queue}\n${op.partition}\n${op.ack}\n${op.visibilityMs}\n${op.block}`, i);
      } else results[i] = this.runOp(op, signal);
    });
    for (const idx of puts.values()) this.putGroup(batch.ops, idx, signal, results);
    for (const idx of gets.values()) this.getGroup(batch.ops, idx, signal, results);
    const settled = settleOps(
      batch.ops.map((op) => op.queue),
      results,
      (error) => result({ error }),
      this.idle,
      this.log,
    );
    if (!sendEarly || !batch.ops.some((op) => op.block)) return { id: batch.id, results: await Promise.all(settled), indexes: [] };

    // Answers go out in parts, each part holding every op that finished in
    // the same turn: a waiter pool deals its items to many ops at once, and one
    // message back (not one per op) lets those callers' next calls batch again.
    let pending: number[] = [];
    let flushing: Promise<void> | undefined;
    const answers = new Array<QueueResult | undefined>(batch.ops.length);
    const flush = () => {
      const indexes = pending;
      pending = [];
      flushing = undefined;
      if (indexes.length) sendEarly({ id: batch.id, results: indexes.map((i) => answers[i]!), indexes });
    };
    const finished = settled.map((p, i) =>
      p.then((r) => {
        answers[i] = r;
        pending.push(i);
        flushing ??= new Promise<void>((resolve) => setImmediate(resolve)).then(flush);
      }),
    );
    await Promise.all(finished);
    await flushing;
    return undefined;
  }

  /** One put of every group member's items; if that fails (full, bad item), each member is tried alone. */
  private putGroup(ops: QueueOp[], idx: number[], signal: AbortSignal, results: Promise<QueueResult>[]): void {
    const items = idx.flatMap((i) => ops[i]!.items);
    if (idx.length === 1 || items.length > MAX_ITEMS_PER_PUT) {
      for (const i of idx) results[i] = this.runOp(ops[i]!, signal);
      return;
    }
    const first = ops[idx[0]!]!;
    const together = this.backend
      .put(first.queue, items, { partition: first.partition, partitionTtlMs: first.partitionTtlMs || undefined })
      .then(
        () => true,
        () => false,
      );
    for (const i of idx) {
      results[i] = together.then((ok) => (ok ? result({}) : this.runOp(ops[i]!, signal)));
    }
  }

  /**
   * One get for the whole group, its items dealt out in order; a failure is
   * every member's. Blocking members that got nothing then wait in the pool;
   * if the pool already has waiters for these items, the whole group queues
   * behind them (first come, first served).
   */
  private getGroup(ops: QueueOp[], idx: number[], signal: AbortSignal, results: Promise<QueueResult>[]): void {
    const first = ops[idx[0]!]!;
    const wants = idx.map((i) => ops[i]!.max || 1);
    const total = wants.reduce((a, b) => a + b, 0);
    const queued = first.block && this.waiting.has(first.queue, first.partition, first.ack ? first.visibilityMs : 0);
    // A caller that went away must not take items it will never receive.
    if (queued || signal.aborted || total > MAX_ITEMS_PER_GET || wants.some((w) => w > MAX_ITEMS_PER_GET)) {
      for (const i of idx) results[i] = this.runOp(ops[i]!, signal);
      return;
    }
    const together = this.get({ ...first, block: false, max: total }, signal);
    let from = 0;
    idx.forEach((i, n) => {
      const start = from;
      from += wants[n]!;
      results[i] = together.then(async (items) => {
        const mine = items.slice(start, start + wants[n]!);
        return result({ items: (mine.length === 0 && ops[i]!.block ? await this.get(ops[i]!, signal) : mine).map(itemMessage) });
      });
    });
  }

  private async runOp(op: QueueOp, signal: AbortSignal): Promise<QueueResult> {
    const b = this.backend;
    const q = op.queue;
    const partition = op.partition;
    switch (op.kind) {
      case QueueOpKind.QUEUE_OP_KIND_PUT:
        await this.put(op, signal);
        return result({});
      case QueueOpKind.QUEUE_OP_KIND_GET:
        return result({ items: (await this.get(op, signal)).map(itemMessage) });
      case QueueOpKind.QUEUE_OP_KIND_ACK:
        return result({ number: await b.ack(q, op.leaseIds) });
      case QueueOpKind.QUEUE_OP_KIND_LEN:
        return result({ number: await b.len(q, op.all ? { total: true } : { partition }) });
      case QueueOpKind.QUEUE_OP_KIND_CLEAR:
        await b.clear(q, op.all ? { all: true } : { partition });
        return result({});
      case QueueOpKind.QUEUE_OP_KIND_PEEK: {
        const page = await b.peek(q, { partition, cursor: op.cursor || undefined, limit: op.max || undefined });
        return result({
          items: page.items.map((i) => ({ data: i.data, leaseId: '', deliveries: i.deliveries })),
          cursor: page.cursor ?? '',
        });
      }
      case QueueOpKind.QUEUE_OP_KIND_TOUCH:
        await b.touch(q);
        return result({});
      default:
        throw new InvalidArgumentError(`unknown queue operation ${op.kind}; is the client newer than the server?`);
    }
  }

  private async put(op: QueueOp, signal: AbortSignal): Promise<void> {
    const options = { partition: op.partition, partitionTtlMs: op.partitionTtlMs || undefined };
    const deadline = op.timeoutMs ? Date.now() + op.timeoutMs : Infinity;
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.backend.put(op.queue, op.items, options);
      } catch (err) {
        if (!(err instanceof QueueFullError) || !op.block) throw err;
        const left = deadline - Date.now();
        if (left <= 0 || signal.aborted) throw err;
        if (attempt === 0) {
          const { maxSize } = await this.backend.info(op.queue);
          if (op.items.length > maxSize) {
            throw new InvalidArgumentError(
              `put of ${op.items.length} items can never fit in queue ${op.queue} (maxSize ${maxSize}); put fewer at a time`,
            );
          }
        }
        await pause(Math.min(PUT_RETRY_MS[Math.min(attempt, PUT_RETRY_MS.length - 1)]!, left), signal);
      }
    }
  }

  private get(op: QueueOp, signal: AbortSignal): Promise<DeliveredItem[]> {
    const ack = op.ack ? { visibilityMs: op.visibilityMs } : undefined;
    if (!op.block) return this.backend.get(op.queue, { partition: op.partition, max: op.max || undefined, ack });
    checkMax(op.max || undefined);
    return this.waiting.wait({ queue: op.queue, partition: op.partition, max: op.max || 1, ack, timeoutMs: op.timeoutMs }, signal);
  }

  async close(): Promise<void> {
    await this.idle.close();
  }
}
