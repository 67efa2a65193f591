/**
 * dict-queue: how fast stowage's dict and queue services are, next to
 * ioredis (plain and pipelined) and redis-benchmark on the same
 * redis-server, all in one run.
 *
 *   npm run bench:dict-queue -- [--quick] [--seconds 2.5] [--json-only]
 *
 * stowage runs twice, as servers in this process: (a) with its dicts and
 * queues in that redis-server (`redisUrl`, the like-for-like case) and (b) on
 * its embedded LMDB default. The SDK talks to them over gRPC on 127.0.0.1.
 * redis-server is started here on a free port and stopped by its PID, also
 * when the run fails or is interrupted; the temp directory is removed.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { ROOT, cleanUpOnSignal, hostInfo, load1, packageVersion, parseFlags } from '../volume-transfer/setup.js';
import { IoredisPeer } from './ioredis-peer.js';
import type { Measured, Timing } from './measure.js';
import { startRedis, type RedisServer } from '../../test/support/redis.js';
import { redisBenchmark, type RedisBenchmarkRow } from './redis.js';
import { CASE_INFO, compare, figure, fmt, round, table, type CaseName, type ContenderName, type Figure } from './report.js';
import { StowageContender } from './stowage.js';
import { BATCH, CALLERS, KEYS, QUEUE_BATCH, VALUE_BYTES } from './workload.js';

const USAGE = 'usage: node dist/bench/dict-queue/main.js [--quick] [--seconds S] [--json-only]';
const flags = parseFlags(
  {
    quick: { type: 'boolean', default: false },
    seconds: { type: 'string' },
    'json-only': { type: 'boolean', default: false },
  },
  USAGE,
);
const quick = flags.quick;
const timing: Timing = quick
  ? { seconds: 0.3, warmSeconds: 0.05, latencySamples: 300, wakeSamples: 30 }
  : { seconds: 2.5, warmSeconds: 0.3, latencySamples: 5000, wakeSamples: 200 };
if (flags.seconds !== undefined) {
  const s = Number(flags.seconds);
  if (!(s > 0)) {
    process.stderr.write(`--seconds must be a positive number, not ${flags.seconds}\n${USAGE}\n`);
    process.exit(2);
  }
  timing.seconds = s;
}
/** redis-benchmark request counts scale with the run's length. */
const rbScale = quick ? 0.1 : 1;
const jsonOnly = flags['json-only'];
const say = (msg: string) => {
  if (!jsonOnly) process.stderr.write(`${msg}\n`);
};

const tmp = (() => {
  const base = join(tmpdir(), 'stowage-bench');
  mkdirSync(base, { recursive: true });
  return mkdtempSync(join(base, 'dict-queue-'));
})();
let redis: RedisServer | undefined;
let onRedis: StowageContender | undefined;
let onLmdb: StowageContender | undefined;
let peer: IoredisPeer | undefined;

let cleaning: Promise<void> | undefined;
/** Stops everything this run started (once, however often it is called) and removes the temp directory. */
function cleanUp(): Promise<void> {
  cleaning ??= (async () => {
    await peer?.close().catch(() => undefined);
    await onRedis?.stop().catch(() => undefined);
    await onLmdb?.stop().catch(() => undefined);
    await redis?.stop().catch(() => undefined);
    rmSync(tmp, { recursive: true, force: true });
  })();
  return cleaning;
}

const signals = cleanUpOnSignal(cleanUp, say, `stopping redis-server and removing ${tmp}`);

async function main(): Promise<void> {
  const started = performance.now();
  // Taken first: the commit (and dirtiness) closest to the build being measured.
  const machine0 = machineInfo();
  const redisDir = join(tmp, 'redis');
  mkdirSync(redisDir);
  redis = await startRedis(redisDir);
  onRedis = await StowageContender.start(join(tmp, 'stowage-redis'), redis.url);
  onLmdb = await StowageContender.start(join(tmp, 'stowage-lmdb'));
  peer = new IoredisPeer(redis.url);
  await peer.ready();
  say(
    `redis-server ${redis.version} pid ${redis.pid} on port ${redis.port}; stowage (redis) at ${onRedis.address}, ` +
      `stowage (lmdb) at ${onLmdb.address} (${onLmdb.state}); ${timing.seconds} s a case${quick ? ' (quick)' : ''}`,
  );
  await Promise.all([onRedis.fill(), onLmdb.fill(), peer.fill()]);

  const figures: Figure[] = [];
  const redisPid = redis.pid;
  const run = async (kase: CaseName, who: ContenderName, how: string, fn: () => Promise<Measured>) => {
    const loadBefore = load1();
    const cpu0 = { process: processCpu(), redis: pidCpu(redisPid) };
    const m = await fn();
    const cpu = { process: round(processCpu() - cpu0.process, 2), redis: round(pidCpu(redisPid) - cpu0.redis, 2) };
    const f = figure(kase, who, how, m, { cpu, loadBefore });
    figures.push(f);
    const value = f.perSec !== undefined ? `${fmt(f.perSec, 0)} ${CASE_INFO[kase].unit}` : `p50 ${fmt(f.p50Ms!, 3)} ms, p99 ${fmt(f.p99Ms!, 3)} ms`;
    const missing = typeof f.detail?.missing === 'number' && f.detail.missing > 0 ? `; ${f.detail.missing} MISSING` : '';
    say(`  ${kase.padEnd(20)} ${who.padEnd(18)} ${value.padEnd(34)} cpu: process ${cpu.process.toFixed(1)} s, redis ${cpu.redis.toFixed(1)} s; load ${loadBefore}${missing}`);
  };

  const ours: [ContenderName, StowageContender][] = [['stowage-redis', onRedis], ['stowage-lmdb', onLmdb]];
  const p = peer;
  say('dict');
  for (const [who, s] of ours) await run('dict-put-1', who, 'await d.put(k, v)', () => s.put(timing, 1));
  await run('dict-put-1', 'ioredis', 'await SET', () => p.put(timing, 1, false));
  for (const [who, s] of ours) await run('dict-get-1', who, 'await d.get(k)', () => s.get(timing, 1));
  await run('dict-get-1', 'ioredis', 'await GET', () => p.get(timing, 1, false));
  for (const [who, s] of ours) await run('dict-put-64', who, `${CALLERS} callers of await d.put(k, v) (SDK batches)`, () => s.put(timing, CALLERS));
  await run('dict-put-64', 'ioredis', `${CALLERS} callers of await SET`, () => p.put(timing, CALLERS, false));
  await run('dict-put-64', 'ioredis-pipelined', `${CALLERS} callers of await SET, enableAutoPipelining`, () => p.put(timing, CALLERS, true));
  for (const [who, s] of ours) await run('dict-get-64', who, `${CALLERS} callers of await d.get(k) (SDK batches)`, () => s.get(timing, CALLERS));
  await run('dict-get-64', 'ioredis', `${CALLERS} callers of await GET`, () => p.get(timing, CALLERS, false));
  await run('dict-get-64', 'ioredis-pipelined', `${CALLERS} callers of await GET, enableAutoPipelining`, () => p.get(timing, CALLERS, true));
  for (const [who, s] of ours) await run('dict-update', who, `d.update(Map of ${BATCH})`, () => s.update(timing));
  await run('dict-update', 'ioredis', `MSET of ${BATCH}`, () => p.update(timing, false));
  await run('dict-update', 'ioredis-pipelined', `pipeline() of ${BATCH} SET`, () => p.update(timing, true));
  for (const [who, s] of ours) await run('dict-getmany', who, `d.getMany(${BATCH} keys)`, () => s.getMany(timing));
  await run('dict-getmany', 'ioredis', `MGET of ${BATCH}`, () => p.getMany(timing, false));
  await run('dict-getmany', 'ioredis-pipelined', `pipeline() of ${BATCH} GET`, () => p.getMany(timing, true));
  for (const [who, s] of ours) await run('dict-get-latency', who, 'one await d.get(k) at a time', () => s.getLatency(timing.latencySamples));
  await run('dict-get-latency', 'ioredis', 'one await GET at a time', () => p.getLatency(timing.latencySamples));

  say('queue');
  for (const [who, s] of ours) await run('queue-batch', who, `q.putMany(${QUEUE_BATCH}) then q.getMany(${QUEUE_BATCH})`, () => s.queueBatch(timing));
  await run('queue-batch', 'ioredis', `RPUSH of ${QUEUE_BATCH} values then LPOP count ${QUEUE_BATCH}`, () => p.queueBatch(timing, false));
  await run('queue-batch', 'ioredis-pipelined', `pipeline() of ${QUEUE_BATCH} RPUSH then one of ${QUEUE_BATCH} LPOP`, () => p.queueBatch(timing, true));
  for (const [who, s] of ours) await run('queue-64', who, `${CALLERS} callers of await q.put(v); await q.get()`, () => s.queueSingles(timing, CALLERS));
  await run('queue-64', 'ioredis', `${CALLERS} callers of await RPUSH; await LPOP`, () => p.queueSingles(timing, CALLERS, false));
  await run('queue-64', 'ioredis-pipelined', `${CALLERS} callers of await RPUSH; await LPOP, enableAutoPipelining`, () =>
    p.queueSingles(timing, CALLERS, true),
  );
  for (const [who, s] of ours) {
    await run('queue-64-nonblocking', who, `${CALLERS} callers of await q.put(v); await q.get({ block: false })`, () =>
      s.queueSingles(timing, CALLERS, false),
    );
  }
  for (const [who, s] of ours) await run('queue-wake', who, 'q.get() blocked; q.put(v) from a 2nd connection', () => s.wake(timing.wakeSamples));
  await run('queue-wake', 'ioredis', 'BLPOP blocked; RPUSH from a 2nd connection', () => p.wake(timing.wakeSamples));

  say('redis-benchmark');
  await runRedisBenchmark(figures);

  const { ratios, aims } = compare(figures);
  const result = {
    benchmark: 'dict-queue',
    date: new Date().toISOString(),
    quick,
    machine: { ...machine0, redis: redis.version },
    settings: {
      timing,
      keys: KEYS,
      valueBytes: VALUE_BYTES,
      dictBatch: BATCH,
      queueBatch: QUEUE_BATCH,
      callers: CALLERS,
      encoding: 'msgpack (SDK default)',
      stowage: 'servers in this process (startServer, port 0), SDK over gRPC on 127.0.0.1; (redis) redisUrl = the same redis-server; (lmdb) embedded default',
      redis: 'redis-server started by the benchmark: --save "" --appendonly no, 127.0.0.1',
    },
    figures,
    ratios,
    aims,
    totalSeconds: Math.round((performance.now() - started) / 1000),
  };
  const resultsDir = join(ROOT, 'bench', 'results');
  mkdirSync(resultsDir, { recursive: true });
  const path = join(resultsDir, `dict-queue-${result.date.slice(0, 19).replace(/:/g, '-')}Z.json`);
  writeFileSync(path, `${JSON.stringify(result, null, 2)}\n`);
  if (jsonOnly) {
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    process.stderr.write(`${path}\n`);
    return;
  }
  const m = result.machine;
  process.stdout.write(
    `\ndict-queue on ${m.cpus} × ${m.cpuModel}, node ${m.node}, redis-server ${m.redis}, ioredis ${m.ioredis}; ` +
      `${VALUE_BYTES}-byte values, ${timing.seconds} s a case${quick ? ' (quick)' : ''}. ` +
      `Throughput ratios: ours ÷ peer (above 1: stowage faster); latency ratios (p50/p99): ours ÷ peer (below 1: stowage faster)\n\n` +
      `${table(figures, ratios, aims)}\n\nresults: ${path} (run took ${result.totalSeconds} s)\n`,
  );
}

/** redis-benchmark on the same redis-server, shaped like the cases: callers = -c, batch = -P. */
async function runRedisBenchmark(figures: Figure[]): Promise<void> {
  const port = redis!.port;
  const n = (x: number) => Math.max(1000, Math.round(x * rbScale));
  const base = { valueBytes: VALUE_BYTES, keys: KEYS };
  const add = (kase: CaseName, args: string[], row: RedisBenchmarkRow, latency = false) => {
    const how = `redis-benchmark ${args.join(' ')} (${row.test})`;
    const f: Figure = latency
      ? { case: kase, contender: 'redis-benchmark', how, p50Ms: row.p50Ms, p99Ms: row.p99Ms }
      : { case: kase, contender: 'redis-benchmark', how, perSec: Math.round(row.rps) };
    figures.push(f);
    say(`  ${kase.padEnd(20)} redis-benchmark    ${row.test} ${fmt(row.rps, 0)} req/s, p50 ${row.p50Ms} ms, p99 ${row.p99Ms} ms`);
  };
  const find = (rows: RedisBenchmarkRow[], test: string) => {
    const r = rows.find((x) => x.test === test);
    if (!r) throw new Error(`redis-benchmark gave no ${test} figures`);
    return r;
  };
  /** A message put and got: one RPUSH and one LPOP, so the rate of pairs. */
  const pairs = (rows: RedisBenchmarkRow[]): RedisBenchmarkRow => {
    const push = find(rows, 'RPUSH');
    const pop = find(rows, 'LPOP');
    return { test: 'RPUSH+LPOP', rps: 1 / (1 / push.rps + 1 / pop.rps), p50Ms: Number.NaN, p99Ms: Number.NaN };
  };

  const single = await redisBenchmark(port, { ...base, tests: 'set,get', requests: n(40_000), clients: 1, pipeline: 1 });
  add('dict-put-1', single.args, find(single.rows, 'SET'));
  add('dict-get-1', single.args, find(single.rows, 'GET'));
  add('dict-get-latency', single.args, find(single.rows, 'GET'), true);
  const many = await redisBenchmark(port, { ...base, tests: 'set,get', requests: n(100_000), clients: CALLERS, pipeline: 1 });
  add('dict-put-64', many.args, find(many.rows, 'SET'));
  add('dict-get-64', many.args, find(many.rows, 'GET'));
  const batched = await redisBenchmark(port, { ...base, tests: 'set,get', requests: n(1_000_000), clients: 1, pipeline: BATCH });
  add('dict-update', batched.args, find(batched.rows, 'SET'));
  add('dict-getmany', batched.args, find(batched.rows, 'GET'));
  const qBatched = await redisBenchmark(port, { ...base, tests: 'rpush,lpop', requests: n(500_000), clients: 1, pipeline: QUEUE_BATCH });
  add('queue-batch', qBatched.args, pairs(qBatched.rows));
  const qMany = await redisBenchmark(port, { ...base, tests: 'rpush,lpop', requests: n(100_000), clients: CALLERS, pipeline: 1 });
  add('queue-64', qMany.args, pairs(qMany.rows));
}

/** CPU seconds (user + system) of this process so far. */
function processCpu(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout) || 100;

/** CPU seconds (user + system) of another process so far, from /proc (NaN elsewhere). */
function pidCpu(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
    return (f[11]! + f[12]!) / CLOCK_TICKS;
  } catch {
    return Number.NaN;
  }
}

function machineInfo() {
  return {
    ...hostInfo(),
    ioredis: packageVersion('ioredis'),
    grpcJs: packageVersion('@grpc/grpc-js'),
    lmdb: packageVersion('lmdb'),
  };
}

main().then(
  () => cleanUp(),
  async (err: unknown) => {
    // Interrupted: the signal handler is stopping everything, and the calls it cut short fail.
    if (signals.interrupted()) return;
    process.stderr.write(`dict-queue failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    await cleanUp();
    process.exitCode = 1;
  },
);
