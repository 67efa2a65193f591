/**
 * One worker of the peer (peer.ts), as RQ, Celery or BullMQ run them: a
 * process that blocks on the Redis list `jobs` (BRPOP), runs the function the
 * job names on its argument, and pushes the result to the list the job says
 * (LPUSH). Jobs and results are msgpack, as ours are: a job is
 * [id, replyList, argument], a result [id, value].
 *
 *   node dist/bench/calls/peer-worker.js <redis-url> <fixture.mjs>   (forked by peer.ts)
 */
import { decode, encode } from '@msgpack/msgpack';
import { Redis } from 'ioredis';
import { pathToFileURL } from 'node:url';

/** The job list; peer.ts pushes to the same name. */
const JOBS = 'jobs';

async function main(): Promise<void> {
  const [url, fixture] = process.argv.slice(2);
  if (!url || !fixture) throw new Error('usage: peer-worker.js <redis-url> <fixture.mjs>');
  const { echo } = (await import(pathToFileURL(fixture).href)) as { echo: (x: unknown) => unknown };
  const redis = new Redis(url, { maxRetriesPerRequest: null });
  redis.on('error', () => {}); // a lost connection ends the process below (its parent is stopping it)
  // The parent gone (its IPC channel closed): nothing left to serve.
  process.on('disconnect', () => process.exit(0));
  process.once('SIGTERM', () => process.exit(0));
  await redis.ping();
  process.send?.('ready');
  for (;;) {
    const job = await redis.brpopBuffer(JOBS, 0);
    if (!job) continue;
    const [id, reply, arg] = decode(job[1]) as [string, string, unknown];
    const value = await echo(arg);
    await redis.lpush(reply, Buffer.from(encode([id, value])));
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`peer worker: ${(err as Error).message}\n`);
  process.exit(1);
});
