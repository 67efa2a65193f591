/**
 * Automatic batching of dict and queue operations over one Session stream.
 *
 * Every operation issued before the event loop next turns (setImmediate) goes
 * out in one batch message, so 64 concurrent callers cost one message, not 64
 * RPCs; a lone caller still pays only one stream round trip, no call set-up.
 * Batches are matched to results by id (and, when a batch is answered in
 * parts, to ops by index), so a blocked get never holds up anything else. The stream is opened on first use
 * and ended after IDLE_END_MS without operations in flight, so a script whose
 * work is done can exit. If the stream fails (server restart, network), every
 * operation in flight fails with that error and the next one opens a new
 * stream; nothing is retried behind the caller's back, since a put that may
 * have landed must not be applied twice.
 */
import type { ClientDuplexStream } from '@grpc/grpc-js';
import { fromGrpcError, fromOpError, type OpErrorMessage } from '../common/grpc-errors.js';

/** Ops or bytes in one batch before it is sent without waiting for the tick to end. */
const MAX_BATCH_OPS = 1000;
const MAX_BATCH_BYTES = 4 * 1024 * 1024;
const IDLE_END_MS = 100;

interface Batch<Op> {
  id: number;
  ops: Op[];
}
interface BatchResult<Res> {
  id: number;
  results: Res[];
  /** Which ops `results` answer; absent or empty: all, in order (see queue.proto). */
  indexes?: number[];
}

interface Pending<Res> {
  resolve(r: Res): void;
  reject(e: Error): void;
}

export class SessionBatcher<Op, Res extends { error?: OpErrorMessage | undefined }> {
  private stream: ClientDuplexStream<Batch<Op>, BatchResult<Res>> | undefined;
  private queued: Op[] = [];
  private queuedWaiters: Pending<Res>[] = [];
  private queuedBytes = 0;
  private flushScheduled = false;
  private nextId = 1;
  /** Batches sent and not fully answered: their waiters (undefined once answered) and how many are open. */
  private readonly inFlight = new Map<number, { waiters: (Pending<Res> | undefined)[]; open: number }>();
  private idleTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly open: () => ClientDuplexStream<Batch<Op>, BatchResult<Res>>,
    private readonly server: string,
  ) {}

  /** Runs one operation. `bytes` is its payload size (for batch sizing). */
  run(op: Op, bytes = 0): Promise<Res> {
    return new Promise<Res>((resolve, reject) => {
      const waiter = { resolve, reject };
      this.queued.push(op);
      this.queuedWaiters.push(waiter);
      this.queuedBytes += bytes;
      if (this.queued.length >= MAX_BATCH_OPS || this.queuedBytes >= MAX_BATCH_BYTES) this.flush();
      else if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => this.flush());
      }
    }).then((res) => {
      if (res.error) throw fromOpError(res.error);
      return res;
    });
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.queued.length === 0) return;
    const ops = this.queued;
    const waiters = this.queuedWaiters;
    this.queued = [];
    this.queuedWaiters = [];
    this.queuedBytes = 0;
    this.send(ops, waiters);
  }

  private send(ops: Op[], waiters: Pending<Res>[]): void {
    clearTimeout(this.idleTimer);
    const stream = (this.stream ??= this.openStream());
    const id = this.nextId++;
    this.inFlight.set(id, { waiters, open: waiters.length });
    stream.write({ id, ops });
  }

  private openStream(): ClientDuplexStream<Batch<Op>, BatchResult<Res>> {
    const stream = this.open();
    stream.on('data', (msg: BatchResult<Res>) => {
      const batch = this.inFlight.get(msg.id);
      if (!batch) return;
      if (msg.indexes?.length) {
        msg.indexes.forEach((index, i) => {
          const w = batch.waiters[index];
          if (w && msg.results[i]) {
            batch.waiters[index] = undefined;
            batch.open--;
            w.resolve(msg.results[i]!);
          }
        });
        if (batch.open > 0) return;
      } else {
        batch.waiters.forEach((w, i) => {
          const r = msg.results[i];
          if (!w) return;
          if (r) w.resolve(r);
          else w.reject(fromOpError({ code: 'INTERNAL', message: `server answered ${msg.results.length} of ${batch.waiters.length} operations` }));
        });
      }
      this.inFlight.delete(msg.id);
      this.maybeIdle();
    });
    const fail = (err: unknown) => {
      if (this.stream !== stream) return;
      this.stream = undefined;
      const error = fromGrpcError(err, this.server);
      for (const batch of this.inFlight.values()) for (const w of batch.waiters) w?.reject(error);
      this.inFlight.clear();
    };
    stream.on('error', fail);
    stream.on('end', () => fail(Object.assign(new Error('session ended by the server'), { code: 14, details: 'session ended by the server' })));
    return stream;
  }

  private maybeIdle(): void {
    if (this.inFlight.size > 0 || this.queued.length > 0) return;
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => this.end(), IDLE_END_MS);
  }

  /** Ends the stream once nothing is in flight (operations issued later open a new one). */
  end(): void {
    clearTimeout(this.idleTimer);
    if (this.inFlight.size > 0 || !this.stream) return;
    const stream = this.stream;
    this.stream = undefined;
    stream.end();
  }

  /** Ends the stream now; operations in flight fail. */
  close(): void {
    clearTimeout(this.idleTimer);
    const stream = this.stream;
    this.stream = undefined;
    stream?.cancel();
    const error = fromOpError({ code: 'UNAVAILABLE', message: 'the connection was closed while the operation was in flight' });
    for (const batch of this.inFlight.values()) for (const w of batch.waiters) w?.reject(error);
    this.inFlight.clear();
  }
}
