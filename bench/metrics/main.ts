/**
 * metrics: what the instrumentation (issue 15) costs a server.
 *
 *   npm run bench:metrics -- [--quick] [--seconds 2] [--rounds 3] [--json-only]
 *
 * Two servers run side by side, each in its own process (bench/metrics/server.ts)
 * on its own data dir: one as `stowage serve` runs (metrics on), one with
 * `metrics: false` (no RPC interceptor, store wrapper or counters). The SDK in
 * this process drives the same workloads against each, in alternating order
 * round after round, so that drift of the machine falls on both:
 * dict puts and gets (64 callers, 100-byte values, SDK batching; one RPC
 * stream carries them all), single dict gets (one caller: one op per batch),
 * and reads of small volume files (16 callers, 4 KiB files, read through the
 * server: Stat and ReadBlob RPCs, and store gets, per file).
 * For each: ops/s, the server's CPU seconds per 1,000 ops (from /proc), and
 * with ÷ without. Then the time and size of render() on a server in this
 * process that holds 100 dicts and 100 queues, and the nanoseconds per call of
 * the recording methods on their own (the floor of the per-operation cost,
 * which the noise of a shared machine hides in the end-to-end figures).
 * Everything it starts is stopped by PID, also when the run fails or is
 * interrupted; the temp directory is removed.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { destination, pino } from 'pino';
import { Connection, Dict, Queue, Volume } from '../../src/client/index.js';
import { Metrics } from '../../src/common/metrics.js';
import { startServer } from '../../src/server/server.js';
import { throughput, type Timing } from '../dict-queue/measure.js';
import { KEYS, VALUE, key } from '../dict-queue/workload.js';
import { ROOT, cleanUpOnSignal, hostInfo, load1, packageVersion, parseFlags, processCpuSeconds, track, wholeFlag } from '../volume-transfer/setup.js';

const USAGE = 'usage: node dist/bench/metrics/main.js [--quick] [--seconds S] [--rounds N] [--json-only]';
const flags = parseFlags(
  {
    quick: { type: 'boolean', default: false },
    seconds: { type: 'string' },
    rounds: { type: 'string' },
    'json-only': { type: 'boolean', default: false },
  },
  USAGE,
);
const quick = flags.quick;
const timing: Timing = { seconds: quick ? 0.5 : 2, warmSeconds: quick ? 0.1 : 0.3, latencySamples: 0, wakeSamples: 0 };
if (flags.seconds !== undefined) {
  timing.seconds = Number(flags.seconds);
  if (!(timing.seconds > 0)) {
    process.stderr.write(`--seconds must be a positive number, not ${flags.seconds}\n${USAGE}\n`);
    process.exit(2);
  }
}
const rounds = flags.rounds === undefined ? (quick ? 1 : 3) : wholeFlag('rounds', flags.rounds, 1, USAGE);
const jsonOnly = flags['json-only'];
const say = (msg: string) => {
  if (!jsonOnly) process.stderr.write(`${msg}\n`);
};

const FILES = 200;
const FILE_BYTES = 4096;
const DICT_CALLERS = 64;
const READ_CALLERS = 16;
const RENDER_OBJECTS = 100;
const RENDER_SAMPLES = 30;
const POLL_VOLUMES = 20;
const POLL_SAMPLES = 50;

const tmp = (() => {
  const base = join(tmpdir(), 'stowage-bench');
  mkdirSync(base, { recursive: true });
  return mkdtempSync(join(base, 'metrics-'));
})();

type Mode = 'with' | 'without';
interface Target {
  mode: Mode;
  pid: number;
  connection: Connection;
  dict: Dict<string, string>;
  volume: Volume;
  stop(): Promise<void>;
}
const targets: Target[] = [];

let cleaning: Promise<void> | undefined;
function cleanUp(): Promise<void> {
  cleaning ??= (async () => {
    for (const t of targets) await t.stop().catch(() => undefined);
    rmSync(tmp, { recursive: true, force: true });
  })();
  return cleaning;
}
const signals = cleanUpOnSignal(cleanUp, say, `stopping the servers and removing ${tmp}`);

/** A server process (metrics on or off) with a filled dict and a volume of small files. */
async function startTarget(mode: Mode): Promise<Target> {
  const dataDir = join(tmp, mode);
  mkdirSync(dataDir);
  const child = track(
    spawn(process.execPath, [join(ROOT, 'dist', 'bench', 'metrics', 'server.js'), '--data-dir', dataDir, '--metrics', mode === 'with' ? 'on' : 'off'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    }),
  );
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stopChild = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  };
  const ready = await new Promise<{ address: string; token: string }>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', (l) => resolve(JSON.parse(l) as { address: string; token: string }));
    child.once('exit', (code) => reject(new Error(`the ${mode}-metrics server exited (${code}) before serving`)));
  }).catch(async (err: unknown) => {
    await stopChild();
    throw err;
  });
  // No dataDir: the SDK reads file bytes through the server (ReadBlob), as a client on another host would.
  const connection = new Connection({ server: ready.address, token: ready.token });
  const target: Target = {
    mode,
    pid: child.pid!,
    connection,
    dict: undefined as unknown as Dict<string, string>,
    volume: undefined as unknown as Volume,
    async stop() {
      connection.close();
      await stopChild();
    },
  };
  targets.push(target);
  target.dict = await Dict.fromName<string, string>('bench-dict', { createIfMissing: true, connection });
  for (let i = 0; i < KEYS; i += 1000) {
    await target.dict.update(new Map(Array.from({ length: Math.min(1000, KEYS - i) }, (_, j) => [key(i + j), VALUE] as [string, string])));
  }
  target.volume = await Volume.fromName('bench-small', { createIfMissing: true, connection });
  const upload = target.volume.batchUpload();
  for (let i = 0; i < FILES; i++) upload.putFile(Buffer.alloc(FILE_BYTES, i % 251), `/small/f${i}.bin`);
  await upload.commit();
  return target;
}

interface Workload {
  name: string;
  how: string;
  run(t: Target): ReturnType<typeof throughput>;
}
const WORKLOADS: Workload[] = [
  {
    name: 'dict-put-64',
    how: `${DICT_CALLERS} callers of await d.put(k, v) (SDK batches, one Session stream)`,
    run: (t) => throughput(timing, DICT_CALLERS, async (_, i) => (await t.dict.put(key(i), VALUE), 1)),
  },
  {
    name: 'dict-get-64',
    how: `${DICT_CALLERS} callers of await d.get(k)`,
    run: (t) => throughput(timing, DICT_CALLERS, async (_, i) => (await t.dict.get(key(i)), 1)),
  },
  {
    name: 'dict-get-1',
    how: 'one caller of await d.get(k)',
    run: (t) => throughput(timing, 1, async (_, i) => (await t.dict.get(key(i)), 1)),
  },
  {
    name: 'volume-read-small',
    how: `${READ_CALLERS} callers of await vol.readBytes(path) of ${FILES} files of ${FILE_BYTES} B (through the server)`,
    run: (t) => throughput(timing, READ_CALLERS, async (_, i) => (await t.volume.readBytes(`/small/f${i % FILES}.bin`), 1)),
  },
];

interface Sample {
  workload: string;
  mode: Mode;
  round: number;
  ops: number;
  seconds: number;
  serverCpu: number;
  clientCpu: number;
  load1: number;
}

const r = (v: number, d: number) => Math.round(v * 10 ** d) / 10 ** d;

interface PollFigures {
  endpoint: string;
  medianMs: number;
  p90Ms: number;
  bytes: number;
  /** CPU of this process (server and the fetching client both) per request. */
  cpuMsPerRequest: number;
}

/**
 * render() of a server in this process holding RENDER_OBJECTS dicts and
 * queues (each used once) and POLL_VOLUMES small volumes of two versions; and
 * what each dashboard endpoint costs a poll over HTTP on that same server.
 */
async function measureRender(): Promise<{ objects: number; medianMs: number; p90Ms: number; bytes: number; lines: number; series: number; polls: PollFigures[] }> {
  const dataDir = join(tmp, 'render');
  mkdirSync(dataDir);
  const server = await startServer({
    dataDir,
    host: '127.0.0.1',
    port: 0,
    gcIntervalMs: 0,
    http: { host: '127.0.0.1', port: 0 },
    log: pino({ name: 'stowage', level: 'warn' }, destination(2)),
  });
  const connection = new Connection({ server: server.address, token: server.token });
  try {
    await Promise.all(
      Array.from({ length: RENDER_OBJECTS }, async (_, i) => {
        const d = await Dict.fromName<string, number>(`render-dict-${i}`, { createIfMissing: true, connection });
        await d.put('k', i);
        const q = await Queue.fromName<number>(`render-queue-${i}`, { createIfMissing: true, connection });
        await q.put(i);
      }),
    );
    for (let i = 0; i < POLL_VOLUMES; i++) {
      const v = await Volume.fromName(`poll-volume-${i}`, { createIfMissing: true, connection });
      await v.batchUpload().putFile(Buffer.alloc(4096, i), '/a.bin').commit();
      await v.batchUpload().putFile(Buffer.alloc(4096, i + 1), '/b.bin').commit();
      await v.close();
    }
    const polls = await measurePolls(`http://${server.httpAddress}`, server.token);
    let text = '';
    const ms: number[] = [];
    for (let i = 0; i < RENDER_SAMPLES; i++) {
      const t0 = performance.now();
      text = await server.metrics.render();
      ms.push(performance.now() - t0);
    }
    ms.sort((a, b) => a - b);
    const lines = text.split('\n').filter((l) => l !== '');
    return {
      objects: RENDER_OBJECTS,
      medianMs: r(ms[Math.floor(ms.length / 2)]!, 2),
      p90Ms: r(ms[Math.floor(ms.length * 0.9)]!, 2),
      bytes: Buffer.byteLength(text),
      lines: lines.length,
      series: lines.filter((l) => !l.startsWith('#')).length,
      polls,
    };
  } finally {
    connection.close();
    await server.stop();
  }
}

/** Each endpoint the dashboard polls, POLL_SAMPLES times in a row, with the token. */
async function measurePolls(base: string, token: string): Promise<PollFigures[]> {
  const out: PollFigures[] = [];
  // The first /api/volumes starts the volumes' usage walks: let them finish before timing.
  await fetch(`${base}/api/volumes`, { headers: { authorization: `Bearer ${token}` } }).then((res) => res.text());
  await new Promise((res) => setTimeout(res, 500));
  for (const endpoint of ['/api/volumes', '/api/volumes/poll-volume-0/versions', '/api/dicts', '/api/bridge', '/api/mounts', '/metrics']) {
    const ms: number[] = [];
    let bytes = 0;
    const cpu0 = process.cpuUsage();
    for (let i = 0; i < POLL_SAMPLES; i++) {
      const t0 = performance.now();
      const res = await fetch(`${base}${endpoint}`, { headers: { authorization: `Bearer ${token}` } });
      const body = await res.text();
      if (res.status !== 200) throw new Error(`${endpoint}: ${res.status} ${body}`);
      bytes = Buffer.byteLength(body);
      ms.push(performance.now() - t0);
    }
    const cpu = process.cpuUsage(cpu0);
    ms.sort((a, b) => a - b);
    out.push({
      endpoint,
      medianMs: r(ms[Math.floor(ms.length / 2)]!, 2),
      p90Ms: r(ms[Math.floor(ms.length * 0.9)]!, 2),
      bytes,
      cpuMsPerRequest: r((cpu.user + cpu.system) / 1000 / POLL_SAMPLES, 3),
    });
  }
  return out;
}

/** Nanoseconds per call of the recording methods the hot paths call, on a Metrics of its own (no RPC, no I/O: the floor of the cost). */
function measureRecording(): Record<string, number> {
  const m = new Metrics({ processMetrics: false });
  const N = quick ? 200_000 : 1_000_000;
  const names = Array.from({ length: 1000 }, (_, i) => `dict-${i}`);
  const time = (fn: (i: number) => void) => {
    for (let i = 0; i < N / 10; i++) fn(i);
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < N; i++) fn(i);
    return r(Number(process.hrtime.bigint() - t0) / N, 1);
  };
  return {
    'dictOps.count (1,000 names)': time((i) => m.dictOps.count('get', names[i % 1000]!)),
    rpcFinished: time((i) => m.rpcFinished('/stowage.v1.VolumeService/Stat', i % 50 === 0 ? 5 : 0, 0.0004)),
    storeRequest: time(() => m.storeRequest('get', 'ok', 0, 4096)),
    'treeCache.hit': time(() => m.treeCache.hit()),
  };
}

async function main(): Promise<void> {
  const started = performance.now();
  const machine = { ...hostInfo(), grpcJs: packageVersion('@grpc/grpc-js'), promClient: packageVersion('prom-client') };
  for (const mode of ['with', 'without'] as const) await startTarget(mode);
  say(`servers: pids ${targets.map((t) => `${t.pid} (${t.mode} metrics)`).join(', ')}; ${timing.seconds} s a case, ${rounds} round(s)`);
  const samples: Sample[] = [];
  for (let round = 1; round <= rounds; round++) {
    for (const w of WORKLOADS) {
      const order = round % 2 === 1 ? targets : [...targets].reverse();
      for (const t of order) {
        const loadBefore = load1();
        const cpu0 = { server: processCpuSeconds(t.pid), client: processCpuSeconds('self') };
        const m = await w.run(t);
        if (m.kind !== 'throughput') throw new Error('expected a throughput');
        const s: Sample = {
          workload: w.name,
          mode: t.mode,
          round,
          ops: m.units,
          seconds: r(m.seconds, 3),
          serverCpu: r(processCpuSeconds(t.pid) - cpu0.server, 3),
          clientCpu: r(processCpuSeconds('self') - cpu0.client, 3),
          load1: loadBefore,
        };
        samples.push(s);
        say(`  round ${round} ${w.name.padEnd(18)} ${t.mode.padEnd(7)} ${String(Math.round(s.ops / s.seconds)).padStart(7)} ops/s, server ${((s.serverCpu / s.ops) * 1000).toFixed(3)} CPU s / 1000 ops; load ${loadBefore}`);
      }
    }
  }
  say('render() and the recording methods');
  const render = await measureRender();
  const recordingNs = measureRecording();

  const summary = WORKLOADS.map((w) => {
    const of = (mode: Mode) => {
      const mine = samples.filter((s) => s.workload === w.name && s.mode === mode);
      const ops = mine.reduce((n, s) => n + s.ops, 0);
      const seconds = mine.reduce((n, s) => n + s.seconds, 0);
      const cpu = mine.reduce((n, s) => n + s.serverCpu, 0);
      return { opsPerSec: Math.round(ops / seconds), serverCpuPer1000: r((cpu / ops) * 1000, 4) };
    };
    const withM = of('with');
    const without = of('without');
    return {
      workload: w.name,
      how: w.how,
      with: withM,
      without,
      opsRatio: r(withM.opsPerSec / without.opsPerSec, 3),
      cpuRatio: r(withM.serverCpuPer1000 / without.serverCpuPer1000, 3),
    };
  });
  const result = {
    benchmark: 'metrics',
    date: new Date().toISOString(),
    quick,
    machine,
    settings: { timing, rounds, files: FILES, fileBytes: FILE_BYTES, dictCallers: DICT_CALLERS, readCallers: READ_CALLERS, valueBytes: Buffer.byteLength(VALUE) },
    samples,
    summary,
    render,
    recordingNs,
    totalSeconds: Math.round((performance.now() - started) / 1000),
  };
  const resultsDir = join(ROOT, 'bench', 'results');
  mkdirSync(resultsDir, { recursive: true });
  const path = join(resultsDir, `metrics-${result.date.slice(0, 19).replace(/:/g, '-')}Z.json`);
  writeFileSync(path, `${JSON.stringify(result, null, 2)}\n`);
  if (jsonOnly) {
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    process.stderr.write(`${path}\n`);
    return;
  }
  const rows = summary.map(
    (s) =>
      `| ${s.workload} | ${s.with.opsPerSec} | ${s.without.opsPerSec} | ${s.opsRatio.toFixed(3)} | ${s.with.serverCpuPer1000.toFixed(4)} | ${s.without.serverCpuPer1000.toFixed(4)} | ${s.cpuRatio.toFixed(3)} |`,
  );
  process.stdout.write(
    `\nmetrics on ${machine.cpus} × ${machine.cpuModel}, node ${machine.node}, prom-client ${machine.promClient}; ${rounds} round(s) of ${timing.seconds} s a case\n\n` +
      '| workload | ops/s with | ops/s without | ratio | server CPU s / 1000 ops with | without | ratio |\n|---|---|---|---|---|---|---|\n' +
      `${rows.join('\n')}\n\n` +
      `render() with ${render.objects} dicts and ${render.objects} queues: median ${render.medianMs} ms (p90 ${render.p90Ms} ms), ${render.bytes} bytes, ${render.series} series\n` +
      `ns per call: ${Object.entries(recordingNs).map(([k, v]) => `${k} ${v}`).join(', ')}\n\n` +
      `dashboard polls over HTTP (${render.objects} dicts, ${render.objects} queues, ${POLL_VOLUMES} volumes):\n\n` +
      '| endpoint | median ms | p90 ms | bytes | CPU ms / request |\n|---|---|---|---|---|\n' +
      `${render.polls.map((p) => `| ${p.endpoint} | ${p.medianMs} | ${p.p90Ms} | ${p.bytes} | ${p.cpuMsPerRequest} |`).join('\n')}\n\n` +
      `results: ${path} (run took ${result.totalSeconds} s)\n`,
  );
}

main().then(
  () => cleanUp(),
  async (err: unknown) => {
    if (signals.interrupted()) return;
    process.stderr.write(`metrics bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    await cleanUp();
    process.exitCode = 1;
  },
);
