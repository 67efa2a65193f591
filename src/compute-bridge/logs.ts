/**
 * Function output on the bridge: what each call's function wrote to its
 * stdout and stderr, as its worker sends it (LogBatch on the Work stream,
 * before the attempt's outcome), kept in the CallStore and streamed to
 * whoever follows the call (WatchLogs).
 *
 * Bounds. The store keeps the newest `keepBytes` (1 MiB) of each call's
 * output, counted as the stored entries' encoded size (the data plus about
 * 20 bytes per entry); older entries are dropped, and a reader is first told
 * how many bytes were. Output lives as long as its call: the sweep that
 * deletes a finished call after resultTtlMs deletes its output with it
 * (CallStore.deleteCalls). Entries wait here at most FLUSH_MS (or until
 * FLUSH_BYTES are pending) and are written in one appendLogs; while the store
 * is slower than the function, at most `keepBytes` wait per call and the
 * oldest of them are dropped. A follower that does not read keeps at most
 * FOLLOWER_BUFFER_BYTES in its stream's buffer; beyond that its entries are
 * dropped, and it is told how many bytes when it reads again.
 *
 * Order. Per call, writes and the reads of new followers go through one
 * promise chain: a follower reads the store with no write of that call in
 * flight, then takes what is pending and every later entry live, so it sees
 * each entry once and in order. Live entries reach followers before they are
 * stored. A worker sends a call's output before its outcome on the same
 * stream, so when the call finishes its followers have had all of it.
 */
import { messageOf } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { LogStream, type LogEntry } from '../gen/stowage/v1/bridge.js';
import type { CallRecord, CallStore } from './types.js';

export const KEEP_LOG_BYTES = 1024 * 1024;
const FLUSH_MS = 200;
const FLUSH_BYTES = 256 * 1024;
/** What a follower's stream may buffer before its entries are dropped. */
export const FOLLOWER_BUFFER_BYTES = 4 * 1024 * 1024;

/** Someone reading a call's output: `send` returns false when the entry was not sent (the reader is behind). */
export type LogSink = (entry: LogEntry) => boolean;

interface CallLogs {
  pending: LogEntry[];
  pendingBytes: number;
  /** Serializes the call's store writes and followers' first reads. */
  chain: Promise<void>;
  timer: NodeJS.Timeout | undefined;
  followers: Set<Follower>;
}

interface Follower {
  send: LogSink;
  /** Bytes not sent since the reader fell behind. */
  dropped: number;
  /** Set once it has read what was stored and pending; before that, new entries reach it through `pending`. */
  live: boolean;
}

/** An entry standing for `bytes` of output dropped at this point, with a line saying why. */
export function droppedEntry(callId: string, attempt: number, bytes: number, why: string): LogEntry {
  return {
    callId,
    attempt,
    stream: LogStream.LOG_STREAM_STDERR,
    data: Buffer.from(`[stowage: ${bytes} bytes of output dropped: ${why}]\n`),
    atMs: Date.now(),
    droppedBytes: bytes,
  };
}

export class LogKeeper {
  private readonly calls = new Map<string, CallLogs>();
  private closed = false;

  constructor(
    private readonly store: CallStore,
    private readonly log: Logger,
    private readonly keepBytes = KEEP_LOG_BYTES,
  ) {}

  /**
   * Output sent by worker `workerId`: entries of attempts it was not given
   * (a stale or confused worker) are ignored.
   */
  receive(workerId: string, entries: LogEntry[], callOf: (id: string) => CallRecord | undefined): void {
    if (this.closed) return;
    for (const e of entries) {
      const call = callOf(e.callId);
      if (!call || !call.decisions.some((d) => d.attempt === e.attempt && d.workerId === workerId)) continue;
      this.append(e);
    }
  }

  /**
   * Sends what is kept of the call's output to `sink`; with `follow`, then
   * every new entry until `finished` resolves (the call ended) or `signal`
   * aborts. The caller has checked that the call exists.
   */
  async watch(callId: string, follow: boolean, sink: LogSink, finished: Promise<void>, signal: AbortSignal): Promise<void> {
    const state = follow ? this.stateOf(callId) : this.calls.get(callId);
    const follower: Follower = { send: sink, dropped: 0, live: false };
    // Registered at once (not live yet), so that the call's state is kept while its first read waits.
    state?.followers.add(follower);
    const first = async () => {
      const kept = await this.store.readLogs(callId);
      if (signal.aborted) return;
      if (kept.droppedBytes) deliver(follower, droppedEntry(callId, kept.entries[0]?.attempt ?? 0, kept.droppedBytes, `the bridge keeps the newest ${this.keepBytes} bytes of a call's output`));
      for (const e of kept.entries) deliver(follower, e);
      for (const e of state?.pending ?? []) deliver(follower, e);
      follower.live = follow;
    };
    if (!state) return first();
    const read = state.chain.then(first);
    state.chain = read.catch(() => undefined);
    try {
      await read;
      if (!follow) return;
      await Promise.race([finished, new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }))]);
    } finally {
      state.followers.delete(follower);
      this.forgetIfIdle(callId, state);
    }
  }

  /** Writes what is pending (a closing bridge keeps what it can). */
  async close(): Promise<void> {
    const all = [...this.calls.entries()];
    for (const [id, s] of all) this.flush(id, s);
    this.closed = true;
    await Promise.all(all.map(([, s]) => s.chain));
  }

  private append(e: LogEntry): void {
    const state = this.stateOf(e.callId);
    for (const f of state.followers) if (f.live) deliver(f, e);
    state.pending.push(e);
    state.pendingBytes += e.data.length;
    if (state.pendingBytes > this.keepBytes) {
      // The store is slower than the function: keep the newest, as the store itself would.
      let dropped = 0;
      while (state.pendingBytes > this.keepBytes && state.pending.length > 1) {
        const old = state.pending.shift()!;
        state.pendingBytes -= old.data.length;
        dropped += old.droppedBytes || old.data.length;
      }
      const notice = droppedEntry(e.callId, e.attempt, dropped, 'the bridge could not store it as fast as it came');
      state.pending.unshift(notice);
      state.pendingBytes += notice.data.length;
    }
    if (state.pendingBytes >= FLUSH_BYTES) this.flush(e.callId, state);
    else state.timer ??= setTimeout(() => this.flush(e.callId, state), FLUSH_MS);
  }

  private flush(callId: string, state: CallLogs): void {
    clearTimeout(state.timer);
    state.timer = undefined;
    if (this.closed || !state.pending.length) return;
    state.chain = state.chain.then(async () => {
      const batch = state.pending;
      state.pending = [];
      state.pendingBytes = 0;
      if (!batch.length) return;
      try {
        await this.store.appendLogs(callId, batch, this.keepBytes);
      } catch (err) {
        this.log.warn({ call: callId, entries: batch.length, err: messageOf(err) }, "bridge: cannot write a call's output to the store; it is lost");
      }
    });
    void state.chain.then(() => this.forgetIfIdle(callId, state));
  }

  private stateOf(callId: string): CallLogs {
    let s = this.calls.get(callId);
    if (!s) {
      s = { pending: [], pendingBytes: 0, chain: Promise.resolve(), timer: undefined, followers: new Set() };
      this.calls.set(callId, s);
    }
    return s;
  }

  /** Memory is held only for calls with output on its way to the store, or followers. */
  private forgetIfIdle(callId: string, state: CallLogs): void {
    if (!state.pending.length && !state.timer && !state.followers.size && this.calls.get(callId) === state) this.calls.delete(callId);
  }
}

function deliver(f: Follower, e: LogEntry): void {
  if (f.dropped) {
    if (!f.send(droppedEntry(e.callId, e.attempt, f.dropped, 'this reader fell behind'))) {
      f.dropped += e.data.length;
      return;
    }
    f.dropped = 0;
  }
  if (!f.send(e)) f.dropped += e.data.length;
}
