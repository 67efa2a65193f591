/**
 * The entry of a fetch thread (fetch-pool.ts): runs the jobs its parent
 * posts, as many at once as arrive, and posts each result back under the
 * job's id. The bytes of an unstored chunk are moved, not copied.
 */
import { parentPort } from 'node:worker_threads';
import { runFetchJob, type FetchJob, type JobResult } from './fetch-job.js';

export interface JobMessage {
  id: number;
  job: FetchJob;
}

export interface ResultMessage {
  id: number;
  result: JobResult;
}

const port = parentPort;
if (!port) throw new Error('fetch-worker.js runs as a worker thread of a FetchPool');
port.on('message', (m: JobMessage) => {
  void runFetchJob(m.job).then((result) => {
    const moved = result.ok ? result.chunks.flatMap((c) => (c.status === 'unstored' ? [c.bytes.buffer as ArrayBuffer] : [])) : [];
    port.postMessage({ id: m.id, result } satisfies ResultMessage, moved);
  });
});
