/**
 * What a call's function wrote to its stdout and stderr:
 *
 *   const call = await fn.spawn(3);
 *   for await (const e of call.logs({ follow: true })) process.stderr.write(e.data);
 *
 * The bridge keeps the newest 1 MiB of each call's output (older output is
 * dropped: an entry with `droppedBytes` says how much), for as long as it
 * keeps the call's result. Without `follow` the iteration ends with what is
 * kept now; with it, it goes on with new output as the function writes it and
 * ends when the call finishes. Output is not reassembled into lines: each
 * entry is a run of bytes as the worker read it, in order.
 */
import { LogStream, type LogEntry } from '../gen/stowage/v1/bridge.js';
import type { Connection } from './connection.js';

export interface CallOutput {
  stream: 'stdout' | 'stderr';
  data: Buffer;
  /** When the worker read it. */
  atMs: number;
  /** The attempt that wrote it (a call retried on another worker has output of each). */
  attempt: number;
  /** Not 0 for an entry standing for output that was dropped here (data is a line saying so). */
  droppedBytes: number;
}

export interface LogsOptions {
  /** Go on with new output until the call finishes (default false). */
  follow?: boolean;
  /** Stops the iteration (it ends without an error). */
  signal?: AbortSignal;
}

/** The output of call `callId`; NotFoundError when the bridge does not know the call. */
export async function* callLogs(connection: Connection, callId: string, opts: LogsOptions = {}): AsyncIterable<CallOutput> {
  if (opts.signal?.aborted) return;
  const call = connection.bridge.watchLogs({ callId, follow: opts.follow ?? false });
  const stop = () => call.cancel();
  opts.signal?.addEventListener('abort', stop, { once: true });
  try {
    for await (const e of connection.stream<LogEntry>(call)) yield outputOf(e);
  } catch (err) {
    if (!opts.signal?.aborted) throw err;
  } finally {
    opts.signal?.removeEventListener('abort', stop);
  }
}

function outputOf(e: LogEntry): CallOutput {
  return {
    stream: e.stream === LogStream.LOG_STREAM_STDOUT ? 'stdout' : 'stderr',
    data: Buffer.from(e.data),
    atMs: e.atMs,
    attempt: e.attempt,
    droppedBytes: e.droppedBytes,
  };
}
