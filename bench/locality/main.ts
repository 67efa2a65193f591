/**
 * locality: what placing calls by cached bytes buys. One dataset volume of
 * `--shards` shards of `--shard-mib` MiB on S3 (s3rver), `--workers` workers
 * (`stowage worker` processes, one slot each, each with its own chunk cache
 * of `--cache-mib` MiB, smaller than the dataset), and `--calls` calls each
 * reading one whole shard, shards in a repeating pattern 0, 1, …, N-1, 0, 1, ….
 * The same calls run once per placement policy (`ours`, `round-robin`,
 * `random`: `stowage serve --placement`), each from empty caches, and we
 * measure bytes fetched from S3 (s3rver's count of GET bytes on chunks),
 * the cache hit ratio (1 - fetched / read) and the wall time of the whole map.
 *
 *   npm run bench:locality -- [--quick] [--shards 16] [--shard-mib 64] [--calls 128]
 *                             [--workers 4] [--cache-mib 384] [--json-only]
 *
 * Everything runs in one temp directory under $TMPDIR/stowage-bench/, removed
 * at the end; s3rver and every worker are stopped by PID, and the workers'
 * mount processes and mount points are cleaned up, also on failure or
 * SIGINT/SIGTERM.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { pino } from 'pino';
import { App, Connection, Volume } from '../../src/client/index.js';
import type { PlacementPolicyName } from '../../src/compute-bridge/types.js';
import { startServer, type RunningServer } from '../../src/server/server.js';
import { writeBigFile } from '../volume-transfer/dataset.js';
import { ROOT, cleanUpOnSignal, hostInfo, load1, parseFlags, s3rverStore, startS3rver, track, wholeFlag, type S3rver } from '../volume-transfer/setup.js';

const MiB = 1024 * 1024;
const POLICIES: PlacementPolicyName[] = ['ours', 'round-robin', 'random'];
const USAGE = 'usage: node dist/bench/locality/main.js [--quick] [--shards 16] [--shard-mib 64] [--calls 128] [--workers 4] [--cache-mib N] [--policies ours,round-robin,random] [--json-only]';

const flags = parseFlags(
  {
    quick: { type: 'boolean', default: false },
    shards: { type: 'string', default: '16' },
    'shard-mib': { type: 'string' },
    calls: { type: 'string', default: '128' },
    workers: { type: 'string', default: '4' },
    'cache-mib': { type: 'string' },
    policies: { type: 'string', default: POLICIES.join(',') },
    'json-only': { type: 'boolean', default: false },
  },
  USAGE,
);

function whole(name: string, v: string | undefined, min: number): number {
  return wholeFlag(name, v, min, USAGE);
}

const shards = whole('shards', flags.shards, 1);
const shardMiB = whole('shard-mib', flags['shard-mib'] ?? (flags.quick ? '8' : '64'), 1);
const calls = whole('calls', flags.calls, 1);
const workerCount = whole('workers', flags.workers, 1);
// Each cache holds 3/8 of the dataset: smaller than the dataset, while all caches together hold it 1.5 times.
const cacheMiB = whole('cache-mib', flags['cache-mib'] ?? String(Math.ceil((shards * shardMiB * 3) / 8)), 1);
const jsonOnly = flags['json-only'];
const policies = flags.policies.split(',').map((p) => p.trim()) as PlacementPolicyName[];
if (!policies.length || policies.some((p) => !POLICIES.includes(p))) {
  process.stderr.write(`--policies ${flags.policies}: choose from ${POLICIES.join(',')}\n${USAGE}\n`);
  process.exit(2);
}
const say = (msg: string) => {
  if (!jsonOnly) process.stderr.write(`${msg}\n`);
};

const tmp = (() => {
  const base = join(tmpdir(), 'stowage-bench');
  mkdirSync(base, { recursive: true });
  return mkdtempSync(join(base, 'locality-'));
})();
const CLI = join(ROOT, 'bin', 'stowage.js');
const READER = join(ROOT, 'bench', 'locality', 'reader.mjs');
const VOLUME = 'bench-locality';

let s3: S3rver | undefined;
let server: RunningServer | undefined;
const workers = new Set<ChildProcess>();

/** Kills every worker by PID, then every process left naming a worker's work dir (their mounts), and detaches the mount points. */
function killAll(): void {
  for (const w of workers) if (w.pid && w.exitCode === null && w.signalCode === null) process.kill(w.pid, 'SIGKILL');
  for (const pid of pidsMentioning(join(tmp, 'work-'))) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  for (const dir of mountDirs()) spawnSync('fusermount', ['-uz', dir], { stdio: 'ignore' });
}

function mountDirs(): string[] {
  const out: string[] = [];
  for (const w of readdirSync(tmp).filter((d) => d.startsWith('work-'))) {
    const m = join(tmp, w, 'mounts');
    try {
      for (const d of readdirSync(m)) out.push(join(m, d));
    } catch {
      // no mounts
    }
  }
  return out;
}

function pidsMentioning(dir: string): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const cmd = readFileSync(`/proc/${name}/cmdline`, 'utf8').replaceAll('\0', ' ');
      if (cmd.includes(dir)) out.push(Number(name));
    } catch {
      // gone
    }
  }
  return out;
}

let cleaning: Promise<void> | undefined;
function cleanUp(): Promise<void> {
  cleaning ??= (async () => {
    killAll();
    await server?.stop().catch(() => undefined);
    await s3?.stop().catch(() => undefined);
    rmSync(tmp, { recursive: true, force: true });
  })();
  return cleaning;
}
cleanUpOnSignal(cleanUp, say, `stopping workers, s3rver and the server, removing ${tmp}`);

async function startWorker(id: string, address: string, token: string): Promise<ChildProcess> {
  const cacheDir = join(tmp, `cache-${id}`);
  const workDir = join(tmp, `work-${id}`);
  rmSync(cacheDir, { recursive: true, force: true });
  const child = spawn(
    process.execPath,
    [CLI, 'worker', '--bridge', address, '--id', id, '--slots', '1', '--cache-dir', cacheDir, '--cache-size', `${cacheMiB}MiB`,
      '--memory-cache-size', '16MiB', '--work-dir', workDir, '--idle-timeout', '60s'],
    { env: { ...process.env, STOWAGE_TOKEN: token, STOWAGE_LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'inherit'] },
  );
  track(child);
  workers.add(child);
  child.once('exit', () => workers.delete(child));
  await new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (l) => {
      if (l.includes('registered with the bridge')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`worker ${id} exited with ${code}`)));
  });
  return child;
}

async function stopWorkers(): Promise<void> {
  await Promise.all(
    [...workers].map(
      (w) =>
        new Promise<void>((resolve) => {
          if (w.exitCode !== null || w.signalCode !== null) return resolve();
          w.once('exit', () => resolve());
          process.kill(w.pid!, 'SIGTERM');
        }),
    ),
  );
}

interface Run {
  policy: PlacementPolicyName;
  seconds: number;
  bytesRead: number;
  bytesFetched: number;
  getRequests: number;
  hitRatio: number;
  /** Hit ratio over the reads after each shard's first: 1 - (fetched - dataset) / (read - dataset). */
  hitRatioAfterFirstTouch: number;
  callsPerWorker: Record<string, number>;
  /** Workers each shard ran on. */
  shardSpread: number;
  load1Before: number;
}

async function runPolicy(policy: PlacementPolicyName, dataDir: string, s3rver: S3rver): Promise<Run> {
  server = await startServer({
    dataDir,
    host: '127.0.0.1',
    port: 0,
    s3: s3rverStore(s3rver),
    log: pino({ name: 'stowage', level: 'error' }),
    bridge: { placement: policy },
  });
  const connection = new Connection({ server: server.address, token: server.token });
  try {
    for (let i = 1; i <= workerCount; i++) await startWorker(`w${i}`, server.address, server.token);
    const app = new App('locality', { connection });
    const fn = app.function(
      { module: READER, name: 'readShard', volumes: { '/data': VOLUME }, reads: (shard: number) => [`/data/shards/${shard}.bin`] },
      (shard: number) => ({ shard, bytes: 0, worker: '' }),
    );
    await fn.spec(); // bundle and upload before the clock starts
    const inputs = Array.from({ length: calls }, (_, i) => i % shards);
    spawnSync('sync', { stdio: 'ignore' });
    await s3rver.resetStats();
    const load1Before = load1();
    say(`${policy}: ${calls} calls on ${workerCount} workers …`);
    const start = performance.now();
    const out = await fn.map(inputs);
    const seconds = (performance.now() - start) / 1000;
    if (process.env.LOCALITY_DECISIONS) {
      const { BridgeAdmin } = await import('../../src/client/index.js');
      const list = await BridgeAdmin.calls({ limit: calls }, connection);
      writeFileSync(`${process.env.LOCALITY_DECISIONS}.${policy}.json`, JSON.stringify(list.reverse().map((c) => ({ id: c.callId, reads: c.reads, d: c.decisions })), null, 1));
    }
    const stats = await s3rver.stats();
    const bytesRead = out.reduce((n, o) => n + o.bytes, 0);
    if (bytesRead !== calls * shardMiB * MiB) throw new Error(`the calls read ${bytesRead} bytes, not ${calls * shardMiB * MiB}`);
    const bytesFetched = stats['bytes GET chunks'] ?? 0;
    const dataset = shards * shardMiB * MiB;
    const callsPerWorker: Record<string, number> = {};
    const spread = new Map<number, Set<string>>();
    for (const o of out) {
      callsPerWorker[o.worker] = (callsPerWorker[o.worker] ?? 0) + 1;
      (spread.get(o.shard) ?? spread.set(o.shard, new Set()).get(o.shard)!).add(o.worker);
    }
    const r: Run = {
      policy,
      seconds: round(seconds),
      bytesRead,
      bytesFetched,
      getRequests: stats['GET chunks'] ?? 0,
      hitRatio: round(1 - bytesFetched / bytesRead, 3),
      hitRatioAfterFirstTouch: bytesRead > dataset ? round(1 - Math.max(0, bytesFetched - dataset) / (bytesRead - dataset), 3) : Number.NaN,
      callsPerWorker,
      shardSpread: round([...spread.values()].reduce((n, s) => n + s.size, 0) / spread.size, 2),
      load1Before,
    };
    say(`${policy}: ${r.seconds}s, fetched ${mib(bytesFetched)} MiB of ${mib(bytesRead)} MiB read, hit ratio ${r.hitRatio}`);
    return r;
  } finally {
    connection.close();
    await stopWorkers();
    killAll();
    await server.stop();
    server = undefined;
  }
}

const round = (n: number, digits = 2) => Math.round(n * 10 ** digits) / 10 ** digits;
const mib = (n: number) => round(n / MiB, 1);

async function main(): Promise<void> {
  say(`locality: ${shards} shards × ${shardMiB} MiB, ${calls} calls, ${workerCount} workers with ${cacheMiB} MiB caches; temp ${tmp}`);
  s3 = await startS3rver(join(tmp, 's3rver'));
  const dataDir = join(tmp, 'stowage');
  // One server to upload the dataset; each policy then gets its own server on the same data dir and bucket.
  server = await startServer({
    dataDir,
    host: '127.0.0.1',
    port: 0,
    s3: s3rverStore(s3),
    log: pino({ name: 'stowage', level: 'warn' }),
  });
  const conn = new Connection({ server: server.address, token: server.token });
  const local = join(tmp, 'data');
  mkdirSync(join(local, 'shards'), { recursive: true });
  for (let i = 0; i < shards; i++) await writeBigFile(join(local, 'shards', `${i}.bin`), shardMiB * MiB);
  const vol = await Volume.fromName(VOLUME, { connection: conn, createIfMissing: true });
  await vol.batchUpload().putDirectory(local, '/').commit();
  rmSync(local, { recursive: true, force: true });
  conn.close();
  await server.stop();
  server = undefined;

  const runs: Run[] = [];
  for (const p of policies) runs.push(await runPolicy(p, dataDir, s3));
  const ours = runs.find((r) => r.policy === 'ours') ?? runs[0]!;
  const rr = runs.find((r) => r.policy === 'round-robin') ?? ours;
  const comparisons = runs
    .filter((r) => r !== ours)
    .map((r) => ({
      peer: r.policy,
      fetchedRatio: round(r.bytesFetched / Math.max(ours.bytesFetched, 1)),
      wallRatio: round(r.seconds / ours.seconds),
    }));
  const aims = {
    hitRatioAtLeast0_9: ours.hitRatio >= 0.9,
    fetched2xFewerThanRoundRobin: rr.bytesFetched >= 2 * ours.bytesFetched,
    wall1_5xShorterThanRoundRobin: rr.seconds >= 1.5 * ours.seconds,
  };
  const result = {
    benchmark: 'locality',
    date: new Date().toISOString(),
    host: hostInfo(),
    setup: { shards, shardMiB, calls, workers: workerCount, slotsPerWorker: 1, cacheMiB, memoryCacheMiB: 16, pattern: 'shard = call index mod shards' },
    runs,
    comparisons,
    aims,
    bestPossibleHitRatio: round(1 - shards / calls, 3),
  };
  const lines = [
    '',
    `policy        wall s   fetched MiB   hit ratio   after 1st touch   calls/worker`,
    ...runs.map(
      (r) =>
        `${r.policy.padEnd(12)} ${String(r.seconds).padStart(7)} ${String(mib(r.bytesFetched)).padStart(13)} ${String(r.hitRatio).padStart(11)} ${String(r.hitRatioAfterFirstTouch).padStart(17)}   ${Object.entries(r.callsPerWorker).sort().map(([w, n]) => `${w}:${n}`).join(' ')}`,
    ),
    '',
    ...comparisons.map((c) => `ours vs ${c.peer}: ${c.fetchedRatio}x fewer bytes fetched, ${c.wallRatio}x shorter wall time`),
    `aims: hit ratio ≥ 0.9: ${aims.hitRatioAtLeast0_9 ? 'met' : `not met (${ours.hitRatio}; at most ${result.bestPossibleHitRatio} when every shard's first read is a miss)`}; ` +
      `≥ 2x fewer bytes than round-robin: ${aims.fetched2xFewerThanRoundRobin ? 'met' : 'not met'}; ≥ 1.5x shorter wall time: ${aims.wall1_5xShorterThanRoundRobin ? 'met' : 'not met'}`,
  ];
  const resultsDir = join(ROOT, 'bench', 'results');
  mkdirSync(resultsDir, { recursive: true });
  const path = join(resultsDir, 'locality.json');
  writeFileSync(path, `${JSON.stringify(result, null, 2)}\n`);
  if (jsonOnly) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  else process.stdout.write(`${lines.join('\n')}\n`);
  process.stderr.write(`results: ${path}\n`);
}

main()
  .then(cleanUp, async (err: unknown) => {
    process.stderr.write(`locality failed: ${(err as Error).stack ?? String(err)}\n`);
    await cleanUp();
    process.exitCode = 1;
  });
