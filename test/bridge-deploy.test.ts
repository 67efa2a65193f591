/**
 * Deployed functions end to end: `stowage serve` as a child process (LMDB
 * store, so it can be killed and started again on the same data) and one
 * `stowage worker`. test/fixtures/bridge/deploy.mjs is copied into a
 * directory of its own, deployed from there with `stowage deploy`, and that
 * directory is deleted before the functions are called by name, from the SDK
 * (DeployedFunction.fromName, exported also as Function) and from `stowage
 * run APP/FUNCTION`. Then: a redeploy without a function removes it (and
 * leaves the rest), deploys survive a restart of the server, an undeployed
 * function or app fails with NOT_FOUND naming `stowage deploy`, and a
 * schedule's time zone sets its next run (compared with croner's own answer
 * and a fixed offset; no tick is waited for) while a bad zone is refused
 * with nothing changed. Needs `npm run build` first.
 */
import { cpSync, mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { Cron } from 'croner';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BridgeAdmin, Connection, DeployedFunction, Function as StowageFunction, NotFoundError, listDeployedFunctions } from '../src/client/index.js';
import { spawnServe, startWorker, waitFor, type ServeProcess, type WorkerProcess, stopServeAndWorker } from './support/bridge.js';
import { ROOT, freePort, removeDir, runCli, tempDir, uniqueName } from './support/processes.js';

const FIXTURE = join(ROOT, 'test', 'fixtures', 'bridge', 'deploy.mjs');
type Sum = { sum: number; worker: string };

describe('compute bridge: deployed functions called by name, without the source', () => {
  let serve: ServeProcess | undefined;
  let worker: WorkerProcess | undefined;
  let connection: Connection | undefined;
  let port = 0;
  let env: Record<string, string> = {};
  const dataDir = tempDir('bridge-deploy');
  const appName = uniqueName('deployed');

  /** `stowage deploy` of a fresh copy of the fixture (its `stowage` import resolving to this checkout), the copy deleted afterwards. */
  const deploy = async (extraEnv: Record<string, string> = {}) => {
    const dir = tempDir('deploy-src');
    try {
      mkdirSync(join(dir, 'node_modules'));
      symlinkSync(ROOT, join(dir, 'node_modules', 'stowage'), 'dir');
      cpSync(FIXTURE, join(dir, 'app.mjs'));
      return await runCli(['deploy', join(dir, 'app.mjs')], { ...env, DEPLOY_APP: appName, ...extraEnv });
    } finally {
      removeDir(dir);
    }
  };

  beforeAll(async () => {
    port = await freePort();
    serve = await spawnServe(dataDir, port);
    env = { STOWAGE_SERVER: serve.address, STOWAGE_TOKEN: serve.token, STOWAGE_LOG_LEVEL: 'warn' };
    connection = new Connection({ server: serve.address, token: serve.token });
    worker = await startWorker({ id: 'd1', server: serve.address, token: serve.token, slots: 2 });
  }, 60_000);

  afterAll(() => stopServeAndWorker({ connection, worker, serve, dataDir }));

  it('deploys every function of the module and calls them by name from the SDK and from stowage run', async () => {
    const r = await deploy();
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`deployed: ${appName}/add, ${appName}/shout, ${appName}/nightly`);
    expect(r.stdout).toContain(`scheduled: ${appName}.nightly`);
    // A reads function cannot travel with the deploy: the output says so.
    expect(r.stdout).toMatch(new RegExp(`note: ${appName}/shout: its reads are a function`));

    const add = DeployedFunction.fromName<[number, number], Sum>(appName, 'add', { connection });
    expect(await add.remote(2, 3)).toMatchObject({ sum: 5, worker: 'd1' });
    expect((await add.starmap([[1, 2], [3, 4]])).map((r) => r.sum)).toEqual([3, 7]);
    const shout = StowageFunction.fromName<[string], string>(appName, 'shout', { connection });
    expect(await shout.remote('hi')).toBe('HI!');
    // The deploy's options travelled with the spec.
    const info = await add.describe();
    expect(info.function).toMatchObject({ function: 'add', timeoutMs: 60_000, retries: 1 });

    const run = await runCli(['run', `${appName}/add`, '40', '2'], env);
    expect(run.code, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({ sum: 42 });
    const mapped = await runCli(['run', `${appName}/shout`, '--map', '-'], env, Buffer.from('["a", "b"]'));
    expect(mapped.code, mapped.stderr).toBe(0);
    expect(JSON.parse(mapped.stdout)).toEqual(['A!', 'B!']);
    const detached = await runCli(['run', `${appName}/shout`, '"c"', '--detach'], env);
    expect(detached.code, detached.stderr).toBe(0);
    expect(await BridgeAdmin.call(detached.stdout.trim(), connection)).toMatchObject({ function: { function: 'shout' } });
    const listed = await runCli(['bridge', 'functions', '--json'], env);
    expect(listed.code, listed.stderr).toBe(0);
    const rows = (JSON.parse(listed.stdout) as { name: string; cron?: string; timezone?: string }[]).filter((f) => f.name.startsWith(`${appName}/`));
    expect(rows.map((f) => f.name)).toEqual([`${appName}/add`, `${appName}/nightly`, `${appName}/shout`]);
    expect(rows[1]).toMatchObject({ cron: '0 3 * * *', timezone: 'Asia/Kolkata' });
  });

  it("reads a schedule's cron fields in its time zone", async () => {
    const s = (await BridgeAdmin.schedules(connection)).find((x) => x.name === `${appName}.nightly`);
    expect(s).toMatchObject({ cron: '0 3 * * *', timezone: 'Asia/Kolkata' });
    const next = new Date(s!.nextRunMs);
    // 03:00 in Kolkata (UTC+05:30 all year) is 21:30 UTC.
    expect([next.getUTCHours(), next.getUTCMinutes()]).toEqual([21, 30]);
    const croner = new Cron('0 3 * * *', { timezone: 'Asia/Kolkata', paused: true });
    // From a second before the bridge's answer (not from now, which may have passed a tick since): the same instant.
    expect(s!.nextRunMs).toBe(croner.nextRun(new Date(s!.nextRunMs - 1000))!.getTime());
    croner.stop();
    const shown = await runCli(['bridge', 'schedules'], env);
    expect(shown.stdout).toMatch(new RegExp(`${appName}\\.nightly\\s+0 3 \\* \\* \\*\\s+Asia/Kolkata`));
  });

  it('refuses a deploy with a bad time zone, naming it, and changes nothing', async () => {
    const r = await deploy({ DEPLOY_TIMEZONE: 'Mars/Olympus_Mons', DEPLOY_DROP_SHOUT: '1' });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/time zone "Mars\/Olympus_Mons" is not an IANA time zone/);
    const names = (await listDeployedFunctions({ app: appName }, connection)).map((f) => f.name);
    expect(names).toEqual(['add', 'nightly', 'shout']);
  });

  it('a redeploy without a function removes it: calling it is NOT_FOUND, the others still run', async () => {
    const r = await deploy({ DEPLOY_DROP_SHOUT: '1' });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`removed: ${appName}/shout`);
    const shout = DeployedFunction.fromName<[string], string>(appName, 'shout', { connection });
    await expect(shout.remote('hi')).rejects.toThrow(NotFoundError);
    await expect(shout.remote('hi')).rejects.toThrow(`function "shout" of app "${appName}" is not deployed`);
    const run = await runCli(['run', `${appName}/shout`, '"hi"'], env);
    expect(run.code).toBe(3);
    expect(run.stderr).toContain('stowage deploy');
    expect(await DeployedFunction.fromName<[number, number], Sum>(appName, 'add', { connection }).remote(1, 1)).toMatchObject({ sum: 2 });
  });

  it('fromName of a function never deployed, or of an unknown app, fails with NotFoundError naming stowage deploy', async () => {
    const missing = DeployedFunction.fromName(appName, 'nope', { connection });
    await expect(missing.remote()).rejects.toThrow(NotFoundError);
    await expect(missing.spawn()).rejects.toThrow(/function "nope" of app ".*" is not deployed \(the app has: add, nightly; deploy it with: stowage deploy MODULE\)/);
    const noApp = DeployedFunction.fromName('no-such-app-' + appName, 'add', { connection });
    await expect(noApp.remote()).rejects.toThrow(/app "no-such-app-.*" is not deployed \(deploy it with: stowage deploy MODULE/);
  });

  it('deployed functions survive a restart of the server', async () => {
    await serve!.kill('SIGKILL');
    serve = await spawnServe(dataDir, port);
    await waitFor('the worker to register again', () => (worker!.stdout().match(/registered with the bridge/g) ?? []).length >= 2, 20_000);
    const run = await runCli(['run', `${appName}/add`, '20', '22'], env);
    expect(run.code, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({ sum: 42 });
    const names = (await listDeployedFunctions({ app: appName }, connection)).map((f) => f.name);
    expect(names).toEqual(['add', 'nightly']);
    expect((await BridgeAdmin.schedules(connection)).map((s) => s.name)).toContain(`${appName}.nightly`);
    const un = await runCli(['bridge', 'undeploy', appName], env);
    expect(un.code, un.stderr).toBe(0);
    expect((await BridgeAdmin.schedules(connection)).map((s) => s.name)).not.toContain(`${appName}.nightly`);
    expect((await runCli(['run', `${appName}/add`, '1', '2'], env)).code).toBe(3);
  });
});
