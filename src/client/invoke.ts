/**
 * Calling functions on the compute bridge, shaped like Modal's Function and
 * FunctionCall: `remote`, `spawn`, `map`, `starmap`, `forEach`, `spawnMap`;
 * `call.get({ timeoutMs })`, `call.cancel()`.
 *
 * Maps stream. Inputs (an iterable or an async iterable) are submitted in
 * batches of SUBMIT_BATCH as they are read, and results are watched as each
 * batch is accepted, so the first result can arrive before the last input is
 * read. The results come out in input order (`ordered: false`: as they
 * finish); a result that arrives early waits in memory for those before it.
 * A failed call throws its error where its result would be, and the calls
 * not yet delivered are cancelled; `returnExceptions: true` yields the error
 * in its place instead and goes on. A map abandoned early (a `break` out of
 * `for await`) cancels the calls it has not delivered too.
 *
 * A map's result is both an async iterable and a promise of the array:
 * `for await (const r of f.map(xs))` streams, `await f.map(xs)` collects.
 *
 * Every call has an id chosen here, so a Submit sent again after the bridge
 * was unreachable (UNAVAILABLE, retried for up to a minute) adds nothing.
 */
import { randomUUID } from 'node:crypto';
import type { ClientReadableStream } from '@grpc/grpc-js';
import {
  DeadlineExceededError,
  ErrorCode,
  InternalError,
  InvalidArgumentError,
  StowageError,
  errorForCode,
  isErrorCode,
  isStowageError,
} from '../common/errors.js';
import { CallState, type CallError, type CallResult, type FunctionSpec } from '../gen/stowage/v1/bridge.js';
import { codecFor } from './codec.js';
import type { Connection } from './connection.js';
import { callLogs, type CallOutput, type LogsOptions } from './logs.js';

const msgpack = codecFor('msgpack');
/** How long a caller keeps trying to reach a restarting bridge before giving up. */
const RECONNECT_FOR_MS = 60_000;
/** Calls per Submit of a map (the bridge takes up to 10,000). */
const SUBMIT_BATCH = 1000;

export interface MapOptions {
  /** Results in input order (default), or as calls finish (false). */
  ordered?: boolean;
  /** Yield a failed call's error in place of its result, and go on (default: throw it, and cancel the rest). */
  returnExceptions?: boolean;
  /** Called after each result arrives, with the number of inputs submitted so far. */
  onProgress?: (done: number, submitted: number) => void;
}

export interface GetOptions {
  /** Give up waiting after this long (the call goes on): DeadlineExceededError. Default: wait as long as it takes. */
  timeoutMs?: number;
}

export interface RemoteErrorDetails {
  callId: string;
  workerId: string;
  /** For FUNCTION_ERROR: the name and stack of what the handler threw, on the worker. */
  remoteName?: string;
  remoteStack?: string;
}

/** What can be called: a function of this process's module (FunctionHandle) or a deployed one. */
export abstract class FunctionInvoker<A extends unknown[], R> {
  abstract readonly name: string;
  abstract get connection(): Connection;
  /** The spec the bridge runs. */
  abstract spec(): Promise<FunctionSpec>;

  /** The globs one call reads, for placement (none by default). */
  protected readsOf(_args: A): string[] {
    return [];
  }

  /** Runs one call and returns its result. */
  async remote(...args: A): Promise<R> {
    return (await this.spawn(...args)).get();
  }

  /** Starts one call; its handle's get() waits for the result. */
  async spawn(...args: A): Promise<FunctionCall<R>> {
    const [id] = await this.submit([args]);
    return new FunctionCall<R>(this.connection, id!);
  }

  /** One call per input (each input is the single argument). Iterate to stream the results, or await for all of them. */
  map(inputs: Iterable<A[0]> | AsyncIterable<A[0]>, opts: MapOptions = {}): MapResults<R> {
    return new MapResults<R>(this.connection, mapArgs(inputs, (x) => [x] as unknown as A), (batch) => this.submit(batch), opts);
  }

  /** One call per input, each input spread as the arguments: `add.starmap([[1, 2], [3, 4]])`. */
  starmap(inputs: Iterable<A> | AsyncIterable<A>, opts: MapOptions = {}): MapResults<R> {
    return new MapResults<R>(
      this.connection,
      mapArgs(inputs, (x, i) => {
        if (!Array.isArray(x)) throw new InvalidArgumentError(`starmap input ${i + 1} of ${this.name} is not an array of arguments`);
        return x;
      }),
      (batch) => this.submit(batch),
      opts,
    );
  }

  /** Runs the function for every input and waits for all of them, ignoring results; throws the first failure (the rest are cancelled). */
  async forEach(inputs: Iterable<A[0]> | AsyncIterable<A[0]>, opts: Pick<MapOptions, 'onProgress'> = {}): Promise<void> {
    for await (const _ of this.map(inputs, { ...opts, ordered: false })) {
      // results are not kept
    }
  }

  /** Starts one call per input and returns at once, with their handles. */
  async spawnMap(inputs: Iterable<A[0]> | AsyncIterable<A[0]>): Promise<FunctionCall<R>[]> {
    const out: FunctionCall<R>[] = [];
    for await (const batch of batches(mapArgs(inputs, (x) => [x] as unknown as A))) {
      for (const id of await this.submit(batch)) out.push(new FunctionCall<R>(this.connection, id));
    }
    return out;
  }

  private async submit(argLists: A[]): Promise<string[]> {
    const spec = await this.spec();
    const calls = argLists.map((args, i) => ({
      id: `fc-${randomUUID()}`,
      args: msgpack.encode(args, `the arguments of call ${i + 1} to ${this.name}`),
      reads: this.readsOf(args),
    }));
    return submitCalls(this.connection, spec, calls);
  }
}

/** A call started with spawn() (or spawnMap). */
export class FunctionCall<R> {
  constructor(
    private readonly connection: Connection,
    readonly id: string,
  ) {}

  /** Waits for the result (or throws the call's error); with `timeoutMs`, at most that long (DeadlineExceededError; the call goes on). */
  async get(opts: GetOptions = {}): Promise<R> {
    let result: CallResult | undefined;
    const signal = opts.timeoutMs === undefined ? undefined : AbortSignal.timeout(opts.timeoutMs);
    await watchResults(this.connection, [this.id], (r) => (result = r), signal);
    if (!result) {
      throw new DeadlineExceededError(`call ${this.id} did not finish within ${opts.timeoutMs} ms; it goes on (get() it again, or cancel() it)`);
    }
    return valueOf<R>(result);
  }

  /** What the function wrote to stdout and stderr (logs.ts): what is kept, then with `follow` new output until the call ends. */
  logs(opts: LogsOptions = {}): AsyncIterable<CallOutput> {
    return callLogs(this.connection, this.id, opts);
  }

  /** Cancels the call: it fails with CancelledError, and the function process running it is stopped. A finished call cannot be cancelled (FailedPreconditionError). */
  async cancel(): Promise<void> {
    await cancelCalls(this.connection, [this.id], false);
  }
}

/** The results of a map: iterate them as they come (`for await`), or await the array. */
export class MapResults<R> implements AsyncIterable<R>, PromiseLike<R[]> {
  private started = false;

  constructor(
    private readonly connection: Connection,
    private readonly inputs: AsyncIterable<unknown[]>,
    private readonly submit: (batch: never[]) => Promise<string[]>,
    private readonly opts: MapOptions,
  ) {}

  then<T1 = R[], T2 = never>(onFulfilled?: ((v: R[]) => T1 | PromiseLike<T1>) | null, onRejected?: ((e: unknown) => T2 | PromiseLike<T2>) | null): Promise<T1 | T2> {
    return this.collect().then(onFulfilled, onRejected);
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<R> {
    if (this.started) throw new InvalidArgumentError('the results of a map can be read once');
    this.started = true;
    yield* this.run();
  }

  private async collect(): Promise<R[]> {
    const out: R[] = [];
    for await (const r of this) out.push(r);
    return out;
  }

  private async *run(): AsyncGenerator<R> {
    const ordered = this.opts.ordered ?? true;
    const arrived = new Channel<{ index: number; result: CallResult }>();
    const index = new Map<string, number>();
    const undelivered = new Set<string>();
    const watches: Promise<void>[] = [];
    const abort = new AbortController();
    let submitted = 0;
    let done = 0;
    // Reads the inputs and submits them batch by batch while results are being yielded.
    const feeding = (async () => {
      for await (const batch of batches(this.inputs)) {
        if (abort.signal.aborted) return;
        const ids = await this.submit(batch as never[]);
        ids.forEach((id, i) => {
          index.set(id, submitted + i);
          undelivered.add(id);
        });
        submitted += ids.length;
        const watch = watchResults(this.connection, ids, (r) => arrived.push({ index: index.get(r.callId)!, result: r }), abort.signal);
        watches.push(watch.catch((err: unknown) => arrived.fail(err)));
      }
    })();
    feeding.then(
      () => Promise.all(watches).then(() => arrived.close()),
      (err: unknown) => arrived.fail(err),
    );
    const early = new Map<number, CallResult>();
    let next = 0;
    try {
      for (;;) {
        const item = await arrived.next();
        if (!item) break;
        undelivered.delete(item.result.callId);
        done++;
        this.opts.onProgress?.(done, submitted);
        if (!ordered) {
          yield this.outcome(item.result);
          continue;
        }
        early.set(item.index, item.result);
        while (early.has(next)) {
          const r = early.get(next)!;
          early.delete(next++);
          yield this.outcome(r);
        }
      }
      // Every watch ended with every result; a shortfall would be a bridge fault, never a silently shorter list.
      if (done < submitted) throw new InternalError(`the bridge answered ${done} of the map's ${submitted} calls and ended the watch`);
    } finally {
      abort.abort();
      arrived.close();
      await feeding.catch(() => undefined);
      // Left early (a failure thrown, or the caller stopped reading): what was not delivered is not wanted.
      const rest = [...undelivered];
      for (let i = 0; i < rest.length; i += SUBMIT_BATCH) await cancelCalls(this.connection, rest.slice(i, i + SUBMIT_BATCH), true).catch(() => undefined);
    }
  }

  private outcome(r: CallResult): R {
    if (r.state === CallState.CALL_STATE_SUCCEEDED || !this.opts.returnExceptions) return valueOf<R>(r);
    return callError(r.error, r.callId, r.workerId) as unknown as R;
  }
}

/** An unbounded hand-over from watch callbacks to one reader. */
class Channel<T> {
  private readonly items: T[] = [];
  private waiter: ((v: void) => void) | undefined;
  private closed = false;
  private error: { err: unknown } | undefined;

  push(item: T): void {
    if (this.closed) return;
    this.items.push(item);
    this.wake();
  }

  close(): void {
    this.closed = true;
    this.wake();
  }

  fail(err: unknown): void {
    this.error ??= { err };
    this.close();
  }

  async next(): Promise<T | undefined> {
    for (;;) {
      if (this.items.length) return this.items.shift();
      if (this.error) throw this.error.err;
      if (this.closed) return undefined;
      await new Promise<void>((r) => (this.waiter = r));
    }
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }
}

async function* mapArgs<X, A>(inputs: Iterable<X> | AsyncIterable<X>, toArgs: (x: X, i: number) => A): AsyncGenerator<A> {
  let i = 0;
  for await (const x of inputs) yield toArgs(x, i++);
}

async function* batches<T>(items: AsyncIterable<T>): AsyncGenerator<T[]> {
  let batch: T[] = [];
  for await (const x of items) {
    batch.push(x);
    if (batch.length >= SUBMIT_BATCH) {
      yield batch;
      batch = [];
    }
  }
  if (batch.length) yield batch;
}

// ---- shared with the CLI -------------------------------------------------------

/** Submits calls, retrying while the bridge is unreachable (call ids make a repeated Submit harmless). */
export async function submitCalls(connection: Connection, spec: FunctionSpec, calls: { id: string; args: Buffer; reads: string[] }[]): Promise<string[]> {
  const bridge = connection.bridge;
  return retryUnavailable(() => connection.unary(bridge.submit.bind(bridge), { function: spec, calls }).then((r) => r.callIds));
}

/** Cancels calls (CancelCalls); returns how many were still queued or running. */
export async function cancelCalls(connection: Connection, callIds: string[], ignoreFinished: boolean): Promise<number> {
  const bridge = connection.bridge;
  return retryUnavailable(() => connection.unary(bridge.cancelCalls.bind(bridge), { callIds, ignoreFinished }).then((r) => r.cancelled));
}

/**
 * Calls `onResult` once per call as results arrive; reconnects while the
 * bridge restarts. Resolves when every call has a result, or when `signal`
 * aborts (then some have none).
 */
export async function watchResults(connection: Connection, ids: string[], onResult: (r: CallResult) => void, signal?: AbortSignal): Promise<void> {
  const waiting = new Set(ids);
  let lastProgress = Date.now();
  let pauseMs = 200;
  while (waiting.size && !signal?.aborted) {
    const call: ClientReadableStream<CallResult> = connection.bridge.watchCalls({ callIds: [...waiting] });
    const stop = () => call.cancel();
    signal?.addEventListener('abort', stop);
    try {
      for await (const r of connection.stream(call)) {
        if (!waiting.delete(r.callId)) continue;
        lastProgress = Date.now();
        pauseMs = 200;
        onResult(r);
      }
    } catch (err) {
      if (signal?.aborted) return;
      if (!isStowageError(err, ErrorCode.UNAVAILABLE) || Date.now() - lastProgress > RECONNECT_FOR_MS) throw err;
      await new Promise((r) => setTimeout(r, pauseMs));
      pauseMs = Math.min(pauseMs * 2, 3000);
    } finally {
      signal?.removeEventListener('abort', stop);
    }
  }
}

async function retryUnavailable<T>(fn: () => Promise<T>): Promise<T> {
  const start = Date.now();
  let pauseMs = 200;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (!isStowageError(err, ErrorCode.UNAVAILABLE) || Date.now() - start > RECONNECT_FOR_MS) throw err;
      await new Promise((r) => setTimeout(r, pauseMs));
      pauseMs = Math.min(pauseMs * 2, 3000);
    }
  }
}

/** The call's value, or its error as a typed StowageError (a handler's own error keeps its name and stack). */
export function valueOf<R>(r: CallResult): R {
  if (r.state === CallState.CALL_STATE_SUCCEEDED) return msgpack.decode(r.value) as R;
  throw callError(r.error, r.callId, r.workerId);
}

export function callError(e: CallError | undefined, callId: string, workerId: string): StowageError & RemoteErrorDetails {
  const sent = e?.code;
  const code = isErrorCode(sent) ? sent : ErrorCode.INTERNAL;
  const err = errorForCode(code, e?.message ?? `call ${callId} failed without an error`) as StowageError & RemoteErrorDetails;
  err.callId = callId;
  err.workerId = workerId;
  if (code === ErrorCode.FUNCTION_ERROR && e) {
    err.remoteName = e.name;
    err.remoteStack = e.stack;
    if (e.stack) err.stack = `${e.stack}\n    at (call ${callId} on worker ${workerId})`;
  }
  return err;
}
