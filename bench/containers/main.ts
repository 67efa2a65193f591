/**
 * containers: what a call costs when its runner is a Docker container
 * (`stowage worker --runtime docker`) rather than a forked process (the
 * default runtime), on the same server in the same run.
 *
 *   npm run bench:containers -- [--quick] [--calls 300] [--cold 10] [--stack-warm-up 300] [--slots 2] [--image stowage:latest] [--json-only]
 *
 * One `stowage serve` on the embedded default (stack.ts) and one worker at a
 * time, each stopped before the next starts, calling the bench/calls no-op:
 *
 * 0. Warm-up of the server and the caller: `--stack-warm-up` calls on a
 *    process worker, untimed, so that the side measured first does not pay
 *    for their JIT compilation and first allocations.
 * 1. Warm latency: a worker with `--idle-timeout 1h`, 20 warm-up calls, then
 *    `--calls` calls `fn.remote(i)` one after another: p50, p99, mean; docker
 *    ÷ process. The aim: docker warm p50 under 300 ms.
 * 2. Cold start: a worker with `--idle-timeout 1s`; `--cold` times, wait until
 *    it has no runner (no container, no runner process), then time one call.
 *    The naive peer: `docker run --rm` of the image's `node -e 0`, a container
 *    per call, spawn to exit, `--cold` times.
 * 3. CPU per 1,000 warm calls, over phase 1, of each part (cpu.ts): server,
 *    worker tree, caller, the runners in containers and their shims (not
 *    below the worker), dockerd + containerd, and the whole machine.
 *
 * Everything runs in one temp directory under $TMPDIR/stowage-bench/, removed
 * at the end; the server, the workers (and what they leave: processes by PID,
 * containers by label) and the naive peer's containers (by name) are stopped
 * also on failure and on SIGINT/SIGTERM.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, hostInfo, load1, parseFlags, runScratch, wholeFlag } from '../volume-transfer/setup.js';
import { round } from '../calls/measure.js';
import { measureCold, measureNaive, measureWarm, warmStack, type TimesFigures, type WarmFigures } from './phases.js';
import { report, type Result, type SideFigures } from './report.js';
import { startStack, type Runtime, type Stack } from './stack.js';

const USAGE = 'usage: node dist/bench/containers/main.js [--quick] [--calls 300] [--cold 10] [--stack-warm-up 300] [--slots 2] [--image stowage:latest] [--json-only]';
const flags = parseFlags(
  {
    quick: { type: 'boolean', default: false },
    calls: { type: 'string' },
    cold: { type: 'string' },
    'stack-warm-up': { type: 'string' },
    slots: { type: 'string', default: '2' },
    image: { type: 'string', default: 'stowage:latest' },
    'json-only': { type: 'boolean', default: false },
  },
  USAGE,
);
const whole = (name: string, v: string | undefined, min: number) => wholeFlag(name, v, min, USAGE);
const calls = whole('calls', flags.calls ?? (flags.quick ? '50' : '300'), 1);
const cold = whole('cold', flags.cold ?? (flags.quick ? '3' : '10'), 1);
const stackWarmUp = whole('stack-warm-up', flags['stack-warm-up'] ?? (flags.quick ? '50' : '300'), 0);
const slots = whole('slots', flags.slots, 1);
const image = flags.image;
const jsonOnly = flags['json-only'];
const WARM_CALLS = flags.quick ? 5 : 20;
/** The aim for a warm call on the docker runtime. */
const AIM_WARM_P50_MS = 300;

const say = (msg: string) => {
  if (!jsonOnly) process.stderr.write(`${msg}\n`);
};

const { tmp, cleanups, cleanUp, cleaning, interrupted } = runScratch('containers', say, (dir) => `stopping the server, workers and containers, removing ${dir}`);

async function warm(stack: Stack, runtime: Runtime): Promise<{ flags: string; figures: WarmFigures }> {
  const worker = await stack.startWorker({ runtime, image, slots, idleTimeout: '1h' });
  say(`${runtime}: warm, worker ${worker.flags}; ${WARM_CALLS} warm-up calls, then ${calls} one after another (load ${load1()}) …`);
  const figures = await measureWarm(stack, worker, WARM_CALLS, calls);
  say(`${runtime}: p50 ${figures.p50Ms} ms, p99 ${figures.p99Ms} ms, mean ${figures.meanMs} ms; CPU s/1,000 calls ${JSON.stringify(figures.cpuPer1000)}`);
  await worker.stop();
  return { flags: worker.flags, figures };
}

async function coldStarts(stack: Stack, runtime: Runtime): Promise<{ flags: string; figures: TimesFigures }> {
  const worker = await stack.startWorker({ runtime, image, slots, idleTimeout: '1s' });
  say(`${runtime}: cold, worker ${worker.flags}; ${cold} calls, each after its runners are gone (load ${load1()}) …`);
  const figures = await measureCold(stack, worker, cold);
  say(`${runtime}: cold p50 ${figures.p50Ms} ms, max ${figures.maxMs} ms (${figures.ms.join(', ')})`);
  await worker.stop();
  return { flags: worker.flags, figures };
}

async function main(): Promise<void> {
  say(`containers: ${calls} warm calls, ${cold} cold, ${slots} slots, image ${image}; temp ${tmp}`);
  const load1AtStart = load1();
  const stack = await startStack({ tmp, cleanups });
  const sides = {} as Record<Runtime, SideFigures>;
  if (stackWarmUp > 0) {
    say(`stack warm-up: ${stackWarmUp} untimed calls on a process worker …`);
    await warmStack(stack, stackWarmUp, slots);
  }
  const warmRuns = { docker: await warm(stack, 'docker'), process: await warm(stack, 'process') };
  for (const runtime of ['docker', 'process'] as const) {
    const c = await coldStarts(stack, runtime);
    sides[runtime] = { runtime, warmWorker: warmRuns[runtime].flags, coldWorker: c.flags, warm: warmRuns[runtime].figures, cold: c.figures };
  }
  await stack.stop();
  say(`naive: docker run --rm --network host --entrypoint node ${image} -e 0, ${cold} times (load ${load1()}) …`);
  const naive = await measureNaive(image, cold, cleanups, cleaning);
  say(`naive: p50 ${naive.p50Ms} ms, max ${naive.maxMs} ms (${naive.ms.join(', ')})`);
  const load1AtEnd = load1();

  const ratio = (a: number, b: number) => round(a / b, 2);
  const { docker, process: proc } = sides;
  const ratios = {
    warmP50: ratio(docker.warm.p50Ms, proc.warm.p50Ms),
    warmP99: ratio(docker.warm.p99Ms, proc.warm.p99Ms),
    warmMean: ratio(docker.warm.meanMs, proc.warm.meanMs),
    coldP50: ratio(docker.cold.p50Ms, proc.cold.p50Ms),
    coldP50OverNaive: ratio(docker.cold.p50Ms, naive.p50Ms),
    cpuPer1000Total: ratio(docker.warm.cpuPer1000.total, proc.warm.cpuPer1000.total),
    cpuPer1000System: ratio(docker.warm.cpuPer1000.system, proc.warm.cpuPer1000.system),
  };
  const result: Result = {
    benchmark: 'containers',
    date: new Date().toISOString(),
    host: hostInfo(),
    load1AtStart,
    load1AtEnd,
    setup: { calls, warmUpCalls: WARM_CALLS, stackWarmUpCalls: stackWarmUp, cold, slots, image },
    aim: { warmP50BelowMs: AIM_WARM_P50_MS, met: docker.warm.p50Ms < AIM_WARM_P50_MS },
    docker,
    process: proc,
    naive: { command: `docker run --rm --network host --entrypoint node ${image} -e 0`, ...naive },
    ratios,
  };
  const resultsDir = join(ROOT, 'bench', 'results');
  mkdirSync(resultsDir, { recursive: true });
  const path = join(resultsDir, 'containers.json');
  const json = JSON.stringify(result, null, 2);
  writeFileSync(path, `${json}\n`);
  if (!jsonOnly) process.stdout.write(`${report(result).join('\n')}\n\n`);
  process.stdout.write(`${json}\n`);
  process.stderr.write(`results: ${path}\n`);
}

main().then(cleanUp, async (err: unknown) => {
  // After a signal the clean-up cuts the calls short: their failure is not news.
  if (!interrupted()) process.stderr.write(`containers failed: ${(err as Error).stack ?? String(err)}\n`);
  await cleanUp();
  process.exitCode = 1;
});
