/**
 * The peer: a job queue on Redis, the pattern RQ, Celery and BullMQ use.
 * One redis-server (test/support/redis.ts: a free 127.0.0.1 port, `--save ''
 * --appendonly no --daemonize yes`, a pidfile, stopped by PID) and
 * workers × slots worker processes (peer-worker.ts, forked), each blocking on
 * BRPOP jobs, running the fixture's `echo` and LPUSHing the result to the
 * list the job names. The caller: LPUSH jobs + BRPOP result:<id> for one call
 * (sent together); for a map, LPUSHes pipelined 1,000 to a round trip while
 * another connection collects from one results list (BRPOP, then RPOP of up
 * to 1,000 at once), results put back in input order.
 */
import { decode, encode } from '@msgpack/msgpack';
import { Redis } from 'ioredis';
import { fork, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startRedis, type RedisServer } from '../../test/support/redis.js';
import { track } from '../volume-transfer/setup.js';
import { within, type Side } from './measure.js';
import { FIXTURE } from './ours.js';

const PEER_WORKER = join(dirname(fileURLToPath(import.meta.url)), 'peer-worker.js');
/** The list peer-worker.ts blocks on. */
const JOBS = 'jobs';
const BATCH = 1000;

export async function startPeer(o: { tmp: string; workers: number; slots: number; cleanups: Set<() => Promise<void>> }): Promise<Side & { redisVersion: string }> {
  let redis: RedisServer | undefined;
  const procs: ChildProcess[] = [];
  const conns: Redis[] = [];
  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      for (const c of conns) c.disconnect();
      await Promise.all(
        procs.map(
          (p) =>
            new Promise<void>((resolve) => {
              if (p.exitCode !== null || p.signalCode !== null) return resolve();
              p.once('exit', () => resolve());
              p.kill('SIGKILL');
            }),
        ),
      );
      await redis?.stop();
    })());
  o.cleanups.add(stop);

  try {
    const dir = join(o.tmp, 'redis');
    mkdirSync(dir, { recursive: true });
    redis = await startRedis(dir);
    const url = redis.url;
    for (let i = 0; i < o.workers * o.slots; i++) {
      const p = track(fork(PEER_WORKER, [url, FIXTURE], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] }));
      procs.push(p);
      await within(
        60_000,
        `peer worker ${i + 1}`,
        new Promise<void>((resolve, reject) => {
          p.once('message', () => resolve());
          p.once('exit', (code) => reject(new Error(`peer worker ${i + 1} exited with ${code}`)));
        }),
      );
    }
    const submit = new Redis(url);
    const collect = new Redis(url);
    conns.push(submit, collect);
    for (const c of conns) c.on('error', () => {}); // a failure reaches the command that meets it
    const server = redis;
    return {
      describe: `redis-server ${redis.version} (no persistence) and ${o.workers * o.slots} Node worker processes on BRPOP (ioredis)`,
      redisVersion: redis.version,
      cpuRoots: () => ({ server: [server.pid], workers: procs.map((p) => p.pid!) }),
      async call(x) {
        const id = randomUUID();
        const reply = `result:${id}`;
        const [, got] = await Promise.all([submit.lpush(JOBS, Buffer.from(encode([id, reply, x]))), collect.brpopBuffer(reply, 0)]);
        const [rid, value] = decode(got![1]) as [string, unknown];
        if (rid !== id) throw new Error(`asked for ${id}, got ${rid}`);
        return value;
      },
      async map(xs, onFirst) {
        const reply = `results:${randomUUID()}`;
        const ids = xs.map(() => randomUUID());
        const index = new Map<string, number>(ids.map((id, i) => [id, i]));
        const sent = (async () => {
          for (let i = 0; i < xs.length; i += BATCH) {
            const p = submit.pipeline();
            for (let j = i; j < Math.min(i + BATCH, xs.length); j++) p.lpush(JOBS, Buffer.from(encode([ids[j], reply, xs[j]])));
            await p.exec();
          }
        })();
        const out = new Array<unknown>(xs.length);
        let got = 0;
        const take = (buf: Buffer) => {
          const [id, value] = decode(buf) as [string, unknown];
          const i = index.get(id);
          if (i === undefined) throw new Error(`a result for a call not made: ${id}`);
          out[i] = value;
          got++;
        };
        while (got < xs.length) {
          const first = await collect.brpopBuffer(reply, 0);
          if (got === 0) onFirst();
          take(first![1]);
          for (const b of (await collect.rpopBuffer(reply, BATCH)) ?? []) take(b);
        }
        await sent;
        return out;
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
