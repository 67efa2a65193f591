/**
 * Ships the output of the worker's calls to the bridge (LogBatch on the Work
 * stream), in order, without ever making a function wait for the bridge.
 *
 * Output read from a runner's pipes is appended to its call's pending
 * entries at once (the pipes are always read, so a function never blocks on
 * a full pipe). Every FLUSH_MS, and whenever a call has FLUSH_BYTES pending,
 * pending entries are sent, unless the stream has more buffered than it
 * wants (writableNeedDrain: the bridge or the network is slow) or is down.
 * Each call may have MAX_PENDING_BYTES pending; beyond that its oldest
 * pending output is dropped (the newest is what tells how a call ended), and
 * one entry saying how many bytes were dropped takes their place in the
 * order. When an attempt ends, what is pending for
 * it is sent before its outcome, whatever the stream's buffer (it is bounded
 * by MAX_PENDING_BYTES); while the stream is down it waits for the next
 * registration, which sends it before the outcomes kept for the bridge.
 */
import { LogStream, type LogEntry } from '../gen/stowage/v1/bridge.js';
import type { OutputSink } from './output.js';

export const MAX_PENDING_BYTES = 1024 * 1024;
const FLUSH_MS = 100;
const FLUSH_BYTES = 64 * 1024;
/** Largest entry (consecutive writes to one stream are merged up to this). */
const ENTRY_BYTES = 64 * 1024;
/** Largest LogBatch message. */
const BATCH_BYTES = 256 * 1024;

/** The Work stream as the shipper sees it. */
export interface LogLink {
  /** Whether a message can be sent now: registered, and (unless `force`) the stream's buffer is not full. */
  ready(force: boolean): boolean;
  send(entries: LogEntry[]): void;
}

interface CallOutput {
  callId: string;
  attempt: number;
  pending: LogEntry[];
  bytes: number;
  dropped: number;
  ended: boolean;
}

export class LogShipper {
  private readonly calls = new Map<string, CallOutput>();
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly link: LogLink) {
    this.timer = setInterval(() => this.flush(false), FLUSH_MS);
  }

  /** Where the output of an attempt goes while it runs. */
  sink(callId: string, attempt: number): OutputSink {
    const c: CallOutput = { callId, attempt, pending: [], bytes: 0, dropped: 0, ended: false };
    this.calls.set(keyOf(callId, attempt), c);
    return (stream, data) => {
      if (c.ended) return;
      while (c.pending.length && c.bytes + data.length > MAX_PENDING_BYTES) {
        const old = c.pending.shift()!;
        if (!old.droppedBytes) c.bytes -= old.data.length;
        c.dropped += old.droppedBytes || old.data.length;
      }
      const s = stream === 'stdout' ? LogStream.LOG_STREAM_STDOUT : LogStream.LOG_STREAM_STDERR;
      const last = c.pending[c.pending.length - 1];
      if (last && last.stream === s && !last.droppedBytes && last.data.length + data.length <= ENTRY_BYTES) {
        last.data = Buffer.concat([last.data, data]);
      } else {
        c.pending.push({ callId, attempt, stream: s, data: Buffer.from(data), atMs: Date.now(), droppedBytes: 0 });
      }
      c.bytes += data.length;
      if (c.bytes >= FLUSH_BYTES) this.flushCall(c, false);
    };
  }

  /** The attempt is over: what is pending for it is sent now (or at the next registration). */
  end(callId: string, attempt: number): void {
    const c = this.calls.get(keyOf(callId, attempt));
    if (!c) return;
    c.ended = true;
    this.flushCall(c, true);
  }

  /** Sends what is pending; `force` (after a registration) ignores the stream's buffer. */
  flush(force: boolean): void {
    for (const c of [...this.calls.values()]) this.flushCall(c, force || c.ended);
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private flushCall(c: CallOutput, force: boolean): void {
    if (c.dropped && this.link.ready(force)) {
      // Where the dropped output was: before what is still pending.
      const line = `[stowage: ${c.dropped} bytes of output dropped: the worker had ${MAX_PENDING_BYTES} bytes of this call's output waiting for the bridge]\n`;
      c.pending.unshift({ callId: c.callId, attempt: c.attempt, stream: LogStream.LOG_STREAM_STDERR, data: Buffer.from(line), atMs: Date.now(), droppedBytes: c.dropped });
      c.dropped = 0;
    }
    while (c.pending.length && this.link.ready(force)) {
      let size = 0;
      let n = 0;
      while (n < c.pending.length && (n === 0 || size + c.pending[n]!.data.length <= BATCH_BYTES)) size += c.pending[n++]!.data.length;
      const batch = c.pending.splice(0, n);
      this.link.send(batch);
      // Notices of dropped output are not counted in `bytes`.
      for (const e of batch) if (!e.droppedBytes) c.bytes -= e.data.length;
    }
    if (c.ended && !c.pending.length) this.calls.delete(keyOf(c.callId, c.attempt));
  }
}

const keyOf = (callId: string, attempt: number) => `${callId}#${attempt}`;
