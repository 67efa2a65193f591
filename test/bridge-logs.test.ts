/**
 * A function's stdout and stderr, end to end: real `stowage worker`
 * processes run fixtures of test/fixtures/bridge/jobs.mjs, and the output
 * reaches the caller live (SDK call.logs, `stowage run`, `stowage bridge logs
 * --follow`) and later (`stowage bridge logs`, also after a bridge restart).
 * Live means before the call ends: `chatter` waits for a gate file after its
 * first lines, so a test sees them while the call is certainly running, then
 * opens the gate. Needs `npm run build` first (workers and the CLI run dist/).
 */
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { App, BridgeAdmin, Connection, callLogs, type CallOutput } from '../src/client/index.js';
import { CallState } from '../src/gen/stowage/v1/bridge.js';
import { FIXTURE, cleanUpWorkers, spawnServe, startWorker, waitFor, type ServeProcess, type WorkerProcess, stopServeAndWorker } from './support/bridge.js';
import { CLI, freePort, removeDir, runCli, startStowage, tempDir, uniqueName, type Stowage } from './support/processes.js';

const MiB = 1024 * 1024;
const textOf = (entries: CallOutput[], stream: 'stdout' | 'stderr') =>
  Buffer.concat(entries.filter((e) => e.stream === stream).map((e) => e.data)).toString();

/** A CLI process whose output is read as it comes. */
function startCli(args: string[], env: Record<string, string>) {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number>((resolve) => child.once('close', (code) => resolve(code ?? -1)));
  return {
    stdout: () => stdout,
    stderr: () => stderr,
    exited,
    running: () => child.exitCode === null && child.signalCode === null,
    kill: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}

/** Peak and current resident size of a process, in bytes (/proc/PID/status). */
function memoryOf(pid: number): { peak: number; now: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)![1]) * 1024;
  return { peak: kb('VmHWM'), now: kb('VmRSS') };
}

describe('function output: live and kept (1 worker, local store)', () => {
  let stowage: Stowage;
  let worker: WorkerProcess;
  let env: Record<string, string>;
  let app: App;
  const work = tempDir('bridge-logs');
  const clis: ReturnType<typeof startCli>[] = [];
  const gate = () => join(work, uniqueName('gate'));

  beforeAll(async () => {
    stowage = await startStowage();
    const { address, token } = stowage.server;
    env = { STOWAGE_SERVER: address, STOWAGE_TOKEN: token, STOWAGE_LOG_LEVEL: 'warn' };
    worker = await startWorker({ id: uniqueName('lw'), server: address, token, slots: 2 });
    app = new App('logs', { connection: stowage.connection });
  }, 60_000);

  afterAll(async () => {
    for (const c of clis) c.kill();
    await worker?.kill();
    cleanUpWorkers();
    await stowage?.stop();
    removeDir(work);
  });

  const fixture = <A extends unknown[]>(name: string) => app.function<A, unknown>({ module: FIXTURE, name }, () => undefined);
  const cli = (args: string[]) => {
    const c = startCli(args, env);
    clis.push(c);
    return c;
  };

  it('streams output to the SDK caller while the call runs, stdout and stderr apart, then ends with the call', async () => {
    const open = gate();
    const call = await fixture<[string]>('chatter').spawn(open);
    const seen: CallOutput[] = [];
    for await (const e of call.logs({ follow: true })) {
      seen.push(e);
      if (seen.length === 1) {
        // The gate is shut: the call cannot have finished.
        expect((await BridgeAdmin.call(call.id, stowage.connection)).state).toBe(CallState.CALL_STATE_RUNNING);
      }
      if (textOf(seen, 'stdout').includes('first line') && textOf(seen, 'stderr').includes('first line')) writeFileSync(open, '');
    }
    expect(await call.get()).toBe('chatted');
    expect(textOf(seen, 'stdout')).toBe('out: first line\nout: second line\n');
    expect(textOf(seen, 'stderr')).toBe('err: first line\nerr: second line\n');
    expect(seen.every((e) => e.attempt === 1 && e.droppedBytes === 0)).toBe(true);

    // Later, from what the bridge kept: the same bytes, raw, or as JSON Lines naming their stream.
    const raw = await runCli(['bridge', 'logs', call.id], env);
    expect(raw.code, raw.stderr).toBe(0);
    expect(raw.stdout.split('\n').filter(Boolean).sort()).toEqual(['err: first line', 'err: second line', 'out: first line', 'out: second line']);
    const json = await runCli(['bridge', 'logs', call.id, '--json'], env);
    expect(json.code, json.stderr).toBe(0);
    const lines = json.stdout.trim().split('\n').map((l) => JSON.parse(l) as { stream: string; text: string; at: string; attempt: number });
    expect(lines.filter((l) => l.stream === 'stdout').map((l) => l.text).join('')).toBe('out: first line\nout: second line\n');
    expect(lines.filter((l) => l.stream === 'stderr').map((l) => l.text).join('')).toBe('err: first line\nerr: second line\n');
    expect(lines.every((l) => !Number.isNaN(Date.parse(l.at)) && l.attempt === 1)).toBe(true);
  });

  it('stowage run shows the output live on stderr, the JSON result alone on stdout; -q hides the output', async () => {
    const open = gate();
    const run = cli(['run', `${FIXTURE}#chatter`, JSON.stringify(open)]);
    await waitFor('stowage run to show the first lines', () => run.stderr().includes('out: first line') && run.stderr().includes('err: first line'), 30_000);
    expect(run.running()).toBe(true);
    writeFileSync(open, '');
    expect(await run.exited, run.stderr()).toBe(0);
    expect(JSON.parse(run.stdout())).toBe('chatted');
    expect(run.stderr()).toMatch(/out: first line\n[^]*out: second line\n/);
    expect(run.stderr()).toContain('err: second line\n');

    const shut = gate();
    writeFileSync(shut, '');
    const quiet = await runCli(['run', '-q', `${FIXTURE}#chatter`, JSON.stringify(shut)], env);
    expect(quiet.code, quiet.stderr).toBe(0);
    expect(JSON.parse(quiet.stdout)).toBe('chatted');
    expect(quiet.stderr).not.toContain('first line');
  });

  it('stowage run shows the output of a failing call before its error', async () => {
    const r = await runCli(['run', `${FIXTURE}#complain`, '"boom"'], env);
    expect(r.code).toBe(10);
    expect(r.stdout).toBe('');
    const out = r.stderr.indexOf('out: about to fail\n');
    const err = r.stderr.indexOf('err: about to fail\n');
    const stack = r.stderr.indexOf('RangeError: boom');
    expect(out).toBeGreaterThanOrEqual(0);
    expect(err).toBeGreaterThanOrEqual(0);
    expect(stack).toBeGreaterThan(Math.max(out, err));
  });

  it('stowage bridge logs --follow prints output as it comes and exits when the call finishes', async () => {
    const open = gate();
    const call = await fixture<[string]>('chatter').spawn(open);
    const follow = cli(['bridge', 'logs', call.id, '--follow']);
    await waitFor('--follow to print the first line', () => follow.stdout().includes('out: first line'), 30_000);
    expect(follow.running()).toBe(true);
    writeFileSync(open, '');
    expect(await follow.exited, follow.stderr()).toBe(0);
    expect(follow.stdout()).toContain('out: second line\n');
    expect(follow.stdout()).toContain('err: second line\n');
    expect(await call.get()).toBe('chatted');
  });

  it('says how to list calls for the logs of an unknown call', async () => {
    const r = await runCli(['bridge', 'logs', 'fc-no-such-call'], env);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/call "?fc-no-such-call"? not found[^]*stowage bridge calls/);
    await expect(async () => {
      for await (const e of callLogs(stowage.connection, 'fc-no-such-call')) void e;
    }).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it('bounds a flood of output: the worker stays small, the bridge keeps the newest 1 MiB and says what it dropped', async () => {
    const FLOOD = 1024 * MiB;
    const before = memoryOf(worker.pid);
    const server = memoryOf(process.pid); // the server (bridge included) runs in this process
    const started = performance.now();
    const call = await fixture<[number]>('flood').spawn(FLOOD);
    expect(await call.get()).toBe(FLOOD);
    const seconds = (performance.now() - started) / 1000;
    const after = memoryOf(worker.pid);
    const kept: CallOutput[] = [];
    for await (const e of call.logs()) kept.push(e);
    const keptBytes = kept.filter((e) => !e.droppedBytes).reduce((n, e) => n + e.data.length, 0);
    const dropped = kept.filter((e) => e.droppedBytes).reduce((n, e) => n + e.droppedBytes, 0);
    const serverAfter = memoryOf(process.pid);
    console.log(
      `flood: ${FLOOD / MiB} MiB in ${seconds.toFixed(1)} s; worker RSS ${Math.round(before.now / MiB)} MiB before, peak ${Math.round(after.peak / MiB)} MiB; ` +
        `test process with the server RSS ${Math.round(server.now / MiB)} -> ${Math.round(serverAfter.now / MiB)} MiB (peak ${Math.round(serverAfter.peak / MiB)}); kept ${keptBytes} bytes, ${dropped} told dropped`,
    );
    expect(keptBytes).toBeLessThanOrEqual(1 * MiB);
    expect(keptBytes).toBeGreaterThan(MiB / 2);
    // Every byte the function wrote is kept or told dropped.
    expect(keptBytes + dropped).toBe(FLOOD + 'flood: the end\n'.length);
    expect(Buffer.concat(kept.map((e) => e.data)).toString().endsWith('flood: the end\n')).toBe(true);
    expect(kept[0]!.droppedBytes).toBeGreaterThan(0);
    // Held as it came, the flood would need a GiB: the worker's peak stays within a fixed margin of where it started.
    expect(after.peak - before.now).toBeLessThan(200 * MiB);
  }, 300_000);
});

describe('function output after a bridge restart (stowage serve, LMDB)', () => {
  let serve: ServeProcess | undefined;
  let worker: WorkerProcess | undefined;
  let connection: Connection | undefined;
  const dataDir = tempDir('bridge-logs-restart');

  afterAll(() => stopServeAndWorker({ connection, worker, serve, dataDir }));

  it('keeps a finished call\'s output in the store across a restart', async () => {
    const port = await freePort();
    serve = await spawnServe(dataDir, port);
    connection = new Connection({ server: serve.address, token: serve.token });
    worker = await startWorker({ id: uniqueName('rw'), server: serve.address, token: serve.token, slots: 1 });
    const open = join(dataDir, 'gate-open');
    writeFileSync(open, '');
    const app = new App('logs-restart', { connection });
    const call = await app.function<[string], unknown>({ module: FIXTURE, name: 'chatter' }, () => undefined).spawn(open);
    expect(await call.get()).toBe('chatted');
    // A clean stop writes what is pending (a crash loses at most the last 200 ms: logs.ts).
    await serve.kill('SIGTERM');
    serve = await spawnServe(dataDir, port);
    const env = { STOWAGE_SERVER: serve.address, STOWAGE_TOKEN: serve.token };
    const r = await runCli(['bridge', 'logs', call.id, '--json'], env);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { stream: string; text: string });
    expect(lines.filter((l) => l.stream === 'stdout').map((l) => l.text).join('')).toBe('out: first line\nout: second line\n');
    expect(lines.filter((l) => l.stream === 'stderr').map((l) => l.text).join('')).toBe('err: first line\nerr: second line\n');
  }, 90_000);
});
