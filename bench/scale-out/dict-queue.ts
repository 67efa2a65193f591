/**
 * scale-out/dict-queue: stowage's dict and queue through one stowage server
 * on a single Redis, and on a 3-master Redis Cluster, in one run; with raw
 * ioredis on the same single Redis and the same Cluster as the peer (what
 * the Cluster gives a client that pays nothing for gRPC or scripts).
 *
 *   npm run bench:scale-out -- [--quick] [--seconds 2.5] [--json-only]
 *
 * Started here, stopped by PID also when the run fails or is interrupted: one
 * redis-server, and a Cluster of 3 masters without replicas (like for like
 * with the single server: no replication work on either side), each node a
 * redis-server on a free 127.0.0.1 port (test/support/redis-cluster.ts). The
 * stowage servers run in this process (startServer, port 0, --only
 * dict,queue); the SDK talks to them over gRPC on 127.0.0.1.
 *
 * Work is spread over NAMES dicts and NAMES queues (caller c uses name
 * c % NAMES), so that on the Cluster it lands on every shard; a single dict
 * or queue is one slot, one shard, whatever the Cluster's size.
 *
 * Each contender runs twice per case (A B C D D C B A) and the two runs are
 * summed. Figures: ops/s (a queue op is one put and one get), and CPU seconds per
 * 1,000 ops, this process (client + stowage server) and every redis-server
 * together. Ratios are cluster ÷ single in ops/s (above 1: the Cluster was
 * faster). On a machine with fewer cores than Redis processes, the Cluster
 * cannot be faster: its nodes share the same cores.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Cluster, Redis } from 'ioredis';
import { pino } from 'pino';
import { Connection, Dict, Queue } from '../../src/client/index.js';
import { startServer, type RunningServer } from '../../src/server/server.js';
import { startRedisCluster, type RedisCluster } from '../../test/support/redis-cluster.js';
import { startRedis, type RedisServer } from '../../test/support/redis.js';
import { throughput, type Measured, type Timing } from '../dict-queue/measure.js';
import { ROOT, cleanUpOnSignal, hostInfo, load1, packageVersion, parseFlags } from '../volume-transfer/setup.js';

const USAGE = 'usage: node dist/bench/scale-out/dict-queue.js [--quick] [--seconds S] [--json-only]';
const flags = parseFlags(
  {
    quick: { type: 'boolean', default: false },
    seconds: { type: 'string' },
    'json-only': { type: 'boolean', default: false },
  },
  USAGE,
);
const timing: Timing = flags.quick
  ? { seconds: 0.5, warmSeconds: 0.1, latencySamples: 0, wakeSamples: 0 }
  : { seconds: 2.5, warmSeconds: 0.3, latencySamples: 0, wakeSamples: 0 };
if (flags.seconds !== undefined) {
  const s = Number(flags.seconds);
  if (!(s > 0)) {
    process.stderr.write(`--seconds must be a positive number, not ${flags.seconds}\n${USAGE}\n`);
    process.exit(2);
  }
  timing.seconds = s;
}
const jsonOnly = flags['json-only'];
const say = (msg: string) => {
  if (!jsonOnly) process.stderr.write(`${msg}\n`);
};

/** Dicts and queues the callers spread over. */
const NAMES = 12;
const CALLERS = 64;
/** Keys per dict. */
const KEYS = 1000;
const VALUE = 'v'.repeat(36) + '0123456789abcdef'.repeat(4);
const key = (i: number) => `k${i % KEYS}`;

type Setup = 'single' | 'cluster';
type Contender = 'stowage' | 'ioredis';
type CaseName = 'dict-put-64' | 'dict-get-64' | 'queue-64';
const CASES: Record<CaseName, { stowage: string; ioredis: string }> = {
  'dict-put-64': { stowage: `${CALLERS} callers of await d.put(k, v), ${NAMES} dicts`, ioredis: `${CALLERS} callers of await SET, keys over every slot` },
  'dict-get-64': { stowage: `${CALLERS} callers of await d.get(k), ${NAMES} dicts`, ioredis: `${CALLERS} callers of await GET, keys over every slot` },
  'queue-64': { stowage: `${CALLERS} callers of await q.put(v); await q.get(), ${NAMES} queues`, ioredis: `${CALLERS} callers of await RPUSH; await LPOP, ${NAMES} lists` },
};

interface Figure {
  case: CaseName;
  contender: Contender;
  setup: Setup;
  how: string;
  opsPerSec: number;
  /** CPU seconds per 1,000 ops: this process, the redis-servers, and both. */
  cpuSecPer1000: { process: number; redis: number; total: number };
  loadBefore: number;
}

const tmp = (() => {
  const base = join(tmpdir(), 'stowage-bench');
  mkdirSync(base, { recursive: true });
  return mkdtempSync(join(base, 'scale-out-'));
})();
let single: RedisServer | undefined;
let cluster: RedisCluster | undefined;
const stops: (() => Promise<void>)[] = [];
let cleaning: Promise<void> | undefined;
function cleanUp(): Promise<void> {
  cleaning ??= (async () => {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
    await single?.stop().catch(() => undefined);
    await cluster?.stop().catch(() => undefined);
    if (cluster) rmSync(cluster.dir, { recursive: true, force: true });
    rmSync(tmp, { recursive: true, force: true });
  })();
  return cleaning;
}
const signals = cleanUpOnSignal(cleanUp, say, 'stopping the redis-servers and removing the temp directory');

/** One stowage server (in this process) on `redisUrl`, and the SDK's handles on its dicts and queues. */
async function stowageOn(label: string, redisUrl: string, redisCluster: boolean) {
  const dataDir = join(tmp, `stowage-${label}`);
  mkdirSync(dataDir, { recursive: true });
  const server: RunningServer = await startServer({
    dataDir, host: '127.0.0.1', port: 0, redisUrl, redisCluster, only: ['dict', 'queue'],
    log: pino({ name: 'stowage', level: 'warn' }),
  });
  const conn = new Connection({ server: server.address, token: server.token });
  stops.push(async () => {
    conn.close();
    await server.stop();
  });
  const dicts: Dict<string, string>[] = [];
  const queues: Queue<string>[] = [];
  for (let n = 0; n < NAMES; n++) {
    const d = await Dict.fromName<string, string>(`bench-dict-${n}`, { createIfMissing: true, connection: conn });
    await d.update(new Map(Array.from({ length: KEYS }, (_, i) => [key(i), VALUE] as const)));
    dicts.push(d);
    const q = await Queue.fromName<string>(`bench-queue-${n}`, { createIfMissing: true, connection: conn });
    await q.clear();
    queues.push(q);
  }
  return {
    state: server.stateDescription,
    run: (kase: CaseName): Promise<Measured> =>
      throughput(timing, CALLERS, async (c, i) => {
        const n = c % NAMES;
        if (kase === 'dict-put-64') await dicts[n]!.put(key(i), VALUE);
        else if (kase === 'dict-get-64') await dicts[n]!.get(key(i));
        else {
          await queues[n]!.put(VALUE);
          await queues[n]!.get();
        }
        return 1;
      }),
  };
}

/** Raw ioredis, one command awaited at a time per caller (no pipelining), on the same Redis. */
async function ioredisOn(client: Redis | Cluster) {
  client.on('error', () => {});
  stops.push(async () => client.disconnect());
  for (let i = 0; i < KEYS; i++) await client.set(`bench:${key(i)}`, VALUE);
  return {
    run: (kase: CaseName): Promise<Measured> =>
      throughput(timing, CALLERS, async (c, i) => {
        if (kase === 'dict-put-64') await client.set(`bench:${key(i)}`, VALUE);
        else if (kase === 'dict-get-64') await client.get(`bench:${key(i)}`);
        else {
          const list = `bench:queue:${c % NAMES}`;
          await client.rpush(list, VALUE);
          await client.lpop(list);
        }
        return 1;
      }),
  };
}

async function main(): Promise<void> {
  const started = performance.now();
  mkdirSync(join(tmp, 'redis'));
  single = await startRedis(join(tmp, 'redis'));
  cluster = await startRedisCluster({ masters: 3, replicas: 0 });
  const redisPids = () => [single!.pid, ...cluster!.nodes.map((n) => n.pid)];
  say(`redis-server ${single.version} on port ${single.port}; Redis Cluster of 3 masters on ports ${cluster.nodes.map((n) => n.port).join(', ')}; ${timing.seconds} s a case${flags.quick ? ' (quick)' : ''}`);

  const contenders: [Contender, Setup, { run(k: CaseName): Promise<Measured> }][] = [
    ['stowage', 'single', await stowageOn('single', single.url, false)],
    ['stowage', 'cluster', await stowageOn('cluster', cluster.url, false)],
    ['ioredis', 'single', await ioredisOn(new Redis(single.url))],
    ['ioredis', 'cluster', await ioredisOn(new Cluster(cluster.nodes.map((n) => ({ host: '127.0.0.1', port: n.port }))))],
  ];
  const figures: Figure[] = [];
  for (const kase of Object.keys(CASES) as CaseName[]) {
    // Each contender runs twice, in the order A B C D D C B A, and its two runs are summed:
    // neither setup always goes first (JIT warm-up, the machine's other load drifting).
    const sums = new Map<string, { units: number; seconds: number; process: number; redis: number; loadBefore: number }>();
    for (const [contender, setup, c] of [...contenders, ...contenders.slice().reverse()]) {
      const loadBefore = load1();
      const cpu0 = { process: processCpu(), redis: sum(redisPids().map(pidCpu)) };
      const m = await c.run(kase);
      if (m.kind !== 'throughput') throw new Error('expected a throughput');
      const acc = sums.get(`${contender} ${setup}`) ?? { units: 0, seconds: 0, process: 0, redis: 0, loadBefore };
      acc.units += m.units;
      acc.seconds += m.seconds;
      acc.process += processCpu() - cpu0.process;
      acc.redis += sum(redisPids().map(pidCpu)) - cpu0.redis;
      sums.set(`${contender} ${setup}`, acc);
    }
    for (const [contender, setup] of contenders) {
      const a = sums.get(`${contender} ${setup}`)!;
      const per = (s: number) => round((s / a.units) * 1000, 4);
      const f: Figure = {
        case: kase, contender, setup, how: CASES[kase][contender],
        opsPerSec: Math.round(a.units / a.seconds),
        cpuSecPer1000: { process: per(a.process), redis: per(a.redis), total: per(a.process + a.redis) },
        loadBefore: a.loadBefore,
      };
      figures.push(f);
      say(`  ${kase.padEnd(12)} ${contender.padEnd(8)} ${setup.padEnd(8)} ${String(f.opsPerSec).padStart(8)} ops/s  cpu ${f.cpuSecPer1000.total.toFixed(3)} s/1000 ops (process ${f.cpuSecPer1000.process.toFixed(3)}, redis ${f.cpuSecPer1000.redis.toFixed(3)}); load ${a.loadBefore}`);
    }
  }
  const ratios = (Object.keys(CASES) as CaseName[]).flatMap((kase) =>
    (['stowage', 'ioredis'] as const).map((contender) => {
      const of = (setup: Setup) => figures.find((f) => f.case === kase && f.contender === contender && f.setup === setup)!;
      return { case: kase, contender, clusterOverSingle: round(of('cluster').opsPerSec / of('single').opsPerSec, 2) };
    }),
  );
  const result = {
    benchmark: 'scale-out/dict-queue',
    date: new Date().toISOString(),
    quick: flags.quick,
    machine: { ...hostInfo(), redis: single.version, ioredis: packageVersion('ioredis') },
    settings: {
      timing: { seconds: timing.seconds, warmSeconds: timing.warmSeconds },
      callers: CALLERS, names: NAMES, keysPerDict: KEYS, valueBytes: Buffer.byteLength(VALUE),
      single: 'one redis-server: --save "" --appendonly no, 127.0.0.1',
      cluster: '3 masters, no replicas, cluster-node-timeout 1000, --save "" --appendonly no, 127.0.0.1',
      stowage: 'one server in this process (startServer, --only dict,queue), SDK over gRPC on 127.0.0.1',
    },
    figures,
    ratios,
    totalSeconds: Math.round((performance.now() - started) / 1000),
  };
  const dir = join(ROOT, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `scale-out-dict-queue-${result.date.slice(0, 19).replace(/:/g, '-')}Z.json`);
  writeFileSync(path, `${JSON.stringify(result, null, 2)}\n`);
  if (jsonOnly) {
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    process.stderr.write(`${path}\n`);
    return;
  }
  const m = result.machine;
  const lines = [
    `scale-out/dict-queue on ${m.cpus} × ${m.cpuModel}, node ${m.node}, redis-server ${m.redis}, ioredis ${m.ioredis}; ${timing.seconds} s a case. Ratio: cluster ÷ single ops/s (above 1: the Cluster was faster)`,
    '',
    `| case | contender | single ops/s | cluster ops/s | cluster ÷ single | CPU s / 1,000 ops single | CPU s / 1,000 ops cluster |`,
    `|---|---|---|---|---|---|---|`,
  ];
  for (const r of ratios) {
    const of = (setup: Setup) => figures.find((f) => f.case === r.case && f.contender === r.contender && f.setup === setup)!;
    lines.push(`| ${r.case} | ${r.contender} | ${of('single').opsPerSec} | ${of('cluster').opsPerSec} | ${r.clusterOverSingle.toFixed(2)} | ${of('single').cpuSecPer1000.total.toFixed(3)} | ${of('cluster').cpuSecPer1000.total.toFixed(3)} |`);
  }
  process.stdout.write(`\n${lines.join('\n')}\n\nresults: ${path} (run took ${result.totalSeconds} s)\n`);
}

function processCpu(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout) || 100;

/** CPU seconds (user + system) of another process so far, from /proc (0 when it is gone). */
function pidCpu(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = f.slice(f.lastIndexOf(')') + 2).split(' ').map(Number);
    return (fields[11]! + fields[12]!) / CLOCK_TICKS;
  } catch {
    return 0;
  }
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
const round = (x: number, digits: number) => Math.round(x * 10 ** digits) / 10 ** digits;

main().then(
  () => cleanUp(),
  async (err: unknown) => {
    if (signals.interrupted()) return;
    process.stderr.write(`scale-out/dict-queue failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    await cleanUp();
    process.exitCode = 1;
  },
);
