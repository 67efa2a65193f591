/**
 * Our side: `stowage serve` on the embedded default (local directory store +
 * LMDB in a temp data dir, port 0) as a child process, so that its CPU is its
 * own, and `workers` `stowage worker` processes with `slots` slots each,
 * running the fixture's `echo` in their runners. The caller is the SDK in
 * this process: `fn.remote(x)` and `for await (const r of fn.map(xs))`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { App, Connection, type FunctionHandle } from '../../src/client/index.js';
import { ROOT, track } from '../volume-transfer/setup.js';
import { within, type Side } from './measure.js';
import { killProcesses, treeProcesses } from './procs.js';

const CLI = join(ROOT, 'bin', 'stowage.js');
export const FIXTURE = join(ROOT, 'bench', 'calls', 'fixture.mjs');
const START_MS = 120_000;

/** The environment without STOWAGE_* settings of the shell (a Redis URL, a bucket…): the embedded default, whatever the caller's shell says. */
export function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('STOWAGE_')) env[k] = v;
  return { ...env, STOWAGE_LOG_LEVEL: 'warn', ...extra };
}

/** Resolves with the first capture of `re` in a line of `stream`; rejects if `child` exits first. */
export function lineMatching(child: ChildProcess, stream: NodeJS.ReadableStream, re: RegExp, what: string, echo: boolean): Promise<string> {
  return within(
    START_MS,
    what,
    new Promise<string>((resolve, reject) => {
      let found = false;
      createInterface({ input: stream }).on('line', (l) => {
        const m = re.exec(l);
        if (!found && m) {
          found = true;
          resolve(m[1] ?? l);
        } else if (echo) process.stderr.write(`${what}: ${l}\n`);
      });
      child.once('exit', (code, signal) => reject(new Error(`${what} exited (${signal ?? code}) before it was ready`)));
    }),
  );
}

/** Sends SIGTERM and waits up to `ms` for the exit; then SIGKILLs. */
export async function terminate(child: ChildProcess, ms: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), ms);
  await exited;
  clearTimeout(timer);
}

/** Starts our side; its stop goes into `cleanups` at once, so that a signal during start-up stops what has started. */
export async function startOurs(o: { tmp: string; workers: number; slots: number; cleanups: Set<() => Promise<void>> }): Promise<Side> {
  const dataDir = join(o.tmp, 'stowage');
  const children: ChildProcess[] = [];
  let connection: Connection | undefined;
  let stopping: Promise<void> | undefined;

  const stop = () =>
    (stopping ??= (async () => {
      connection?.close();
      const [server, ...workers] = children;
      // Runners and mounts below the workers, noted before the workers go: a worker killed hard would leave them.
      const below = treeProcesses(children.map((c) => c.pid!));
      await Promise.all(workers.map((w) => terminate(w, 15_000)));
      if (server) await terminate(server, 15_000);
      killProcesses(below);
    })());
  o.cleanups.add(stop);

  try {
    const server = track(
      spawn(process.execPath, [CLI, 'serve', '--data-dir', dataDir, '--host', '127.0.0.1', '--port', '0', '--gc-interval', '0'], {
        env: cleanEnv({}),
        stdio: ['ignore', 'ignore', 'pipe'],
      }),
    );
    children.push(server);
    const address = await lineMatching(server, server.stderr!, /stowage serving on (\S+)/, 'stowage serve', true);
    const token = readFileSync(join(dataDir, 'token'), 'utf8').trim();
    for (let i = 1; i <= o.workers; i++) {
      const id = `w${i}`;
      const w = track(
        spawn(
          process.execPath,
          [CLI, 'worker', '--bridge', address, '--id', id, '--slots', String(o.slots), '--cache-dir', join(o.tmp, `cache-${id}`),
            '--work-dir', join(o.tmp, `work-${id}`), '--idle-timeout', '1h'],
          // The data dir: the worker is on the server's host, as with `stowage serve` and `stowage worker` on one machine.
          { env: cleanEnv({ STOWAGE_TOKEN: token, STOWAGE_DATA_DIR: dataDir }), stdio: ['ignore', 'pipe', 'inherit'] },
        ),
      );
      children.push(w);
      await lineMatching(w, w.stdout!, /(registered with the bridge)/, `stowage worker ${id}`, true);
    }
    connection = new Connection({ server: address, token, dataDir });
    const app = new App('bench-calls', { connection });
    const fn: FunctionHandle<[number], number> = app.function({ module: FIXTURE, name: 'echo' }, (x: number) => x);
    await fn.spec(); // bundle and upload before any clock starts
    const [serverProc, ...workerProcs] = children;
    return {
      describe: `stowage serve (local directory + LMDB) and ${o.workers} stowage worker × ${o.slots} slots`,
      cpuRoots: () => ({ server: [serverProc!.pid!], workers: workerProcs.map((w) => w.pid!) }),
      call: (x) => fn.remote(x),
      async map(xs, onFirst) {
        const out: number[] = [];
        for await (const r of fn.map(xs)) {
          if (out.length === 0) onFirst();
          out.push(r);
        }
        return out;
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
