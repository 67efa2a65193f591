/**
 * FetchPool: the threads that fetch, verify and write chunks (fetch-job.ts)
 * for the mount's disk cache, so that the thread answering FUSE only reads
 * cache files by range, and for `volume get`, so that the caller's thread
 * only plans. With `threads: 0` jobs run on the calling thread.
 *
 * - A job goes to the thread with the fewest jobs running; a thread runs
 *   several at once (their transfers overlap, their hashing does not), at
 *   most JOBS_PER_THREAD: each holds a chunk-sized buffer, so this bounds
 *   the memory of misses however many readers miss at once (the rest wait
 *   their turn).
 * - A thread that dies (an exception, or terminated by someone) fails its
 *   running jobs with an error saying so, and is replaced on the next job.
 * - Threads are unref'd: an idle pool does not keep a process alive; a
 *   running job's promise is what callers wait on.
 */
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import pLimit, { type LimitFunction } from 'p-limit';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { FailedPreconditionError, InternalError, InvalidArgumentError, messageOf } from '../common/errors.js';
import { runFetchJob, type FetchJob, type JobResult } from './fetch-job.js';
import type { JobMessage, ResultMessage } from './fetch-worker.js';

/**
 * Fetch threads when not told, at most 4. A mount leaves a core to the
 * thread answering FUSE (`busyCaller`): one per core but one, at least 1; on
 * 2 cores one thread read fastest (bench/README.md, mount-read's
 * --fetch-threads sweep). A download's own thread only plans: one per core
 * (2 threads got 1.15× the MB/s of 1 here).
 */
export function defaultFetchThreads(busyCaller: boolean): number {
  return Math.max(1, Math.min(4, availableParallelism() - (busyCaller ? 1 : 0)));
}

/** Jobs one thread (or the calling thread, with none) runs at once, by default. */
const JOBS_PER_THREAD = 4;

interface Thread {
  worker: Worker;
  running: Map<number, (r: JobResult | Error) => void>;
}

/** The compiled worker: beside this module in dist/, or dist's copy when this module runs from src/ (vitest). */
function workerFile(): string {
  const here = fileURLToPath(import.meta.url);
  if (here.endsWith('.js')) return here.replace(/fetch-pool\.js$/, 'fetch-worker.js');
  const built = here.replace(/\/src\/client\/fetch-pool\.ts$/, '/dist/src/client/fetch-worker.js');
  if (!existsSync(built)) throw new FailedPreconditionError(`the fetch thread's code is not built (${built}): run npm run build`);
  return built;
}

export class FetchPool {
  private readonly threads: (Thread | undefined)[];
  private readonly limit: LimitFunction;
  private nextId = 1;
  private closed = false;

  constructor(
    readonly size: number,
    jobsPerThread = JOBS_PER_THREAD,
  ) {
    if (!Number.isSafeInteger(size) || size < 0 || size > 64) throw new InvalidArgumentError(`fetch threads must be 0 to 64, got ${size}`);
    this.threads = new Array<Thread | undefined>(size).fill(undefined);
    this.limit = pLimit(Math.max(1, size) * jobsPerThread);
  }

  /** Runs `job` on the least busy thread (or here, with no threads). */
  run(job: FetchJob): Promise<JobResult> {
    return this.limit(() => this.dispatch(job));
  }

  private async dispatch(job: FetchJob): Promise<JobResult> {
    if (this.closed) throw new FailedPreconditionError('the fetch threads are closed');
    if (this.size === 0) return runFetchJob(job);
    const t = this.leastBusy();
    const id = this.nextId++;
    const done = new Promise<JobResult | Error>((resolve) => t.running.set(id, resolve));
    // The caller's bytes (a job with a bytes source) are copied: the caller may still use them.
    t.worker.postMessage({ id, job } satisfies JobMessage);
    const r = await done;
    if (r instanceof Error) throw r;
    return r;
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.threads.map((t) => t?.worker.terminate()));
  }

  private leastBusy(): Thread {
    let best = 0;
    for (let i = 0; i < this.threads.length; i++) {
      const t = this.threads[i];
      if (!t) return (this.threads[i] = this.spawn(i));
      if (t.running.size < this.threads[best]!.running.size) best = i;
    }
    return this.threads[best]!;
  }

  private spawn(slot: number): Thread {
    const worker = new Worker(workerFile());
    const t: Thread = { worker, running: new Map() };
    worker.unref();
    worker.on('message', (m: ResultMessage) => {
      const resolve = t.running.get(m.id);
      t.running.delete(m.id);
      resolve?.(m.result);
    });
    const fail = (why: string) => {
      if (this.threads[slot] === t) this.threads[slot] = undefined;
      for (const resolve of t.running.values()) resolve(new InternalError(`a chunk fetch thread stopped (${why}); the read is retried`));
      t.running.clear();
    };
    worker.on('error', (err) => fail(messageOf(err)));
    worker.on('exit', (code) => fail(`exit code ${code}`));
    return t;
  }
}
