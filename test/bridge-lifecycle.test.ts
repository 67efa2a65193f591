/**
 * Compute bridge life cycle with real worker processes: a volume committed
 * again while a worker has it mounted (calls keep the version pinned at
 * submit; the old mount goes once no call uses it), a worker that stops
 * answering without its stream ending (SIGSTOP: declared dead after 5 s of
 * silence, its call retried elsewhere, its late outcome ignored, and it comes
 * back), a worker whose TCP connection to the bridge is cut (`ss -K`, from
 * iproute2: needs root and a kernel with SOCK_DESTROY, as here and in CI), spawn handles awaited after their calls
 * finished, and `stowage serve --placement round-robin` as a child process.
 * Needs `npm run build` first.
 */
import { createHash, randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { App, BridgeAdmin, Connection, FunctionCall, FunctionError, NotFoundError, Volume } from '../src/client/index.js';
import { CallState } from '../src/gen/stowage/v1/bridge.js';
import { FIXTURE, cleanUpWorkers, cutConnections, isAlive, pidsMentioning, runnerPids, spawnServe, startWorker, waitFor, workerRunning, type ServeProcess, type WorkerProcess } from './support/bridge.js';
import { CLI, freePort, runCli, startStowage, tempDir, uniqueName, type Stowage } from './support/processes.js';
import { KiB } from './support/volume-data.js';

const fixtureFn = <A extends unknown[]>(app: App, name: string, opts: Parameters<App['function']>[0] = {}) =>
  app.function<A, unknown>({ ...opts, module: FIXTURE, name }, () => undefined);

type Slept = { slept: number; worker: string; pid: number };
type Digest = { path: string; sha256: string; worker: string };

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const mountPoints = () =>
  readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[1] ?? '');
const registrations = (w: WorkerProcess) => (w.stdout().match(/registered with the bridge/g) ?? []).length;

describe('compute bridge life cycle: new volume versions, workers that stop answering or lose their connection, spawn handles', () => {
  let stowage: Stowage;
  let app: App;
  const workers = new Map<string, WorkerProcess>();
  const dataset = uniqueName('lifecycle');
  /** Shard a.bin: 4 chunks of 64 KiB. */
  const SHARD = 256 * KiB;
  const v1Bytes = randomBytes(SHARD);
  let v1 = 0;

  beforeAll(async () => {
    stowage = await startStowage();
    const { address, token } = stowage.server;
    const vol = await Volume.fromName(dataset, { connection: stowage.connection, createIfMissing: true, chunkSize: 64 * KiB });
    v1 = (await vol.batchUpload().putFile(v1Bytes, '/shards/a.bin').commit()).version;
    const started = await Promise.all(['h1', 'h2'].map((id) => startWorker({ id, server: address, token, slots: 1 })));
    for (const w of started) workers.set(w.id, w);
    app = new App('lifecycle', { connection: stowage.connection });
  }, 90_000);

  afterAll(async () => {
    // A stopped worker cannot act on SIGTERM; SIGKILL takes it whatever its state.
    await Promise.all([...workers.values()].map((w) => w.kill('SIGKILL')));
    cleanUpWorkers();
    await stowage?.stop();
  });

  const info = (id: string) => BridgeAdmin.call(id, stowage.connection);
  const other = (id: string) => [...workers.values()].find((w) => w.id !== id)!;
  const digestFn = () =>
    fixtureFn<[string]>(app, 'digest', { volumes: { '/data': dataset }, reads: ((p: string) => [`/data${p}`]) as (...a: unknown[]) => string[] });

  it('a call reads the version pinned at submit; after a commit a new call reads the new bytes and the old mount is stopped', async () => {
    const sleep = fixtureFn<[number]>(app, 'sleep');
    // Both workers (one slot each) busy, so the digest call waits in the queue across the commit.
    const blockers = [await sleep.spawn(1500), await sleep.spawn(1500)];
    await waitFor('both workers to be busy', async () => (await Promise.all(blockers.map((b) => info(b.id)))).every((i) => i.state === CallState.CALL_STATE_RUNNING));
    const digest = digestFn();
    const pinned = await digest.spawn('/shards/a.bin');
    expect((await info(pinned.id)).versions).toEqual({ [dataset]: v1 });

    // Version 2 changes the last chunk only, so the worker that read version 1 still caches most of it.
    const v2Bytes = Buffer.concat([v1Bytes.subarray(0, SHARD - 64 * KiB), randomBytes(64 * KiB)]);
    const vol = await Volume.fromName(dataset, { connection: stowage.connection, chunkSize: 64 * KiB });
    const v2 = (await vol.batchUpload({ force: true }).putFile(v2Bytes, '/shards/a.bin').commit()).version;
    expect(v2).toBeGreaterThan(v1);

    const old = (await pinned.get()) as Digest;
    expect(old.sha256).toBe(sha256(v1Bytes));
    await Promise.all(blockers.map((b) => b.get()));
    const w = workers.get(old.worker)!;
    const mountOf = (version: number) => join(w.workDir, 'mounts', `${dataset}@${version}`);
    // Nothing newer is mounted on that worker yet, so version 1 stays mounted.
    expect(mountPoints()).toContain(mountOf(v1));

    const call = await digest.spawn('/shards/a.bin');
    const fresh = (await call.get()) as Digest;
    expect(fresh.sha256).toBe(sha256(v2Bytes));
    expect((await info(call.id)).versions).toEqual({ [dataset]: v2 });
    // Placed by cached bytes on the worker that read version 1: there the new version is mounted beside the old one.
    expect(fresh.worker).toBe(w.id);
    expect((await info(call.id)).decisions[0]!.reason).toBe('most cached bytes');
    await waitFor('the mount of version 1 to stop', () => !mountPoints().includes(mountOf(v1)) && pidsMentioning(mountOf(v1)).length === 0, 15_000);
    expect(mountPoints()).toContain(mountOf(v2));
  });

  it('a worker that stops answering without its stream ending: declared dead, its call retried elsewhere, its late outcome ignored; revived, it registers again and takes calls', async () => {
    const call = await fixtureFn<[number]>(app, 'sleep', { retries: 1 }).spawn(4000);
    const victimId = await workerRunning(stowage.connection, call.id, workers);
    const victim = workers.get(victimId)!;
    const survivor = other(victimId);
    // Only the worker stops: its runner finishes the sleep meanwhile, and its reply waits for the worker.
    process.kill(victim.pid, 'SIGSTOP');
    try {
      const retried = await waitFor(
        'the call to be placed again on the other worker',
        async () => {
          const i = await info(call.id);
          return i.attempt === 2 ? i : undefined;
        },
        20_000,
      );
      expect(retried).toMatchObject({ state: CallState.CALL_STATE_RUNNING, workerId: survivor.id });
      expect((await BridgeAdmin.workers(stowage.connection)).map((x) => x.workerId)).toEqual([survivor.id]);
    } finally {
      // Revived while attempt 2 still sleeps: attempt 1's outcome reaches the bridge first.
      process.kill(victim.pid, 'SIGCONT');
    }
    await waitFor('the revived worker to register again', () => registrations(victim) >= 2, 20_000);
    const out = (await call.get()) as Slept;
    expect(out).toMatchObject({ slept: 4000, worker: survivor.id });
    const final = await info(call.id);
    expect(final).toMatchObject({ state: CallState.CALL_STATE_SUCCEEDED, attempt: 2, workerId: survivor.id });
    expect(final.decisions.map((d) => d.workerId)).toEqual([victimId, survivor.id]);
    // Asked again, the caller still gets attempt 2's result.
    expect(((await new FunctionCall(stowage.connection, call.id).get()) as Slept).worker).toBe(survivor.id);

    const listed = await waitFor('both workers to be listed', async () => {
      const ws = await BridgeAdmin.workers(stowage.connection);
      return ws.length === 2 ? ws : undefined;
    });
    expect(listed.map((x) => x.workerId).sort()).toEqual(['h1', 'h2']);
    // Two calls at once on two one-slot workers: the revived one takes one of them.
    const both = (await fixtureFn<[number]>(app, 'sleep').map([800, 800])) as Slept[];
    expect(both.map((o) => o.worker).sort()).toEqual(['h1', 'h2']);
  });

  it('a worker whose connection drops while the bridge runs: its call is retried elsewhere, it reconnects, and the attempt it still runs is cancelled', async () => {
    const call = await fixtureFn<[number]>(app, 'sleep', { retries: 1 }).spawn(4000);
    const victimId = await workerRunning(stowage.connection, call.id, workers);
    const victim = workers.get(victimId)!;
    const survivor = other(victimId);
    const [runner] = runnerPids(victim.pid);
    const before = registrations(victim);
    const port = Number(stowage.server.address.split(':').pop());
    // `ss -K` must be able to cut it (root, SOCK_DESTROY); a machine where it cannot fails here rather than skipping.
    expect(cutConnections(victim.pid, port), 'connections of the worker cut with ss -K').toBeGreaterThan(0);
    await waitFor('the worker to reconnect and register again', () => registrations(victim) > before, 20_000);
    const out = (await call.get()) as Slept;
    expect(out).toMatchObject({ slept: 4000, worker: survivor.id });
    const final = await info(call.id);
    expect(final).toMatchObject({ state: CallState.CALL_STATE_SUCCEEDED, attempt: 2, workerId: survivor.id });
    expect(final.decisions.map((d) => d.workerId)).toEqual([victimId, survivor.id]);
    // It re-registered still running attempt 1, which the bridge no longer expects: its runner was killed.
    await waitFor("the reconnected worker's runner of attempt 1 to be killed", () => !isAlive(runner!), 5000);
    const both = (await fixtureFn<[number]>(app, 'sleep').map([800, 800])) as Slept[];
    expect(both.map((o) => o.worker).sort()).toEqual(['h1', 'h2']);
  });

  it('spawn returns a handle whose get() may come after the call finished, from any handle with its id', async () => {
    const sum = await fixtureFn<[number, number]>(app, 'add').spawn(20, 22);
    const failing = await fixtureFn<[string]>(app, 'fail').spawn('too late to catch');
    await waitFor('both calls to finish', async () => {
      const states = await Promise.all([sum, failing].map(async (c) => (await info(c.id)).state));
      return states.every((s) => s === CallState.CALL_STATE_SUCCEEDED || s === CallState.CALL_STATE_FAILED);
    });
    expect(await sum.get()).toBe(42);
    expect(await sum.get()).toBe(42);
    expect(await new FunctionCall(stowage.connection, sum.id).get()).toBe(42);
    const err = await failing.get().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FunctionError);
    expect((err as Error).message).toBe('too late to catch');
    const unknown = await new FunctionCall(stowage.connection, 'fc-no-such-call').get().catch((e: unknown) => e);
    expect(unknown).toBeInstanceOf(NotFoundError);
    expect((unknown as Error).message).toContain('stowage bridge calls');
  });
});

describe('stowage serve --placement round-robin', () => {
  let serve: ServeProcess | undefined;
  let connection: Connection | undefined;
  const started: WorkerProcess[] = [];

  afterAll(async () => {
    connection?.close();
    await Promise.all(started.map((w) => w.kill('SIGKILL')));
    cleanUpWorkers();
    await serve?.kill('SIGKILL');
  });

  it('places calls on the workers in turn, whatever they cache, and explains it', async () => {
    serve = await spawnServe(tempDir('bridge-rr'), await freePort(), ['--placement', 'round-robin']);
    expect(serve.stderr()).toContain('bridge placement: round-robin');
    const { address, token } = serve;
    connection = new Connection({ server: address, token });
    const dataset = uniqueName('rr');
    const vol = await Volume.fromName(dataset, { connection, createIfMissing: true, chunkSize: 64 * KiB });
    await vol.batchUpload().putFile(randomBytes(128 * KiB), '/shards/a.bin').commit();
    started.push(...(await Promise.all(['rr-a', 'rr-b'].map((id) => startWorker({ id, server: address, token, slots: 2 })))));
    const app = new App('rr', { connection });
    const digest = fixtureFn<[string]>(app, 'digest', { volumes: { '/data': dataset }, reads: ((p: string) => [`/data${p}`]) as (...a: unknown[]) => string[] });
    const ids: string[] = [];
    const ran: string[] = [];
    for (let i = 0; i < 4; i++) {
      const call = await digest.spawn('/shards/a.bin');
      ids.push(call.id);
      ran.push(((await call.get()) as Digest).worker);
      if (i === 0) {
        // Wait until the first worker reports the shard it read, so the next placement could have used it.
        await waitFor('the first worker to report its cached chunks', async () => (await BridgeAdmin.workers(connection)).find((w) => w.workerId === ran[0])!.cachedChunks >= 2);
      }
    }
    // One call at a time on two idle two-slot workers: `ours` would send every call to the worker caching the shard.
    expect(ran).toEqual(['rr-a', 'rr-b', 'rr-a', 'rr-b']);
    const second = await BridgeAdmin.call(ids[1]!, connection);
    const d = second.decisions[0]!;
    expect(d).toMatchObject({ policy: 'round-robin', workerId: 'rr-b', reason: 'round-robin: next free worker in turn' });
    expect(Object.fromEntries(d.candidates.map((c) => [c.workerId, c.cachedBytes]))).toEqual({ 'rr-a': 128 * KiB, 'rr-b': 0 });
    const cli = await runCli(['bridge', 'explain', ids[1]!], { STOWAGE_SERVER: address, STOWAGE_TOKEN: token });
    expect(cli.code, cli.stderr).toBe(0);
    expect(cli.stdout).toContain('attempt 1 -> rr-b (round-robin; waited');
    expect(cli.stdout).toContain('round-robin: next free worker in turn');
  });

  it('an unknown policy exits 2 naming the choices', () => {
    // spawnSync with a timeout: a serve that accepted the flag would otherwise keep running.
    const r = spawnSync(process.execPath, [CLI, 'serve', '--data-dir', tempDir('bridge-bad-placement'), '--port', '0', '--placement', 'nearest'], {
      encoding: 'utf8',
      timeout: 30_000,
      killSignal: 'SIGKILL',
      env: { ...process.env, STOWAGE_LOG_LEVEL: 'warn' },
    });
    expect(r.status, r.stderr).toBe(2);
    expect(r.stderr).toContain('--placement "nearest": choose from ours, round-robin, random');
    expect(r.stderr).not.toContain('stowage serving on');
  });
});
