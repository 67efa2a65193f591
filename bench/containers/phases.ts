/**
 * The three measurements of a side, and the naive peer:
 *
 * - warm: `fn.remote(i)` one after another on a worker whose runner is up
 *   (bench/calls measureLatency), with the CPU of every part around it
 *   (cpu.ts);
 * - cold: one call when the worker has no runner: wait until its runners are
 *   gone (idle timeout), then time one call; so many times;
 * - naive: `docker run --rm` of the image's `node -e 0`, spawn to exit: a
 *   container per call, what not reusing containers costs at the least.
 */
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { load1, track } from '../volume-transfer/setup.js';
import { measureLatency, quantile, round, within, type Side } from '../calls/measure.js';
import { per1000, readCpu, runnerProcesses, type CpuPer1000 } from './cpu.js';
import { workerContainers, type Stack, type Worker } from './stack.js';

const exec = promisify(execFile);
/** No call and no wait may take longer: a hung call fails the run (and its clean-up runs) instead of hanging it. */
const STEP_MS = 5 * 60_000;

export interface WarmFigures {
  calls: number;
  p50Ms: number;
  p99Ms: number;
  meanMs: number;
  cpuPer1000: CpuPer1000;
  load1Before: number;
}

export interface TimesFigures {
  ms: number[];
  p50Ms: number;
  maxMs: number;
  load1Before: number;
}

function times(ms: number[], load1Before: number): TimesFigures {
  const sorted = [...ms].sort((a, b) => a - b);
  return { ms: ms.map((x) => round(x, 1)), p50Ms: round(quantile(sorted, 0.5), 1), maxMs: round(sorted[sorted.length - 1]!, 1), load1Before };
}

/** `n` untimed calls on a process worker of its own, stopped after: the server and the caller have compiled their paths before any side is measured. */
export async function warmStack(stack: Stack, n: number, slots: number): Promise<void> {
  const worker = await stack.startWorker({ runtime: 'process', image: '', slots, idleTimeout: '1h' });
  for (let i = 0; i < n; i++) await within(STEP_MS, 'stack warm-up call', stack.fn.remote(i));
  await worker.stop();
}

/** `warmUp` calls, then `calls` timed ones, on `worker` (the only worker running). */
export async function measureWarm(stack: Stack, worker: Worker, warmUp: number, calls: number): Promise<WarmFigures> {
  for (let i = 0; i < warmUp; i++) await within(STEP_MS, 'warm-up call', stack.fn.remote(i));
  const side: Side = {
    describe: `${worker.runtime} runtime`,
    cpuRoots: () => ({ server: [stack.serverPid], workers: [worker.pid] }),
    call: (x) => within(STEP_MS, 'call', stack.fn.remote(x)),
    map: () => Promise.reject(new Error('no map here')),
    stop: () => worker.stop(),
  };
  const before = readCpu(stack.serverPid, worker.pid);
  const latency = await measureLatency(side, calls);
  const after = readCpu(stack.serverPid, worker.pid);
  return { calls, p50Ms: latency.p50Ms, p99Ms: latency.p99Ms, meanMs: latency.meanMs, cpuPer1000: per1000(before, after, calls), load1Before: latency.load1Before };
}

/** Resolves once `worker` has no runner: no runner process of this installation anywhere, and no container of its. */
async function runnersGone(worker: Worker): Promise<void> {
  await within(
    STEP_MS,
    `the runners of the ${worker.runtime} worker to stop`,
    (async () => {
      for (;;) {
        const containers = worker.runtime === 'docker' ? await workerContainers(worker.pid) : [];
        if (containers.length === 0 && runnerProcesses().length === 0) return;
        await new Promise((r) => setTimeout(r, 100));
      }
    })(),
  );
}

/** `n` cold calls on `worker` (started with a short --idle-timeout); the first call, which also fetches the code, is not timed. */
export async function measureCold(stack: Stack, worker: Worker, n: number): Promise<TimesFigures> {
  await within(STEP_MS, 'first call', stack.fn.remote(-1));
  const load1Before = load1();
  const ms: number[] = [];
  for (let i = 0; i < n; i++) {
    await runnersGone(worker);
    // A moment more, so that what stopping the last runner started (docker rm) is over.
    await new Promise((r) => setTimeout(r, 500));
    const t = performance.now();
    const r = await within(STEP_MS, 'cold call', stack.fn.remote(i));
    ms.push(performance.now() - t);
    if (r !== i) throw new Error(`cold call ${i} returned ${JSON.stringify(r)}`);
  }
  return times(ms, load1Before);
}

/** `n` times (while not `stopping`) `docker run --rm --network host --entrypoint node IMAGE -e 0`, spawn to exit; each container is removed by name on failure or signal. */
export async function measureNaive(image: string, n: number, cleanups: Set<() => Promise<void>>, stopping: () => boolean): Promise<TimesFigures> {
  const load1Before = load1();
  const ms: number[] = [];
  for (let i = 0; i < n; i++) {
    // Once the clean-up has begun, a container started now would outlive it.
    if (stopping()) throw new Error('stopping');
    const name = `stowage-bench-${process.pid}-${i}`;
    const remove = () => exec('docker', ['rm', '-f', name]).then(() => undefined, () => undefined);
    cleanups.add(remove);
    const t = performance.now();
    const child = track(spawn('docker', ['run', '--rm', '--name', name, '--label', 'stowage.bench=containers', '--network', 'host', '--entrypoint', 'node', image, '-e', '0'], { stdio: ['ignore', 'ignore', 'pipe'] }));
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await within(STEP_MS, `docker run ${name}`, new Promise<number | null>((r) => child.once('exit', (c) => r(c))));
    ms.push(performance.now() - t);
    cleanups.delete(remove);
    if (code !== 0) throw new Error(`docker run of ${image} exited with ${code}: ${stderr.trim()}`);
  }
  return times(ms, load1Before);
}
