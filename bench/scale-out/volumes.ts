/**
 * scale-out (volumes): commits and reads through 1, 2 and 3 `stowage serve`
 * processes over one bucket, their heads in one Redis (issue 12), against one
 * server that keeps its heads in its own index (`--heads local`, how a single
 * server ran before), in the same run.
 *
 *   node dist/bench/scale-out/volumes.js [--quick] [--seconds S] [--json-only]
 *
 * Everything runs on this machine: s3rver, redis-server, and the servers as
 * child processes (each with its own data dir and one shared admin token);
 * the SDK in this process drives them through one connection that knows all
 * of them (round_robin). Cases, each timed for --seconds after a warm-up:
 * - commits, many volumes: 16 callers, each committing one new 4 KiB file
 *   at a time to a volume of its own (commits of different volumes do not
 *   wait for each other);
 * - commits, one volume: 8 callers committing to the same volume (they take
 *   its commit lock in turn: this shows what the lock costs, not scale);
 * - reads: 16 callers reading 64 KiB files through the servers
 *   (`transfer: 'proxy'`, so the bytes pass through them).
 * Then the visibility of a commit: 200 times, a commit through one server
 * followed at once by GetVolume through another; how many saw it at the
 * first try, and how long that read took.
 * For each: ops/s (or MiB/s), CPU seconds per 1,000 commits (per GiB read)
 * of the servers, Redis and s3rver, and the ratio to one server with its
 * heads in Redis. On a 2-core machine s3rver and the client share the cores
 * with the servers, so the ratio, not the absolute figure, is what counts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Connection, Volume } from '../../src/client/index.js';
import { startRedis, type RedisServer } from '../../test/support/redis.js';
import { throughput, type Measured, type Timing } from '../dict-queue/measure.js';
import {
  BUCKET,
  ROOT,
  S3_KEY,
  S3_SECRET,
  cleanUpOnSignal,
  hostInfo,
  load1,
  makeTempRoot,
  parseFlags,
  processCpuSeconds,
  startS3rver,
  track,
  type S3rver,
} from '../volume-transfer/setup.js';

const USAGE = 'usage: node dist/bench/scale-out/volumes.js [--quick] [--seconds S] [--json-only]';
const flags = parseFlags({ quick: { type: 'boolean', default: false }, seconds: { type: 'string' }, 'json-only': { type: 'boolean', default: false } }, USAGE);
const quick = flags.quick;
const timing: Timing = { seconds: quick ? 1 : 5, warmSeconds: quick ? 0.3 : 1, latencySamples: 0, wakeSamples: 0 };
if (flags.seconds !== undefined) {
  timing.seconds = Number(flags.seconds);
  if (!(timing.seconds > 0)) {
    process.stderr.write(`--seconds must be a positive number, not ${flags.seconds}\n${USAGE}\n`);
    process.exit(2);
  }
}
const jsonOnly = flags['json-only'];
const say = (msg: string) => {
  if (!jsonOnly) process.stderr.write(`${msg}\n`);
};

const TOKEN = `stw_${randomBytes(24).toString('base64url')}`;
const MANY_CALLERS = 16;
const ONE_VOLUME_CALLERS = 8;
const READ_CALLERS = 16;
const READ_FILES = 64;
const READ_BYTES = 64 * 1024;
const VISIBILITY_SAMPLES = quick ? 50 : 200;

const tmp = makeTempRoot();
let s3: S3rver | undefined;
let redis: RedisServer | undefined;
const running: { stop(): Promise<void> }[] = [];

let cleaning: Promise<void> | undefined;
function cleanUp(): Promise<void> {
  cleaning ??= (async () => {
    for (const r of running.splice(0)) await r.stop().catch(() => undefined);
    await redis?.stop().catch(() => undefined);
    await s3?.stop().catch(() => undefined);
    rmSync(tmp, { recursive: true, force: true });
  })();
  return cleaning;
}
cleanUpOnSignal(cleanUp, say, `stopping the servers, redis-server and s3rver, and removing ${tmp}`);

interface ServerProcess {
  address: string;
  pid: number;
  stop(): Promise<void>;
}

async function startServe(label: string, prefix: string, heads: 'local' | 'redis'): Promise<ServerProcess> {
  const dataDir = join(tmp, label);
  mkdirSync(dataDir, { recursive: true });
  writeFileSync(join(dataDir, 'token'), `${TOKEN}\n`, { mode: 0o600 });
  const args = ['serve', '--data-dir', dataDir, '--host', '127.0.0.1', '--port', '0', '--gc-interval', '0'];
  args.push('--s3-endpoint', s3!.endpoint, '--s3-bucket', BUCKET, '--s3-prefix', prefix, '--s3-region', 'us-east-1', '--heads', heads);
  if (heads === 'redis') args.push('--redis-url', redis!.url, '--only', 'volume');
  const child: ChildProcess = track(
    spawn(process.execPath, [join(ROOT, 'bin', 'stowage.js'), ...args], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, AWS_ACCESS_KEY_ID: S3_KEY, AWS_SECRET_ACCESS_KEY: S3_SECRET, STOWAGE_LOG_LEVEL: 'warn' },
    }),
  );
  const address = await new Promise<string>((resolve, reject) => {
    let err = '';
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      const m = /stowage serving on (\S+)/.exec(err);
      if (m) resolve(m[1]!);
    });
    child.once('exit', (code) => reject(new Error(`stowage serve (${label}) exited with ${code}: ${err}`)));
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const proc: ServerProcess = {
    address,
    pid: child.pid!,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
  running.push(proc);
  return proc;
}

interface CaseResult {
  opsPerSecond?: number;
  mibPerSecond?: number;
  /** CPU seconds per 1,000 ops (per GiB for reads). */
  serverCpu: number;
  redisCpu: number;
  s3rverCpu: number;
}

interface ConfigResult {
  config: string;
  servers: number;
  heads: 'local' | 'redis';
  commitsManyVolumes: CaseResult;
  commitsOneVolume: CaseResult;
  reads: CaseResult;
  visibility?: { samples: number; seenAtFirstRead: number; readP50Ms: number; readP99Ms: number };
}

function cpuOf(pids: number[]): number {
  return pids.reduce((s, p) => s + processCpuSeconds(p), 0);
}

/** A throughput case: the units it moved and the CPU each process spent, per `per` units. */
async function measure(servers: ServerProcess[], run: () => Promise<Measured>, per: number): Promise<{ units: number; seconds: number; serverCpu: number; redisCpu: number; s3rverCpu: number }> {
  const pids = servers.map((s) => s.pid);
  const before = { server: cpuOf(pids), redis: redis ? processCpuSeconds(redis.pid) : 0, s3: processCpuSeconds(s3!.pid) };
  const m = await run();
  if (m.kind !== 'throughput') throw new Error('a throughput case measured latency');
  const r = { units: m.units, seconds: m.seconds };
  const cost = (now: number, then: number) => ((now - then) / r.units) * per;
  return {
    ...r,
    serverCpu: cost(cpuOf(pids), before.server),
    redisCpu: redis ? cost(processCpuSeconds(redis.pid), before.redis) : 0,
    s3rverCpu: cost(processCpuSeconds(s3!.pid), before.s3),
  };
}

async function runConfig(n: number, heads: 'local' | 'redis'): Promise<ConfigResult> {
  const config = `${n} server${n > 1 ? 's' : ''}, heads ${heads === 'redis' ? 'in Redis' : 'local'}`;
  say(`\n${config}`);
  const prefix = `scale-${heads}-${n}-${randomUUID().slice(0, 8)}`;
  const servers: ServerProcess[] = [];
  for (let i = 0; i < n; i++) servers.push(await startServe(`${prefix}-${i}`, prefix, heads));
  const list = servers.map((s) => s.address).join(',');
  const connection = new Connection({ server: list, token: TOKEN });
  try {
    // Commits, a volume per caller.
    const own = await Promise.all(Array.from({ length: MANY_CALLERS }, (_, i) => Volume.fromName(`many-${i}`, { createIfMissing: true, connection })));
    const many = await measure(servers, () => throughput(timing, MANY_CALLERS, async (c) => {
      await own[c]!.batchUpload().putFile(randomBytes(4096), `f-${randomUUID()}.bin`).commit();
      return 1;
    }), 1000);
    say(`  commits, ${MANY_CALLERS} volumes: ${(many.units / many.seconds).toFixed(0)}/s; servers ${many.serverCpu.toFixed(2)} CPU s per 1,000`);

    const shared = await Volume.fromName('one', { createIfMissing: true, connection });
    const one = await measure(servers, () => throughput(timing, ONE_VOLUME_CALLERS, async () => {
      await shared.batchUpload().putFile(randomBytes(4096), `f-${randomUUID()}.bin`).commit();
      return 1;
    }), 1000);
    say(`  commits, 1 volume, ${ONE_VOLUME_CALLERS} callers: ${(one.units / one.seconds).toFixed(0)}/s; servers ${one.serverCpu.toFixed(2)} CPU s per 1,000`);

    const data = await Volume.fromName('reads', { createIfMissing: true, connection });
    const upload = data.batchUpload();
    for (let i = 0; i < READ_FILES; i++) upload.putFile(randomBytes(READ_BYTES), `r${i}.bin`);
    await upload.commit();
    const proxied = await Volume.fromName('reads', { connection, transfer: 'proxy' });
    const GIB = 1024 ** 3;
    const reads = await measure(servers, () => throughput(timing, READ_CALLERS, async (_c, i) => (await proxied.readBytes(`r${i % READ_FILES}.bin`)).length), GIB);
    const mib = reads.units / reads.seconds / 1024 ** 2;
    say(`  reads through the servers: ${mib.toFixed(1)} MiB/s; servers ${reads.serverCpu.toFixed(1)} CPU s per GiB`);

    let visibility: ConfigResult['visibility'];
    if (n > 1) {
      const per = servers.map((s) => new Connection({ server: s.address, token: TOKEN }));
      try {
        const writer = await Volume.fromName('visible', { createIfMissing: true, connection: per[0]! });
        const readers = await Promise.all(per.slice(1).map((c) => Volume.fromName('visible', { connection: c })));
        let seen = 0;
        const ms: number[] = [];
        for (let i = 0; i < VISIBILITY_SAMPLES; i++) {
          const { version } = await writer.batchUpload().putFile(Buffer.from(String(i)), `v${i}.txt`).commit();
          const t0 = performance.now();
          const info = await readers[i % readers.length]!.info();
          ms.push(performance.now() - t0);
          if (info.latestVersion >= version) seen++;
        }
        ms.sort((a, b) => a - b);
        visibility = { samples: VISIBILITY_SAMPLES, seenAtFirstRead: seen, readP50Ms: ms[Math.floor(ms.length * 0.5)]!, readP99Ms: ms[Math.floor(ms.length * 0.99)]! };
        say(`  visibility: ${seen}/${VISIBILITY_SAMPLES} commits seen by another server at the first read after the ack (that read: p50 ${visibility.readP50Ms.toFixed(2)} ms, p99 ${visibility.readP99Ms.toFixed(2)} ms)`);
      } finally {
        for (const c of per) c.close();
      }
    }
    const result = (m: typeof many, per: 'ops' | 'mib'): CaseResult => ({
      ...(per === 'ops' ? { opsPerSecond: m.units / m.seconds } : { mibPerSecond: m.units / m.seconds / 1024 ** 2 }),
      serverCpu: m.serverCpu,
      redisCpu: m.redisCpu,
      s3rverCpu: m.s3rverCpu,
    });
    return { config, servers: n, heads, commitsManyVolumes: result(many, 'ops'), commitsOneVolume: result(one, 'ops'), reads: result(reads, 'mib'), visibility };
  } finally {
    connection.close();
    for (const s of servers) {
      await s.stop();
      running.splice(running.indexOf(s), 1);
    }
  }
}

async function main(): Promise<void> {
  s3 = await startS3rver(join(tmp, 's3rver'));
  mkdirSync(join(tmp, 'redis'));
  redis = await startRedis(join(tmp, 'redis'));
  say(`scale-out (volumes): s3rver ${s3.endpoint}, redis ${redis.version} on ${redis.url}; ${timing.seconds} s per case; load ${load1().toFixed(2)}`);
  const results: ConfigResult[] = [];
  results.push(await runConfig(1, 'local'));
  for (const n of [1, 2, 3]) results.push(await runConfig(n, 'redis'));
  const base = results.find((r) => r.heads === 'redis' && r.servers === 1)!;
  const ratio = (a: number | undefined, b: number | undefined) => (a !== undefined && b ? a / b : NaN);
  const rows = results.map((r) => ({
    config: r.config,
    commitsManyPerS: r.commitsManyVolumes.opsPerSecond!,
    commitsManyRatio: ratio(r.commitsManyVolumes.opsPerSecond, base.commitsManyVolumes.opsPerSecond),
    commitsOnePerS: r.commitsOneVolume.opsPerSecond!,
    commitsOneRatio: ratio(r.commitsOneVolume.opsPerSecond, base.commitsOneVolume.opsPerSecond),
    readMiBs: r.reads.mibPerSecond!,
    readRatio: ratio(r.reads.mibPerSecond, base.reads.mibPerSecond),
    serverCpuPer1kCommits: r.commitsManyVolumes.serverCpu,
    redisCpuPer1kCommits: r.commitsManyVolumes.redisCpu,
    s3rverCpuPer1kCommits: r.commitsManyVolumes.s3rverCpu,
    serverCpuPerGiB: r.reads.serverCpu,
  }));
  if (!jsonOnly) {
    console.log('\nratios: each configuration ÷ one server with its heads in Redis (same run)');
    console.table(
      rows.map((r) => ({
        config: r.config,
        'commits/s (16 volumes)': r.commitsManyPerS.toFixed(0),
        'ratio ': r.commitsManyRatio.toFixed(2),
        'commits/s (1 volume)': r.commitsOnePerS.toFixed(0),
        ratio: r.commitsOneRatio.toFixed(2),
        'read MiB/s': r.readMiBs.toFixed(1),
        'ratio  ': r.readRatio.toFixed(2),
        'server CPU s/1k commits': r.serverCpuPer1kCommits.toFixed(2),
        'redis CPU s/1k commits': r.redisCpuPer1kCommits.toFixed(3),
        's3rver CPU s/1k commits': r.s3rverCpuPer1kCommits.toFixed(2),
        'server CPU s/GiB read': r.serverCpuPerGiB.toFixed(1),
      })),
    );
  }
  const out = { bench: 'scale-out-volumes', at: new Date().toISOString(), host: hostInfo(), timing, rows, results };
  const dir = join(ROOT, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const path = join(dir, 'scale-out-volumes.json');
  writeFileSync(path, JSON.stringify(out, null, 2));
  if (jsonOnly) console.log(JSON.stringify(out));
  else console.log(JSON.stringify(out));
  process.stderr.write(`results: ${path}\n`);
}

main()
  .catch((err: unknown) => {
    process.stderr.write(`scale-out failed: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  })
  .finally(() => cleanUp());
