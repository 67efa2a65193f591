/**
 * Compute bridge faults and lifecycle with real worker processes: a worker
 * SIGKILLed in the middle of a call (retried elsewhere, result delivered
 * once; lost for good without retries), function processes scaled to zero,
 * a cron schedule firing, and the bridge itself killed and restarted
 * (workers re-register, queued and running calls are not lost). Needs
 * `npm run build` first.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { App, BridgeAdmin, Connection, UnavailableError, type FunctionCall } from '../src/client/index.js';
import { CallState } from '../src/gen/stowage/v1/bridge.js';
import { FIXTURE, cleanUpWorkers, isAlive, runnerPids, spawnServe, startWorker, waitFor, workerRunning, type ServeProcess, type WorkerProcess, stopServeAndWorker } from './support/bridge.js';
import { freePort, removeDir, runCli, startStowage, tempDir, type Stowage } from './support/processes.js';

const fixtureFn = <A extends unknown[]>(app: App, name: string, opts: Parameters<App['function']>[0] = {}) =>
  app.function<A, unknown>({ ...opts, module: FIXTURE, name }, () => undefined);

type Slept = { slept: number; worker: string; pid: number };

describe('compute bridge faults: workers killed, scale to zero, schedules', () => {
  let stowage: Stowage;
  let env: Record<string, string>;
  let app: App;
  const workers = new Map<string, WorkerProcess>();
  const work = tempDir('bridge-faults');
  const tickFile = join(work, 'ticks');

  const start = async (id: string) => {
    const w = await startWorker({
      id,
      server: stowage.server.address,
      token: stowage.server.token,
      slots: 1,
      idleTimeout: '1s',
      env: { JOBS_TICK_FILE: tickFile },
    });
    workers.set(id, w);
    return w;
  };

  beforeAll(async () => {
    stowage = await startStowage();
    env = { STOWAGE_SERVER: stowage.server.address, STOWAGE_TOKEN: stowage.server.token, STOWAGE_LOG_LEVEL: 'warn' };
    app = new App('faults', { connection: stowage.connection });
    await Promise.all([start('k1'), start('k2')]);
  }, 60_000);

  afterAll(async () => {
    await Promise.all([...workers.values()].map((w) => w.kill('SIGKILL')));
    cleanUpWorkers();
    await stowage?.stop();
    removeDir(work);
  });

  /** The worker running `call` once it runs. */
  const runningOn = (call: FunctionCall<unknown>) => workerRunning(stowage.connection, call.id, workers);

  it('with no work, no function process runs', () => {
    for (const w of workers.values()) expect(runnerPids(w.pid)).toEqual([]);
  });

  it('a worker killed in the middle of a call: the call is retried on another worker and its result delivered once', async () => {
    const call = await fixtureFn<[number]>(app, 'sleep', { retries: 1 }).spawn(2500);
    const victim = await runningOn(call);
    const victimRunners = runnerPids(workers.get(victim)!.pid);
    await workers.get(victim)!.kill('SIGKILL');
    workers.delete(victim);
    const out = (await call.get()) as Slept;
    const survivor = victim === 'k1' ? 'k2' : 'k1';
    expect(out).toMatchObject({ slept: 2500, worker: survivor });
    const info = await BridgeAdmin.call(call.id, stowage.connection);
    expect(info).toMatchObject({ state: CallState.CALL_STATE_SUCCEEDED, attempt: 2, workerId: survivor });
    expect(info.decisions.map((d) => d.workerId)).toEqual([victim, survivor]);
    // The killed worker's runner noticed its worker gone and exited.
    await waitFor('the killed worker\'s runner to exit', () => victimRunners.every((p) => !isAlive(p)), 5000);
    await start(victim);
  });

  it('without retries, a call lost with its worker fails with UNAVAILABLE naming the worker', async () => {
    const call = await fixtureFn<[number]>(app, 'sleep', { retries: 0 }).spawn(5000);
    const victim = await runningOn(call);
    await workers.get(victim)!.kill('SIGKILL');
    workers.delete(victim);
    const err = await call.get().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnavailableError);
    expect((err as Error).message).toMatch(new RegExp(`worker ${victim} was lost .* on attempt 1 of 1 \\(retries: 0\\)`));
    await start(victim);
  });

  it('scale to zero: runners start with the calls, at most --slots per worker, and stop after --idle-timeout', async () => {
    const ids = [...workers.values()];
    let most = 0;
    const sampler = setInterval(() => {
      for (const w of ids) most = Math.max(most, runnerPids(w.pid).length);
    }, 50);
    try {
      const out = (await fixtureFn<[number]>(app, 'sleep').map([300, 300, 300, 300, 300, 300])) as Slept[];
      expect(out.map((o) => o.slept)).toEqual([300, 300, 300, 300, 300, 300]);
      // Slots are 1: each worker reused one runner for its calls.
      expect(new Set(out.map((o) => o.pid)).size).toBe(2);
    } finally {
      clearInterval(sampler);
    }
    expect(most).toBe(1);
    await waitFor('every runner to stop after the idle timeout', () => ids.every((w) => runnerPids(w.pid).length === 0), 5000);
  });

  it('a schedule (stowage deploy) fires every second until it is deleted', async () => {
    const deploy = await runCli(['deploy', FIXTURE], env);
    expect(deploy.code, deploy.stderr).toBe(0);
    expect(deploy.stdout).toContain('scheduled: jobs.tick');
    const listed = await runCli(['bridge', 'schedules'], env);
    expect(listed.stdout).toMatch(/jobs\.tick\s+\* \* \* \* \* \*/);
    const ticks = () => {
      try {
        return readFileSync(tickFile, 'utf8').trim().split('\n').length;
      } catch {
        return 0;
      }
    };
    await waitFor('three ticks', () => ticks() >= 3, 10_000);
    const calls = await BridgeAdmin.calls({ schedule: 'jobs.tick' }, stowage.connection);
    expect(calls.filter((c) => c.state === CallState.CALL_STATE_SUCCEEDED).length).toBeGreaterThanOrEqual(2);
    const un = await runCli(['bridge', 'unschedule', 'jobs.tick'], env);
    expect(un.code, un.stderr).toBe(0);
    await new Promise((r) => setTimeout(r, 1200)); // a tick submitted just before may still run
    const after = ticks();
    await new Promise((r) => setTimeout(r, 2500));
    expect(ticks()).toBe(after);
    expect((await runCli(['bridge', 'unschedule', 'jobs.tick'], env)).code).toBe(3);
  });
});

describe('compute bridge restarted: workers re-register and no call is lost', () => {
  let serve: ServeProcess | undefined;
  let worker: WorkerProcess | undefined;
  let connection: Connection | undefined;
  const dataDir = tempDir('bridge-restart');

  afterAll(() => stopServeAndWorker({ connection, worker, serve, dataDir }));

  it('calls queued and running when the bridge is killed all finish after its restart, each run once', async () => {
    const port = await freePort();
    serve = await spawnServe(dataDir, port);
    connection = new Connection({ server: serve.address, token: serve.token });
    worker = await startWorker({ id: 'r1', server: serve.address, token: serve.token, slots: 1 });
    const app = new App('restart', { connection });
    const sleep = fixtureFn<[number]>(app, 'sleep');
    const calls = [await sleep.spawn(2000), await sleep.spawn(500), await sleep.spawn(500)];
    await waitFor('the first call to run', async () => (await BridgeAdmin.call(calls[0]!.id, connection)).state === CallState.CALL_STATE_RUNNING);
    const results = calls.map((c) => c.get() as Promise<Slept>);
    await serve.kill('SIGKILL');
    serve = await spawnServe(dataDir, port);
    await waitFor('the worker to register again', () => (worker!.stdout().match(/registered with the bridge/g) ?? []).length >= 2, 20_000);
    const out = await Promise.all(results);
    expect(out.map((o) => o.slept)).toEqual([2000, 500, 500]);
    for (const c of calls) {
      const info = await BridgeAdmin.call(c.id, connection);
      // The running call was claimed back by its worker, not run a second time.
      expect(info).toMatchObject({ state: CallState.CALL_STATE_SUCCEEDED, attempt: 1, workerId: 'r1' });
    }
  });
});
