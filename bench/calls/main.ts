/**
 * calls: what one call on the compute bridge costs, against a Redis job
 * queue (the pattern of RQ, Celery and BullMQ) on the same machine in the
 * same run, with the same number of worker processes.
 *
 *   npm run bench:calls -- [--quick] [--calls 300] [--map 5000] [--workers 2] [--slots 2] [--json-only]
 *
 * Ours (ours.ts): `stowage serve` on the embedded default (local directory +
 * LMDB) as a child process, `--workers` `stowage worker` processes with
 * `--slots` slots each, and the SDK in this process. The peer (peer.ts):
 * redis-server without persistence and workers × slots Node processes on
 * BRPOP. Both run the same no-op (fixture.mjs `echo`), msgpack on the wire.
 *
 * 1. No-op latency: `fn.remote(i)` one after another, `--calls` times after
 *    a warm-up (peer: LPUSH jobs + BRPOP result:<id>): p50, p99, mean.
 * 2. Map throughput: one map of `--map` inputs (`for await … of fn.map(xs)`;
 *    peer: pipelined LPUSHes and a collector), after a warm-up map that
 *    starts every runner: calls/s and the time to the first result.
 * Before 1, idle CPU (ms per second) of each part over a few seconds without
 *    calls, after the warm-up: what the latency phase's CPU figures sit on
 *    (heartbeats, leases, timers), since that phase is mostly waiting.
 * 3. CPU per 1,000 calls, in each part: the server (stowage serve;
 *    redis-server), the workers (each worker's process tree: runners, and
 *    mounts if any; the peer's worker processes), the caller (this process).
 *    From /proc/PID/stat (utime + stime, and what reaped children used) of
 *    each tree before and after.
 *
 * Read the ratios knowing what the peer leaves out. Before Submit answers,
 * stowage has written each call to LMDB (a call survives a server restart);
 * it places each call on a worker by the data the call reads (none here) and
 * the worker's free slots; a worker acknowledges each outcome, and a call
 * whose worker is lost runs again elsewhere (at least once); a call can be
 * retried with backoff, cancelled, time out, and be looked up by id
 * afterwards; workers register and renew a lease, and fetch the function's
 * code from a volume. The peer's job lives only in Redis memory (no AOF, no
 * RDB), is popped by whichever worker asks first, and is gone if that worker
 * dies with it; no job record, no retry, no timeout, no acknowledgement.
 * RQ, Celery and BullMQ each add some of this (job hashes, visibility
 * timeouts, ack lists), and their cost, on top of this bare pattern.
 *
 * Everything runs in one temp directory under $TMPDIR/stowage-bench/, removed
 * at the end; every process started (the server, workers and their runners,
 * redis-server, the peer's workers) is stopped by PID, also on failure and on
 * SIGINT/SIGTERM. Each side is stopped before the other starts.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, hostInfo, load1, packageVersion, parseFlags, runScratch, wholeFlag } from '../volume-transfer/setup.js';
import { measureIdle, measureLatency, measureMap, round, within, type IdleFigures, type LatencyFigures, type MapFigures, type Side } from './measure.js';
import { startOurs } from './ours.js';
import { startPeer } from './peer.js';

const USAGE = 'usage: node dist/bench/calls/main.js [--quick] [--calls 300] [--map 5000] [--workers 2] [--slots 2] [--json-only]';
const flags = parseFlags(
  {
    quick: { type: 'boolean', default: false },
    calls: { type: 'string' },
    map: { type: 'string' },
    workers: { type: 'string', default: '2' },
    slots: { type: 'string', default: '2' },
    'json-only': { type: 'boolean', default: false },
  },
  USAGE,
);
const whole = (name: string, v: string | undefined, min: number) => wholeFlag(name, v, min, USAGE);
const calls = whole('calls', flags.calls ?? (flags.quick ? '50' : '300'), 1);
const mapSize = whole('map', flags.map ?? (flags.quick ? '500' : '5000'), 1);
const workers = whole('workers', flags.workers, 1);
const slots = whole('slots', flags.slots, 1);
const jsonOnly = flags['json-only'];
const WARM_CALLS = 20;
const IDLE_SECONDS = flags.quick ? 2 : 5;
/** No phase may take longer: a hung call fails the run instead of hanging it. */
const PHASE_MS = 10 * 60_000;

const say = (msg: string) => {
  if (!jsonOnly) process.stderr.write(`${msg}\n`);
};

const { tmp, cleanups, cleanUp, interrupted } = runScratch('calls', say, (dir) => `stopping the server, workers and redis-server, removing ${dir}`);

interface SideFigures {
  describe: string;
  idle: IdleFigures;
  latency: LatencyFigures;
  map: MapFigures;
}

async function run(name: string, side: Side): Promise<SideFigures> {
  say(`${name}: ${side.describe}`);
  for (let i = 0; i < WARM_CALLS; i++) await within(PHASE_MS, `${name} warm-up call`, side.call(i));
  const idle = await measureIdle(side, IDLE_SECONDS);
  say(`${name}: idle CPU ms/s: server ${idle.msPerSecond.server}, workers ${idle.msPerSecond.workers}, caller ${idle.msPerSecond.caller}`);
  say(`${name}: ${calls} no-op calls one after another (load ${load1()}) …`);
  const latency = await within(PHASE_MS, `${name} latency`, measureLatency(side, calls));
  say(`${name}: p50 ${latency.p50Ms} ms, p99 ${latency.p99Ms} ms, mean ${latency.meanMs} ms`);
  // A warm-up map as wide as every slot, a few times over, so that every runner has started.
  await within(PHASE_MS, `${name} warm-up map`, side.map(Array.from({ length: 4 * workers * slots }, (_, i) => i), () => undefined));
  say(`${name}: a map of ${mapSize} no-op calls (load ${load1()}) …`);
  const map = await within(PHASE_MS, `${name} map`, measureMap(side, mapSize));
  say(`${name}: ${map.callsPerSecond} calls/s, first result after ${map.firstResultMs} ms`);
  return { describe: side.describe, idle, latency, map };
}

async function main(): Promise<void> {
  say(`calls: ${calls} sequential calls, a map of ${mapSize}, ${workers} workers × ${slots} slots; temp ${tmp}`);
  const load1AtStart = load1();
  const oursSide = await startOurs({ tmp, workers, slots, cleanups });
  const ours = await run('ours', oursSide);
  await oursSide.stop();
  const peerSide = await startPeer({ tmp, workers, slots, cleanups });
  const peer = await run('peer', peerSide);
  await peerSide.stop();
  const load1AtEnd = load1();

  const ratio = (a: number, b: number) => round(a / b, 2);
  const ratios = {
    latencyP50: ratio(ours.latency.p50Ms, peer.latency.p50Ms),
    latencyP99: ratio(ours.latency.p99Ms, peer.latency.p99Ms),
    latencyMean: ratio(ours.latency.meanMs, peer.latency.meanMs),
    mapCallsPerSecond: ratio(ours.map.callsPerSecond, peer.map.callsPerSecond),
    mapFirstResult: ratio(ours.map.firstResultMs, peer.map.firstResultMs),
    cpuPer1000Latency: ratio(ours.latency.cpuPer1000.total, peer.latency.cpuPer1000.total),
    cpuPer1000Map: ratio(ours.map.cpuPer1000.total, peer.map.cpuPer1000.total),
  };
  const result = {
    benchmark: 'calls',
    date: new Date().toISOString(),
    host: hostInfo(),
    load1AtStart,
    load1AtEnd,
    setup: { idleSeconds: IDLE_SECONDS, calls, warmUpCalls: WARM_CALLS, mapSize, workers, slotsPerWorker: slots, ioredis: packageVersion('ioredis') },
    ours,
    peer,
    ratios,
  };

  // A part that used no CPU tick (10 ms) has no ratio.
  const row = (label: string, a: number, b: number, r: number) =>
    `${label.padEnd(34)}${String(a).padStart(10)}${String(b).padStart(10)}${(Number.isFinite(r) ? String(r) : '—').padStart(12)}`;
  const cpuRows = (phase: string, a: SideFigures['latency']['cpuPer1000'], b: SideFigures['latency']['cpuPer1000']) =>
    (['server', 'workers', 'caller', 'total'] as const).map((k) => row(`  ${phase} CPU s/1,000 calls: ${k}`, a[k], b[k], ratio(a[k], b[k])));
  const lines = [
    '',
    `${'figure'.padEnd(34)}${'ours'.padStart(10)}${'peer'.padStart(10)}${'ours/peer'.padStart(12)}`,
    ...(['server', 'workers', 'caller'] as const).map((k) => row(`idle CPU ms per s: ${k}`, ours.idle.msPerSecond[k], peer.idle.msPerSecond[k], ratio(ours.idle.msPerSecond[k], peer.idle.msPerSecond[k]))),
    row('no-op latency p50 ms', ours.latency.p50Ms, peer.latency.p50Ms, ratios.latencyP50),
    row('no-op latency p99 ms', ours.latency.p99Ms, peer.latency.p99Ms, ratios.latencyP99),
    row('no-op latency mean ms', ours.latency.meanMs, peer.latency.meanMs, ratios.latencyMean),
    ...cpuRows('latency', ours.latency.cpuPer1000, peer.latency.cpuPer1000),
    row(`map of ${mapSize}: calls/s`, ours.map.callsPerSecond, peer.map.callsPerSecond, ratios.mapCallsPerSecond),
    row(`map of ${mapSize}: first result ms`, ours.map.firstResultMs, peer.map.firstResultMs, ratios.mapFirstResult),
    ...cpuRows('map', ours.map.cpuPer1000, peer.map.cpuPer1000),
    '',
    'latency, first result and CPU: a ratio above 1 means stowage took longer or more; calls/s: above 1 means stowage was faster.',
    `load average (1 min): ${load1AtStart} at the start, ${load1AtEnd} at the end (${hostInfo().cpus} CPUs)`,
    `ours: ${ours.describe}`,
    `peer: ${peer.describe}`,
  ];
  const resultsDir = join(ROOT, 'bench', 'results');
  mkdirSync(resultsDir, { recursive: true });
  const path = join(resultsDir, 'calls.json');
  const json = JSON.stringify(result, null, 2);
  writeFileSync(path, `${json}\n`);
  if (!jsonOnly) process.stdout.write(`${lines.join('\n')}\n\n`);
  process.stdout.write(`${json}\n`);
  process.stderr.write(`results: ${path}\n`);
}

main().then(cleanUp, async (err: unknown) => {
  // After a signal the clean-up cuts the calls short: their failure is not news.
  if (!interrupted()) process.stderr.write(`calls failed: ${(err as Error).stack ?? String(err)}\n`);
  await cleanUp();
  process.exitCode = 1;
});
