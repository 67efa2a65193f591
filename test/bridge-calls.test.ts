/**
 * The compute bridge end to end on the local store: a stowage server in this
 * process (bridge included) and two `stowage worker` processes, each with its
 * own cache directory and its own real FUSE mounts. Functions come from
 * test/fixtures/bridge/jobs.mjs, bundled into the code volume by the SDK or
 * by `stowage run`. Needs `npm run build` first (workers run the built CLI).
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  App,
  BridgeAdmin,
  DeadlineExceededError,
  FunctionError,
  InvalidArgumentError,
  NotFoundError,
  Volume,
  type RemoteErrorDetails,
} from '../src/client/index.js';
import { FIXTURE, cleanUpWorkers, isAlive, runnerPids, startWorker, waitFor, type WorkerProcess } from './support/bridge.js';
import { removeDir, runCli, startStowage, tempDir, uniqueName, type Stowage } from './support/processes.js';
import { KiB } from './support/volume-data.js';

describe('compute bridge: calls, placement, errors (2 workers, local store)', () => {
  let stowage: Stowage;
  let w1: WorkerProcess;
  let w2: WorkerProcess;
  let env: Record<string, string>;
  let app: App;
  const dataset = uniqueName('dataset');
  const work = tempDir('bridge-calls');
  /** Shards of 256 KiB in chunks of 64 KiB: four chunks each. */
  const SHARD = 256 * KiB;

  beforeAll(async () => {
    stowage = await startStowage();
    const { address, token } = stowage.server;
    env = { STOWAGE_SERVER: address, STOWAGE_TOKEN: token, STOWAGE_LOG_LEVEL: 'warn' };
    const local = join(work, 'data', 'shards');
    mkdirSync(local, { recursive: true });
    for (const s of ['a', 'b', 'c']) writeFileSync(join(local, `${s}.bin`), randomBytes(SHARD));
    const vol = await Volume.fromName(dataset, { connection: stowage.connection, createIfMissing: true, chunkSize: 64 * KiB });
    await vol.batchUpload().putDirectory(join(work, 'data'), '/').commit();
    [w1, w2] = await Promise.all([
      startWorker({ id: 'w1', server: address, token, slots: 2 }),
      startWorker({ id: 'w2', server: address, token, slots: 2 }),
    ]);
    app = new App('calls', { connection: stowage.connection });
  }, 90_000);

  afterAll(async () => {
    await Promise.all([w1?.kill(), w2?.kill()]);
    cleanUpWorkers();
    await stowage?.stop();
    removeDir(work);
  });

  /** The fixture's `name` export, run through an App of this test's SDK. */
  const fixture = <A extends unknown[]>(name: string, opts: Parameters<App['function']>[0] = {}) =>
    app.function<A, unknown>({ ...opts, module: FIXTURE, name }, () => undefined);
  const shardFn = () =>
    fixture<[string]>('readShard', { volumes: { '/data': dataset }, reads: ((s: string) => [`/data/shards/${s}`]) as (...a: unknown[]) => string[] });

  it('runs a call and returns its result (SDK remote and stowage run)', async () => {
    expect(await fixture<[number, number]>('add').remote(2, 3)).toBe(5);
    const r = await runCli(['run', `${FIXTURE}#add`, '40', '2'], env);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toBe(42);
  });

  it('places each call on the worker whose cache holds its shard, and explains why', async () => {
    // Warm shard a into w2's cache and shard b into w1's, as `stowage volume warmup` on their hosts would.
    for (const [shard, w] of [['a', w2], ['b', w1]] as const) {
      const r = await runCli(['volume', 'warmup', dataset, `/shards/${shard}.bin`, '--cache-dir', w.cacheDir], env);
      expect(r.code, r.stderr).toBe(0);
    }
    // The workers report their caches within a scan interval.
    await waitFor('both workers to report their warmed chunks', async () => {
      const ws = await BridgeAdmin.workers(stowage.connection);
      return ws.length === 2 && ws.every((w) => w.cachedChunks >= 4);
    });
    const fn = shardFn();
    const ran: { shard: string; worker: string; callId: string }[] = [];
    for (const shard of ['a.bin', 'b.bin', 'a.bin', 'b.bin', 'a.bin']) {
      const call = await fn.spawn(shard);
      const out = (await call.get()) as { bytes: number; worker: string };
      expect(out.bytes).toBe(SHARD);
      ran.push({ shard, worker: out.worker, callId: call.id });
    }
    expect(ran.map((r) => `${r.shard}@${r.worker}`)).toEqual(['a.bin@w2', 'b.bin@w1', 'a.bin@w2', 'b.bin@w1', 'a.bin@w2']);
    const info = await BridgeAdmin.call(ran[0]!.callId, stowage.connection);
    const d = info.decisions[0]!;
    expect(d).toMatchObject({ attempt: 1, policy: 'ours', workerId: 'w2', reason: 'most cached bytes', readBytes: SHARD });
    expect(Object.fromEntries(d.candidates.map((c) => [c.workerId, c.cachedBytes]))).toEqual({ w1: 0, w2: SHARD });
    const cli = await runCli(['bridge', 'explain', ran[1]!.callId], env);
    expect(cli.code, cli.stderr).toBe(0);
    expect(cli.stdout).toContain('attempt 1 -> w1 (ours');
    expect(cli.stdout).toMatch(/w1\s+256 KiB\s+100%/);
    const json = JSON.parse((await runCli(['bridge', 'explain', ran[1]!.callId, '--json'], env)).stdout) as { workerId: string; state: string };
    expect(json).toMatchObject({ workerId: 'w1', state: 'succeeded' });
  });

  it('a call whose data is cached nowhere goes to the least-loaded worker, and then is cached there', async () => {
    const fn = shardFn();
    const chunksOf = async (id: string) => (await BridgeAdmin.workers(stowage.connection)).find((w) => w.workerId === id)!.cachedChunks;
    const before = { w1: await chunksOf('w1'), w2: await chunksOf('w2') };
    const first = (await fn.remote('c.bin')) as { worker: 'w1' | 'w2' };
    const call = (await BridgeAdmin.calls({ limit: 1 }, stowage.connection))[0]!;
    expect(call.decisions[0]!.reason).toBe('no worker caches any of its reads: least-loaded worker');
    // c.bin is 4 chunks, now in the cache of the worker that read it.
    await waitFor('the worker that read c.bin to report it', async () => (await chunksOf(first.worker)) === before[first.worker] + 4);
    const again = (await fn.remote('c.bin')) as { worker: string };
    expect(again.worker).toBe(first.worker);
  });

  it("a user's script calls the handles its module declares with app.function (module found from the call site)", async () => {
    // Not spawnSync: the server answering the script runs in this process.
    const { execFile } = await import('node:child_process');
    const r = await new Promise<{ status: number; stdout: string; stderr: string }>((resolve) => {
      const child = execFile(process.execPath, [FIXTURE.replace('jobs.mjs', 'caller.mjs')], { env: { ...process.env, ...env, JOBS_VOLUME: dataset }, timeout: 60_000 }, (err, stdout, stderr) =>
        resolve({ status: err ? Number(err.code ?? 1) : 0, stdout, stderr }),
      );
      child.stdin?.end();
    });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { one: { name: string; bytes: number }; many: { name: string }[]; sum: number };
    expect(out.one).toMatchObject({ name: 'a.bin', bytes: SHARD });
    expect(out.many.map((m) => m.name)).toEqual(['b.bin', 'a.bin']);
    expect(out.sum).toBe(42);
  });

  it('map returns results in input order, spread over both workers', async () => {
    const inputs = Array.from({ length: 24 }, (_, i) => i);
    let progress = 0;
    const out = (await fixture<[number]>('square').map(inputs, { onProgress: (d) => (progress = d) })) as { x: number; square: number; worker: string }[];
    expect(out.map((o) => o.x)).toEqual(inputs);
    expect(out.map((o) => o.square)).toEqual(inputs.map((i) => i * i));
    expect(progress).toBe(24);
    expect(new Set(out.map((o) => o.worker))).toEqual(new Set(['w1', 'w2']));
  });

  it('stowage run --map prints the results as one JSON array in input order; a bad map file is a clear error', async () => {
    const inputs = [5, 1, 4, 2, 3];
    const file = join(work, 'inputs.json');
    writeFileSync(file, JSON.stringify(inputs));
    const r = await runCli(['run', `${FIXTURE}#square`, '--map', file], env);
    expect(r.code, r.stderr).toBe(0);
    const lines = JSON.parse(r.stdout) as { x: number; square: number }[];
    expect(lines.map((o) => o.x)).toEqual(inputs);
    expect(lines.map((o) => o.square)).toEqual(inputs.map((i) => i * i));

    writeFileSync(file, '{"not": "an array"}');
    const bad = await runCli(['run', `${FIXTURE}#square`, '--map', file], env);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/array/);
  });

  it("a handler that throws: the caller gets its error's name, message and stack", async () => {
    const err = (await fixture<[string]>('fail').remote('shard 7 is corrupt').catch((e: unknown) => e)) as FunctionError & RemoteErrorDetails;
    expect(err).toBeInstanceOf(FunctionError);
    expect(err.code).toBe('FUNCTION_ERROR');
    expect(err.message).toBe('shard 7 is corrupt');
    expect(err.remoteName).toBe('TypeError');
    expect(err.remoteStack).toMatch(/^TypeError: shard 7 is corrupt\n\s+at fail /);
    expect(err.stack).toContain('on worker w');
    const r = await runCli(['run', `${FIXTURE}#fail`, '"no such shard"'], env);
    expect(r.code).toBe(10);
    expect(r.stderr).toContain('TypeError: no such shard');
    expect(r.stderr).toContain('error: no such shard');
  });

  it('an unknown function or module, bad arguments and reads outside the volumes are clear errors', async () => {
    const err = await fixture('nope').remote().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NotFoundError);
    expect((err as Error).message).toMatch(/function "nope" not found in module jobs\.mjs \(exported: .*add.*fail/);
    const cli = await runCli(['run', `${FIXTURE}#nope`], env);
    expect(cli.code).toBe(3);
    expect(cli.stderr).toContain('function "nope" not found in module jobs.mjs');
    const noModule = await runCli(['run', `${work}/missing.mjs#f`], env);
    expect(noModule.code).toBe(3);
    expect(noModule.stderr).toContain('missing.mjs not found');

    const badJson = await runCli(['run', `${FIXTURE}#add`, '1', 'two'], env);
    expect(badJson.code).toBe(2);
    expect(badJson.stderr).toContain('argument 2 "two" is not JSON');
    await expect(fixture<[unknown]>('add').remote(() => 1)).rejects.toBeInstanceOf(InvalidArgumentError);
    const outside = await fixture('add', { volumes: { '/data': dataset }, reads: ['/elsewhere/*'] }).remote().catch((e: unknown) => e);
    expect(outside).toBeInstanceOf(InvalidArgumentError);
    expect((outside as Error).message).toContain('reads "/elsewhere/*" is under no volume of the function (volumes: "/data")');
    const noVolume = await fixture('add', { volumes: { '/data': uniqueName('absent') } }).remote().catch((e: unknown) => e);
    expect(noVolume).toBeInstanceOf(NotFoundError);
  });

  it('a call over its timeout fails with DEADLINE_EXCEEDED naming the timeout, and its runner is killed', async () => {
    const fn = fixture<[number]>('sleep', { timeout: '1500ms' });
    const call = await fn.spawn(60_000);
    const pids = await waitFor('the sleeping call to start', () => {
      const p = [...runnerPids(w1.pid), ...runnerPids(w2.pid)];
      return p.length ? p : undefined;
    });
    const err = await call.get().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DeadlineExceededError);
    expect((err as Error).message).toMatch(/ran past its timeout of 1500ms on worker w[12]/);
    const r = await runCli(['run', `${FIXTURE}#sleep`, '60000', '--timeout', '1s'], env);
    expect(r.code).toBe(9);
    expect(r.stderr).toContain('ran past its timeout of 1s');
    // Runners idle out after 30 s here, so a runner gone now is the one the timeout killed.
    await waitFor('the timed-out call\'s runner to be killed', () => pids.some((p) => !isAlive(p)), 5000);
  });
});
