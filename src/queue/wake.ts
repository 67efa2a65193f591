/**
 * Wake-ups for blocked gets: both backends emit `partitionEvent(name,
 * partition)` on an EventEmitter when items are put (LMDB in process, Redis
 * from its pub/sub channel, whose messages carry the same string); and the
 * abortable pause blocked gets and puts wait with between tries.
 */
import type { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';

export function partitionEvent(name: string, partition: string): string {
  return `${name}\n${partition}`;
}

/** Resolves on the next put to that partition, or when `signal` aborts. */
export function waitForPut(events: EventEmitter, name: string, partition: string, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const event = partitionEvent(name, partition);
    const done = () => {
      events.off(event, done);
      signal.removeEventListener('abort', done);
      resolve();
    };
    if (signal.aborted) return resolve();
    events.on(event, done);
    signal.addEventListener('abort', done);
  });
}

/** Resolves after `ms` or when `signal` aborts, whichever is first; never rejects, never keeps the process alive. */
export function pause(ms: number, signal: AbortSignal): Promise<void> {
  return sleep(ms, undefined, { signal, ref: false }).catch(() => undefined);
}
