/**
 * What the containers benchmark runs: `stowage serve` on the embedded default
 * (local directory + LMDB in a temp data dir, port 0) as a child process, and
 * one `stowage worker` at a time beside it, of either runtime, started and
 * stopped by the run. The caller is the SDK in this process, calling the
 * bench/calls no-op (`echo`).
 *
 * A worker's stop is SIGTERM (it removes its containers itself), then, for
 * what a worker killed hard would leave: SIGKILL of the processes that were
 * below it, and `docker rm -f` of the containers labelled with its pid.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { App, Connection, type FunctionHandle } from '../../src/client/index.js';
import { ROOT, track } from '../volume-transfer/setup.js';
import { FIXTURE, cleanEnv, lineMatching, terminate } from '../calls/ours.js';
import { killProcesses, treeProcesses } from '../calls/procs.js';

const exec = promisify(execFile);
const CLI = join(ROOT, 'bin', 'stowage.js');
/** The label every runner container carries (src/worker/docker-runtime.ts RUNNER_LABEL), with its worker's "PID:START-TIME" in `stowage.worker-instance`. */
export const RUNNER_LABEL = 'stowage.runner';

export type Runtime = 'docker' | 'process';

export interface WorkerOptions {
  runtime: Runtime;
  /** With the docker runtime: the worker's --image. */
  image: string;
  slots: number;
  /** --idle-timeout: '1h' keeps runners up, '1s' lets them go between cold calls. */
  idleTimeout: string;
}

export interface Worker {
  readonly pid: number;
  readonly runtime: Runtime;
  /** Its command line's flags, for the report. */
  readonly flags: string;
  /** SIGTERM, then whatever it left: by PID, and its containers by label. Safe to call twice. */
  stop(): Promise<void>;
}

export interface Stack {
  readonly serverPid: number;
  readonly fn: FunctionHandle<[number], number>;
  startWorker(o: WorkerOptions): Promise<Worker>;
  /** Stops the workers still running, then the server. Safe to call twice. */
  stop(): Promise<void>;
}

/** Ids of the runner containers (running or not) of the worker with pid `workerPid`. */
export async function workerContainers(workerPid: number): Promise<string[]> {
  const { stdout } = await exec('docker', ['ps', '-a', '--filter', `label=${RUNNER_LABEL}`, '--format', '{{.ID}} {{.Label "stowage.worker-instance"}}']);
  return stdout
    .split('\n')
    .filter((l) => l.split(' ')[1]?.startsWith(`${workerPid}:`))
    .map((l) => l.split(' ')[0]!);
}

/** Starts the server; its stop goes into `cleanups` at once, so that a signal during start-up stops what has started. */
export async function startStack(o: { tmp: string; cleanups: Set<() => Promise<void>> }): Promise<Stack> {
  const dataDir = join(o.tmp, 'stowage');
  const workers = new Set<Worker>();
  let server: ChildProcess | undefined;
  let connection: Connection | undefined;
  let stopping: Promise<void> | undefined;
  let n = 0;

  const stop = () =>
    (stopping ??= (async () => {
      connection?.close();
      // A worker that a phase is starting now joins the set once spawned, and sees `stopping` once registered.
      while (workers.size) await Promise.all([...workers].map((w) => w.stop()));
      if (server) await terminate(server, 15_000);
    })());
  o.cleanups.add(stop);

  try {
    server = track(
      spawn(process.execPath, [CLI, 'serve', '--data-dir', dataDir, '--host', '127.0.0.1', '--port', '0', '--gc-interval', '0'], {
        env: cleanEnv({}),
        stdio: ['ignore', 'ignore', 'pipe'],
      }),
    );
    const address = await lineMatching(server, server.stderr!, /stowage serving on (\S+)/, 'stowage serve', true);
    const token = readFileSync(join(dataDir, 'token'), 'utf8').trim();
    connection = new Connection({ server: address, token, dataDir });
    const app = new App('bench-containers', { connection });
    const fn: FunctionHandle<[number], number> = app.function({ module: FIXTURE, name: 'echo' }, (x: number) => x);
    await fn.spec(); // bundle and upload before any clock starts

    const startWorker = async (w: WorkerOptions): Promise<Worker> => {
      if (stopping) throw new Error('the stack is stopping');
      const id = `${w.runtime}-${++n}`;
      const flags = [
        '--slots', String(w.slots), '--idle-timeout', w.idleTimeout,
        ...(w.runtime === 'docker' ? ['--runtime', 'docker', '--image', w.image] : []),
      ];
      const child = track(
        spawn(process.execPath, [CLI, 'worker', '--bridge', address, '--id', id, '--cache-dir', join(o.tmp, `cache-${id}`), '--work-dir', join(o.tmp, `work-${id}`), ...flags], {
          // The data dir: the worker is on the server's host, as with `stowage serve` and `stowage worker` on one machine.
          env: cleanEnv({ STOWAGE_TOKEN: token, STOWAGE_DATA_DIR: dataDir }),
          stdio: ['ignore', 'pipe', 'inherit'],
        }),
      );
      let stopped: Promise<void> | undefined;
      const worker: Worker = {
        pid: child.pid!,
        runtime: w.runtime,
        flags: flags.join(' '),
        stop: () =>
          (stopped ??= (async () => {
            // Runners (and docker CLIs) below it, noted before it goes: a worker killed hard would leave them.
            const below = treeProcesses([child.pid!]);
            await terminate(child, 15_000);
            killProcesses(below);
            if (w.runtime === 'docker') {
              const left = await workerContainers(child.pid!).catch(() => []);
              if (left.length) await exec('docker', ['rm', '-f', ...left]).catch(() => undefined);
            }
            workers.delete(worker);
          })()),
      };
      workers.add(worker);
      try {
        await lineMatching(child, child.stdout!, /(registered with the bridge)/, `stowage worker ${id}`, true);
        if (stopping) throw new Error('the stack is stopping');
      } catch (err) {
        await worker.stop();
        throw err;
      }
      return worker;
    };
    return { serverPid: server.pid!, fn, startWorker, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
