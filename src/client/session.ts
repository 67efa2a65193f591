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
 *
 * Deadlines. The stream itself has none (a blocking get may wait as long as
 * its caller asked); each operation has its own: `timeoutMs` beyond the time
 * it may wait on purpose (`waitOf`: a blocking get's or put's timeout; none
 * when it waits without end). Past it the operation fails with
 * UnavailableError naming the server and the operation (a late answer is
 * dropped). If nothing at all came back on the stream since that batch was
 * sent, the stream is taken for stalled: it is cancelled, everything in flight
 * on it fails the same way, and the next operation opens a new one.
 *
 * Sizes. A batch holds at most MAX_BATCH_BYTES of payload, unless one
 * operation alone is larger (it then goes alone); an operation that could not
 * fit in one request message (MAX_REQUEST_BYTES) fails on its own, before it
 * is sent, rather than failing the stream and everyone else's operations.
 */
import type { ClientDuplexStream } from '@grpc/grpc-js';
import { InvalidArgumentError, UnavailableError } from '../common/errors.js';
import { fromGrpcError, fromOpError, type OpErrorMessage } from '../common/grpc-errors.js';
import { MAX_REQUEST_BYTES } from '../common/message-limits.js';
import type { ClientTlsMode } from '../common/tls.js';

/** Ops or bytes in one batch before it is sent without waiting for the tick to end. */
const MAX_BATCH_OPS = 1000;
const MAX_BATCH_BYTES = 4 * 1024 * 1024;
/** Payload of one operation sent alone: a request message less what framing a batch of 10,000 keys may need. */
const MAX_OP_BYTES = MAX_REQUEST_BYTES - 256 * 1024;
const IDLE_END_MS = 100;
/** setTimeout's limit (about 24.8 days); an op allowed longer is treated as waiting without end. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface SessionDeadlines<Op> {
  /** Time allowed for an answer beyond what an operation waits on purpose, ms. */
  timeoutMs: number;
  /** How long `op` may wait on the server on purpose (ms): 0 if it does not, Infinity without end. */
  waitOf(op: Op): number;
  /** The operation in words, for the error when its deadline passes. */
  describe(op: Op): string;
}

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

interface InFlight<Res> {
  /** Its waiters, in op order; undefined once answered or timed out. */
  waiters: (Pending<Res> | undefined)[];
  open: number;
  timers: NodeJS.Timeout[];
  /** Messages received on the stream when the batch was sent (to tell a slow op from a stalled stream). */
  receivedAtSend: number;
}

export class SessionBatcher<Op, Res extends { error?: OpErrorMessage | undefined }> {
  private stream: ClientDuplexStream<Batch<Op>, BatchResult<Res>> | undefined;
  private queued: Op[] = [];
  private queuedWaiters: Pending<Res>[] = [];
  private queuedBytes = 0;
  private flushScheduled = false;
  private nextId = 1;
  /** Batches sent and not fully answered. */
  private readonly inFlight = new Map<number, InFlight<Res>>();
  /** Messages received on the current stream. */
  private received = 0;
  private idleTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly open: () => ClientDuplexStream<Batch<Op>, BatchResult<Res>>,
    private readonly server: string,
    private readonly tls: ClientTlsMode,
    private readonly deadlines: SessionDeadlines<Op>,
  ) {}

  /** Runs one operation. `bytes` is its payload size (for batch sizing). */
  run(op: Op, bytes = 0): Promise<Res> {
    if (bytes > MAX_OP_BYTES) {
      return Promise.reject(
        new InvalidArgumentError(
          `${this.deadlines.describe(op)} carries ${bytes} bytes, over the limit of ${MAX_OP_BYTES} bytes for one request: send less in one call (e.g. fewer keys per update)`,
        ),
      );
    }
    // A large op goes in a batch of its own rather than push a batch over MAX_BATCH_BYTES.
    if (this.queued.length > 0 && this.queuedBytes + bytes > MAX_BATCH_BYTES) this.flush();
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
    const batch: InFlight<Res> = { waiters, open: waiters.length, timers: [], receivedAtSend: this.received };
    this.inFlight.set(id, batch);
    // One timer per distinct allowance (usually one per batch): ops that wait without end get none.
    const byAllowance = new Map<number, number[]>();
    ops.forEach((op, i) => {
      const allowed = this.deadlines.waitOf(op) + this.deadlines.timeoutMs;
      if (allowed > MAX_TIMER_MS) return;
      const group = byAllowance.get(allowed);
      if (group) group.push(i);
      else byAllowance.set(allowed, [i]);
    });
    for (const [allowed, indexes] of byAllowance) {
      batch.timers.push(setTimeout(() => this.expire(stream, id, indexes, ops, allowed), allowed));
    }
    stream.write({ id, ops });
  }

  /** The deadline of ops `indexes` of batch `id` passed. */
  private expire(stream: ClientDuplexStream<Batch<Op>, BatchResult<Res>>, id: number, indexes: number[], ops: Op[], allowedMs: number): void {
    const batch = this.inFlight.get(id);
    if (!batch) return;
    const late = indexes.filter((i) => batch.waiters[i] !== undefined);
    if (late.length === 0) return;
    const stalled = this.stream === stream && this.received === batch.receivedAtSend;
    const what = this.deadlines.describe(ops[late[0]!]!);
    const error = new UnavailableError(
      `stowage server at ${this.server} did not answer ${what}${late.length > 1 ? ` (and ${late.length - 1} more operations)` : ''} within ${allowedMs} ms` +
        `${stalled ? ', nor anything else on its session stream since: the stream is given up and the next operation opens a new one' : ''}; ` +
        'whether it took effect is unknown; the server may be overloaded or stuck: retry, or allow more time with STOWAGE_TIMEOUT (or timeoutMs)',
    );
    if (stalled) {
      this.stream = undefined;
      stream.cancel();
      this.failAll(error);
      return;
    }
    for (const i of late) {
      batch.waiters[i]!.reject(error);
      batch.waiters[i] = undefined;
      batch.open--;
    }
    if (batch.open === 0) this.finish(id, batch);
  }

  private finish(id: number, batch: InFlight<Res>): void {
    for (const t of batch.timers) clearTimeout(t);
    this.inFlight.delete(id);
    this.maybeIdle();
  }

  private failAll(error: Error): void {
    for (const batch of this.inFlight.values()) {
      for (const t of batch.timers) clearTimeout(t);
      for (const w of batch.waiters) w?.reject(error);
    }
    this.inFlight.clear();
  }

  private openStream(): ClientDuplexStream<Batch<Op>, BatchResult<Res>> {
    const stream = this.open();
    this.received = 0;
    stream.on('data', (msg: BatchResult<Res>) => {
      if (this.stream === stream) this.received++;
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
      this.finish(msg.id, batch);
    });
    const fail = (err: unknown) => {
      if (this.stream !== stream) return;
      this.stream = undefined;
      this.failAll(fromGrpcError(err, this.server, this.tls));
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
    this.failAll(fromOpError({ code: 'UNAVAILABLE', message: 'the connection was closed while the operation was in flight' }));
  }
}
