/**
 * The call API a Modal user expects, end to end: a stowage server in this
 * process and two `stowage worker` processes. Maps that stream (in input
 * order or as calls finish, errors thrown or yielded in place), starmap,
 * forEach, spawnMap, get with a timeout, cancel (of a running, a queued, a
 * finished and an unknown call; SDK and CLI), and retries of exceptions with
 * backoff. Needs `npm run build` first (workers run the built CLI).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  App,
  BridgeAdmin,
  CancelledError,
  DeadlineExceededError,
  FailedPreconditionError,
  FunctionError,
  NotFoundError,
} from '../src/client/index.js';
import { CallState } from '../src/gen/stowage/v1/bridge.js';
import { FIXTURE, cleanUpWorkers, isAlive, startWorker, waitFor, type WorkerProcess } from './support/bridge.js';
import { removeDir, runCli, startStowage, tempDir, uniqueName, type Stowage } from './support/processes.js';

describe('compute bridge: the call API (map streaming, cancel, retries)', () => {
  let stowage: Stowage;
  let workers: WorkerProcess[] = [];
  let env: Record<string, string>;
  let app: App;
  const work = tempDir('bridge-api');

  beforeAll(async () => {
    stowage = await startStowage();
    const { address, token } = stowage.server;
    env = { STOWAGE_SERVER: address, STOWAGE_TOKEN: token, STOWAGE_LOG_LEVEL: 'warn' };
    workers = await Promise.all([
      startWorker({ id: uniqueName('api-w1'), server: address, token, slots: 2 }),
      startWorker({ id: uniqueName('api-w2'), server: address, token, slots: 2 }),
    ]);
    app = new App('api', { connection: stowage.connection });
  }, 90_000);

  afterAll(async () => {
    await Promise.all(workers.map((w) => w.kill()));
    cleanUpWorkers();
    await stowage?.stop();
    removeDir(work);
  });

  const fixture = <A extends unknown[], R = unknown>(name: string, opts: Parameters<App['function']>[0] = {}) =>
    app.function<A, R>({ ...opts, module: FIXTURE, name }, () => undefined as R);

  it('starmap spreads each input as the arguments; map passes it as the one argument', async () => {
    const add = fixture<[number, number], number>('add');
    expect(await add.starmap([[1, 2], [3, 4], [5, 6]])).toEqual([3, 7, 11]);
    // As in Modal: map gives each input as the single argument.
    expect(await fixture<[string], string>('add').map(['x'])).toEqual(['xundefined']);
    const err = await (add.starmap([[1, 2], 3 as unknown as [number, number]]) as PromiseLike<number[]>).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect((err as Error).message).toMatch(/starmap input 2 of add is not an array of arguments/);
  });

  it('map streams results in input order, before the slowest call has finished', async () => {
    const sleep = fixture<[number], { slept: number }>('sleep');
    const seen: number[] = [];
    let slowStillRunning: boolean | undefined;
    for await (const r of sleep.map([10, 20, 8000])) {
      seen.push(r.slept);
      if (seen.length === 1) {
        const calls = await BridgeAdmin.calls({ limit: 20 }, stowage.connection);
        const slow = calls.find((c) => c.function?.function === 'sleep' && c.state !== CallState.CALL_STATE_SUCCEEDED);
        slowStillRunning = slow !== undefined;
      }
    }
    expect(seen).toEqual([10, 20, 8000]);
    expect(slowStillRunning).toBe(true);
  }, 60_000);

  it('map with ordered: false yields calls as they finish', async () => {
    const sleep = fixture<[number], { slept: number }>('sleep');
    const seen: number[] = [];
    for await (const r of sleep.map([8000, 10], { ordered: false })) seen.push(r.slept);
    expect(seen).toEqual([10, 8000]);
  }, 60_000);

  it('a failing input: awaiting the map throws its error; returnExceptions yields it in place and goes on', async () => {
    const f = fixture<[number, number], number>('squareOrFail');
    const inputs: [number, number][] = [1, 2, 3, 4, 5].map((x) => [x, 3]);
    const err = await (f.starmap(inputs) as PromiseLike<number[]>).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(FunctionError);
    expect((err as Error).message).toBe('input 3 is bad');
    const out = await f.starmap(inputs, { returnExceptions: true });
    expect(out.slice(0, 2)).toEqual([1, 4]);
    expect(out[2]).toBeInstanceOf(FunctionError);
    expect((out[2] as unknown as Error).message).toBe('input 3 is bad');
    expect(out.slice(3)).toEqual([16, 25]);
  }, 60_000);

  it('forEach waits for every call; spawnMap returns one handle per input at once', async () => {
    const dir = join(work, uniqueName('each'));
    // flaky(file) without a failure count never fails: it appends a line to `file` per call.
    const files = [0, 1, 2].map((i) => `${dir}-${i}`);
    await fixture<[string], unknown>('flaky').forEach(files);
    for (const f of files) expect(readFileSync(f, 'utf8').trim().split('\n')).toHaveLength(1);
    const calls = await fixture<[number], { square: number }>('square').spawnMap([2, 3, 4]);
    expect(calls).toHaveLength(3);
    expect(new Set(calls.map((c) => c.id)).size).toBe(3);
    expect((await Promise.all(calls.map((c) => c.get()))).map((r) => r.square)).toEqual([4, 9, 16]);
  }, 60_000);

  it('get({ timeoutMs }) gives up waiting with DeadlineExceededError while the call goes on', async () => {
    const call = await fixture<[number], { slept: number }>('sleep').spawn(3000);
    const err = await call.get({ timeoutMs: 200 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DeadlineExceededError);
    expect((err as Error).message).toMatch(new RegExp(`call ${call.id} did not finish within 200 ms; it goes on`));
    expect((await call.get()).slept).toBe(3000);
  }, 60_000);

  it('cancel of a running call stops its function process; the caller gets CancelledError', async () => {
    const pidFile = join(work, `${uniqueName('hang')}.pid`);
    const call = await fixture<[string, number], string>('hang').spawn(pidFile, 120_000);
    const pid = await waitFor('the function to start', () => (existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8')) : undefined), 30_000);
    expect(isAlive(pid)).toBe(true);
    await call.cancel();
    const err = await call.get().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CancelledError);
    expect((err as Error).message).toMatch(new RegExp(`call ${call.id} of hang was cancelled while running on worker`));
    await waitFor('the cancelled function process to exit', () => !isAlive(pid) || undefined, 15_000);
    // A finished call cannot be cancelled again, and says so.
    expect(await call.cancel().catch((e: unknown) => e)).toBeInstanceOf(FailedPreconditionError);
    const r = await runCli(['bridge', 'cancel', call.id], env);
    expect(r.code).toBe(5);
    expect(r.stderr).toMatch(/already finished \(failed: CANCELLED\); there is nothing to cancel/);
    const ok = await runCli(['bridge', 'cancel', call.id, '--ignore-finished', '--json'], env);
    expect(ok.code, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout)).toEqual({ cancelled: 0 });
  }, 60_000);

  it('cancel of a queued call (every slot busy) fails it before it runs; stowage bridge cancel takes several ids', async () => {
    const hang = fixture<[string, number], string>('hang');
    const busy = await Promise.all([0, 1, 2, 3].map((i) => hang.spawn(join(work, `${uniqueName(`busy${i}`)}.pid`), 120_000)));
    await waitFor('all four slots to be taken', async () => {
      const ws = await BridgeAdmin.workers(stowage.connection);
      return ws.filter((w) => workers.some((x) => x.id === w.workerId)).every((w) => w.running === w.slots) || undefined;
    }, 30_000);
    const queued = await hang.spawn(join(work, `${uniqueName('queued')}.pid`), 1000);
    expect((await BridgeAdmin.call(queued.id, stowage.connection)).state).toBe(CallState.CALL_STATE_QUEUED);
    await queued.cancel();
    const err = await queued.get().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CancelledError);
    expect((err as Error).message).toMatch(/was cancelled before it ran/);
    // All or none: a finished call among them refuses the whole request, and the running one goes on.
    const mixed = await runCli(['bridge', 'cancel', busy[0]!.id, queued.id], env);
    expect(mixed.code).toBe(5);
    expect(mixed.stderr).toMatch(new RegExp(`call "${queued.id}" already finished`));
    expect((await BridgeAdmin.call(busy[0]!.id, stowage.connection)).state).toBe(CallState.CALL_STATE_RUNNING);
    const r = await runCli(['bridge', 'cancel', ...busy.map((c) => c.id)], env);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/cancelled 4 calls/);
    for (const c of busy) expect(await c.get().catch((e: unknown) => e)).toBeInstanceOf(CancelledError);
    // An unknown call: NOT_FOUND, exit 3, naming how to list calls.
    expect(await BridgeAdmin.cancel(['fc-no-such-call'], {}, stowage.connection).catch((e: unknown) => e)).toBeInstanceOf(NotFoundError);
    const unknown = await runCli(['bridge', 'cancel', 'fc-no-such-call'], env);
    expect(unknown.code).toBe(3);
    expect(unknown.stderr).toMatch(/call "fc-no-such-call" not found .*stowage bridge calls/);
  }, 90_000);

  it('retries an exception with backoff ({ maxRetries, initialDelayMs, backoffCoefficient }) until it succeeds', async () => {
    const file = join(work, uniqueName('flaky'));
    const f = fixture<[string, number], { attempts: number }>('flaky', { retries: { maxRetries: 3, initialDelayMs: 400, backoffCoefficient: 2 } });
    const call = await f.spawn(file, 2);
    expect((await call.get()).attempts).toBe(3);
    const times = readFileSync(file, 'utf8').trim().split('\n').map(Number);
    expect(times).toHaveLength(3);
    // The bridge places no retry before its backoff is over: 400 ms, then 800 ms.
    expect(times[1]! - times[0]!).toBeGreaterThanOrEqual(400);
    expect(times[2]! - times[1]!).toBeGreaterThanOrEqual(800);
    const info = await BridgeAdmin.call(call.id, stowage.connection);
    expect(info.attempt).toBe(3);
    expect(info.decisions).toHaveLength(3);
  }, 60_000);

  it('a number of retries is that many retries 1 s apart; when they run out the last error says so', async () => {
    const file = join(work, uniqueName('flaky'));
    const err = await fixture<[string, number], unknown>('flaky', { retries: 1 }).remote(file, 5).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FunctionError);
    expect((err as Error).message).toBe('attempt 2 fails on purpose (attempt 2 of 2; no retries left)');
    const times = readFileSync(file, 'utf8').trim().split('\n').map(Number);
    expect(times).toHaveLength(2);
    expect(times[1]! - times[0]!).toBeGreaterThanOrEqual(1000);
    // Without retries an exception is final at once.
    const once = join(work, uniqueName('flaky'));
    expect(await fixture<[string, number], unknown>('flaky').remote(once, 1).catch((e: unknown) => e)).toBeInstanceOf(FunctionError);
    expect(readFileSync(once, 'utf8').trim().split('\n')).toHaveLength(1);
  }, 60_000);

  it('bad retry options are refused before anything is submitted', async () => {
    for (const [retries, msg] of [
      [-1, /retries must be 0 to 100, got -1/],
      [{ maxRetries: 2, backoffCoefficient: 0.5 }, /backoffCoefficient must be 1 to 10, got 0.5/],
      [{ maxRetries: 2, initialDelayMs: -5 }, /retries.initialDelayMs -5 is not a duration/],
    ] as const) {
      const err = await fixture<[number, number], number>('add', { retries: retries as never }).remote(1, 2).catch((e: unknown) => e);
      expect((err as Error).message).toMatch(msg);
    }
  });
});
