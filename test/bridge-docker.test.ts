/**
 * The docker runtime (`stowage worker --runtime docker`) on this host's
 * engine: functions run in containers of the worker's image (stowage:latest,
 * scripts/image.sh) or of their own, with their volumes at the declared paths
 * (read, written and committed, read-only where the volume is), their limits
 * (cpu, memory) applied, and containers reused for later calls. Faults: an
 * image that does not exist, a container that exits at start (its log in the
 * error), a container killed mid-call (retried as lost), a GPU the engine
 * cannot give, an engine that stops answering and comes back (through a
 * socket proxy this test stops and starts: stopping the host's dockerd would
 * stop the other container suites' containers too), and leftovers of a
 * SIGKILLed worker removed at the next worker's start. A stowage server in
 * this process; workers run the built CLI. Skips, saying why, where no Docker
 * engine or image is (test/support/containers.ts).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, createServer, type Server } from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTimeOf } from '../src/common/processes.js';
import { App, BridgeAdmin, FunctionError, Volume, type RemoteErrorDetails } from '../src/client/index.js';
import { CallState } from '../src/gen/stowage/v1/bridge.js';
import { FIXTURE, cleanUpWorkers, runnerPids, startWorker, waitFor, type WorkerProcess } from './support/bridge.js';
import { STOWAGE_IMAGE, skipWithoutContainers } from './support/containers.js';
import { removeDir, runCli, startStowage, tempDir, uniqueName, type Stowage } from './support/processes.js';
import { KiB } from './support/volume-data.js';

const CONTAINERS_FIXTURE = join(FIXTURE, '..', 'containers.mjs');
const OWN_IMAGE = 'stowage-test-fn:1';
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const docker = (...args: string[]) => execFileSync('docker', args, { encoding: 'utf8', timeout: 120_000 }).trim();
/** Running runner containers of a worker process (by the label its runtime puts on them: "PID:START-TIME"). */
const containersOf = (workerPid: number) =>
  docker('ps', '--filter', 'label=stowage.runner', '--format', '{{.ID}} {{.Label "stowage.worker-instance"}}')
    .split('\n')
    .filter((l) => l.split(' ')[1]?.startsWith(`${workerPid}:`))
    .map((l) => l.split(' ')[0]!);

interface Where {
  inContainer: boolean;
  /** The container's id (64 hex digits). */
  container: string;
}

describe.skipIf(skipWithoutContainers('the docker runtime suite'))('compute bridge: functions in containers (stowage worker --runtime docker)', () => {
  let stowage: Stowage;
  let worker: WorkerProcess;
  const extra: WorkerProcess[] = [];
  let app: App;
  const work = tempDir('bridge-docker');
  const data = uniqueName('ds');
  const results = uniqueName('results');
  const bytes = Buffer.from(Array.from({ length: 300 * KiB }, (_, i) => (i * 31) & 0xff));
  const fn = <A extends unknown[]>(name: string, opts: Parameters<App['function']>[0] = {}) =>
    app.function<A, unknown>({ ...opts, module: CONTAINERS_FIXTURE, name }, () => undefined);
  const startDockerWorker = (id: string, args: string[] = [], env: Record<string, string> = {}) =>
    startWorker({ id, server: stowage.server.address, token: stowage.server.token, slots: 2, args: ['--runtime', 'docker', '--image', STOWAGE_IMAGE, ...args], env });

  /** Waits until the bridge lists exactly these workers (one just stopped may still be listed for a moment). */
  const onlyWorkers = (...ids: string[]) =>
    waitFor(`the bridge to list only ${ids.join(', ')}`, async () =>
      (await BridgeAdmin.workers(stowage.connection)).map((w) => w.workerId).sort().join() === [...ids].sort().join(),
    );

  beforeAll(async () => {
    // The function's own image: the worker's, with a file only it holds.
    const ctx = join(work, 'image');
    execFileSync('mkdir', ['-p', ctx]);
    writeFileSync(join(ctx, 'Dockerfile'), `FROM ${STOWAGE_IMAGE}\nRUN echo own-image > /etc/stowage-test-marker\n`);
    docker('build', '-q', '-t', OWN_IMAGE, ctx);
    stowage = await startStowage();
    const vol = await Volume.fromName(data, { connection: stowage.connection, createIfMissing: true, chunkSize: 64 * KiB });
    writeFileSync(join(work, 'shard.bin'), bytes);
    await vol.batchUpload().putFile(join(work, 'shard.bin'), '/shard.bin').commit();
    const res = await Volume.fromName(results, { connection: stowage.connection, createIfMissing: true });
    writeFileSync(join(work, 'seed'), 'seed');
    await res.batchUpload().putFile(join(work, 'seed'), '/README').commit();
    worker = await startDockerWorker('d1');
    app = new App('containers', { connection: stowage.connection });
  }, 180_000);

  afterAll(async () => {
    await Promise.all([worker, ...extra].map((w) => w?.kill()));
    cleanUpWorkers();
    // Backstop: containers of this file's workers (a killed worker's runner may outlive it).
    for (const w of [worker, ...extra]) if (w) for (const id of containersOf(w.pid)) spawnSync('docker', ['rm', '-f', id]);
    spawnSync('docker', ['rmi', '-f', OWN_IMAGE]);
    await stowage?.stop();
    removeDir(work);
  });

  it('a function in a container reads /data/shard.bin of its volume; the container is reused for the next call', async () => {
    const hash = fn<[string]>('hashData', { volumes: { '/data': data } });
    const first = (await hash.remote('/shard.bin')) as Where & { sha256: string };
    expect(first.sha256).toBe(sha256(bytes));
    expect(first.inContainer).toBe(true);
    const second = (await hash.remote('/shard.bin')) as Where & { sha256: string };
    expect(second.container).toBe(first.container);
    expect(containersOf(worker.pid)).toContain(first.container.slice(0, 12));
  });

  it("a container sees the bundle of the call it runs, not the worker's other bundles", async () => {
    // Another module's function first: its bundle is in the worker's code directory too.
    expect(await app.function<[number, number], number>({ module: FIXTURE, name: 'add' }, () => 0).remote(2, 3)).toBe(5);
    expect(readdirSync(join(worker.workDir, 'code')).filter((f) => f.endsWith('.mjs')).length).toBeGreaterThanOrEqual(2);
    const out = (await fn('codeListing').remote()) as Where & { dir: string; entries: string[] };
    expect(out.inContainer).toBe(true);
    expect(out.dir).toBe('/run/stowage-code');
    expect(out.entries.filter((e) => e.endsWith('.mjs'))).toHaveLength(1);
    expect(out.entries).toContain('node_modules');
  });

  it("volume('/data').reload() in a container shows the new version at /data (bound from the host, propagated into the container)", async () => {
    const vol = await Volume.fromName(data, { connection: stowage.connection });
    writeFileSync(join(work, 'v.txt'), 'first');
    await vol.batchUpload().putFile(join(work, 'v.txt'), '/v.txt').commit();
    const out = (await fn<[string, string, string]>('rewriteAndReload', { volumes: { '/data': data } }).remote(data, '/v.txt', 'second')) as Where & {
      before: string;
      after: string;
      version: number;
    };
    expect(out.inContainer).toBe(true);
    expect(out.before).toBe('first');
    expect(out.after).toBe('second');
    expect(out.version).toBe((await vol.info()).latestVersion);
  });

  it('a function in a container writes into a writable volume, committed when it returns', async () => {
    const vol = await Volume.fromName(results, { connection: stowage.connection });
    const before = (await vol.info()).latestVersion;
    const out = (await fn<[string, string]>('writeOut', { volumes: { '/out': { name: results, writable: true } } }).remote('/hello.txt', 'from a container')) as Where;
    expect(out.inContainer).toBe(true);
    expect((await vol.info()).latestVersion).toBe(before + 1);
    expect((await vol.readBytes('/hello.txt')).toString()).toBe('from a container');
  });

  it("inside the container a read-only volume's mount is read-only for the kernel, a writable one's read-write", async () => {
    const out = (await fn<[string, string]>('writeOutAndLook', { volumes: { '/data': data, '/out': { name: results, writable: true } } }).remote('/look.txt', 'x')) as {
      out: string;
      data: string;
    };
    expect(out.data).toMatch(/^ro\b/);
    expect(out.out).toMatch(/^rw\b/);
  });

  it('writing into a read-only volume is EROFS inside the container, naming the volume', async () => {
    const err = (await fn('writeData', { volumes: { '/data': data } })
      .remote()
      .catch((e: unknown) => e)) as FunctionError;
    expect(err).toBeInstanceOf(FunctionError);
    expect(err.message).toMatch(/^EROFS: read-only file system/);
    expect(err.message).toContain(`volume ${data} is mounted read-only at /data`);
  });

  it("a function's own image: it runs there (a file only that image holds), and its limits (cpu, memory) are the container's", async () => {
    const own = (await fn('marker', { image: OWN_IMAGE }).remote()) as Where & { marker: string };
    expect(own.marker).toBe('own-image');
    expect(own.inContainer).toBe(true);
    const lim = (await fn('limits', { cpu: 0.5, memory: '256MiB' }).remote()) as { memory: string; quota: string; period: string };
    expect(Number(lim.memory)).toBe(256 * 1024 * 1024);
    expect(Number(lim.quota) / Number(lim.period)).toBeCloseTo(0.5);
  });

  it('an image that does not exist fails the call naming it and what to do; a container that exits at start attaches its log', async () => {
    const missing = (await fn('noop', { image: 'no-such-image:404' })
      .remote()
      .catch((e: unknown) => e)) as FunctionError & RemoteErrorDetails;
    expect(missing.code).toBe('FAILED_PRECONDITION');
    expect(missing.message).toContain('image no-such-image:404 (function noop) is not on the Docker engine of worker d1');
    expect(missing.message).toContain('docker build -t no-such-image:404');
    const colon = (await fn('noop', { volumes: { '/a:b': data } })
      .remote()
      .catch((e: unknown) => e)) as FunctionError & RemoteErrorDetails;
    expect(colon.code).toBe('FAILED_PRECONDITION');
    expect(colon.message).toContain("declares the volume path /a:b, which a container cannot have (no ':' or ',')");
    // local/debian has no node: the container exits at once, and docker says why.
    const noNode = (await fn('noop', { image: 'local/debian:bookworm' })
      .remote()
      .catch((e: unknown) => e)) as Error;
    expect(noNode.message).toMatch(/the runner process could not start: it exited with code \d+ before it was ready; its last output: .*node.*(not found|no such file)/is);
  });

  it('gpu: any on an engine without the NVIDIA runtime fails naming what is missing', async () => {
    const err = (await fn('noop', { gpu: 'any' })
      .remote()
      .catch((e: unknown) => e)) as FunctionError & RemoteErrorDetails;
    expect(err.code).toBe('FAILED_PRECONDITION');
    expect(err.message).toContain("asks for gpu 'any', but the Docker engine of worker d1 has no NVIDIA runtime");
  });

  it('a container killed mid-call: the attempt is lost and retried, and the retry succeeds in a new container', async () => {
    const call = await fn<[number]>('slow', { retries: 1 }).spawn(3000);
    // The call says which container runs it; that one is killed.
    let id = '';
    for await (const e of call.logs({ follow: true })) {
      id = /container ([0-9a-f]{64})/.exec(e.data.toString())?.[1] ?? '';
      if (id) break;
    }
    expect(containersOf(worker.pid)).toContain(id.slice(0, 12));
    docker('kill', id);
    const out = (await call.get()) as Where;
    expect(out.inContainer).toBe(true);
    expect(out.container).not.toBe(id);
    expect((await BridgeAdmin.call(call.id, stowage.connection)).attempt).toBe(2);
  });

  it('beside a process worker, functions that name an image go to the docker worker; with none left, they wait for one', async () => {
    const proc = await startWorker({ id: 'p1', server: stowage.server.address, token: stowage.server.token, slots: 1 });
    extra.push(proc);
    const listed = await waitFor('both workers listed', async () => {
      const ws = await BridgeAdmin.workers(stowage.connection);
      return ws.length === 2 ? ws : undefined;
    });
    expect(Object.fromEntries(listed.map((w) => [w.workerId, w.containers]))).toEqual({ d1: true, p1: false });
    const own = fn('marker', { image: OWN_IMAGE });
    const got = (await Promise.all(Array.from({ length: 6 }, () => own.remote()))) as (Where & { marker: string })[];
    expect(got.every((g) => g.inContainer && g.marker === 'own-image')).toBe(true);
    await worker.kill();
    // Its containers went with it.
    expect(containersOf(worker.pid)).toEqual([]);
    await onlyWorkers('p1');
    const waiting = await own.spawn();
    const plain = (await fn('noop').remote()) as Where; // the process worker is free, and takes other calls
    expect(plain.inContainer).toBe(false);
    expect((await BridgeAdmin.call(waiting.id, stowage.connection)).state).toBe(CallState.CALL_STATE_QUEUED);
    const d5 = await startDockerWorker('d5');
    extra.push(d5);
    expect(((await waiting.get()) as Where & { marker: string }).marker).toBe('own-image');
    await Promise.all([proc.kill(), d5.kill()]);
  });

  it("runner containers that SIGKILLed workers left are removed when the next worker starts; a live worker's stay", async () => {
    const w = await startDockerWorker('d2');
    extra.push(w);
    await onlyWorkers('d2');
    const call = await fn('spin').spawn(); // blocks its runner: it cannot see its worker go
    for await (const e of call.logs({ follow: true })) if (e.data.toString().includes('spinning')) break;
    expect(containersOf(w.pid)).toHaveLength(1);
    await w.kill('SIGKILL');
    // Also made by hand, with the labels a worker puts on its containers: one whose worker's pid is another
    // process's now (its start time differs), and one of a worker that is alive (this test process).
    const labelled = (instance: string) =>
      docker('run', '-d', '--rm', '--label', 'stowage.runner=1', '--label', `stowage.host=${hostname()}`, '--label', `stowage.worker-instance=${instance}`, '--entrypoint', 'sleep', STOWAGE_IMAGE, '600');
    const reused = labelled(`${process.pid}:1`);
    const live = labelled(`${process.pid}:${startTimeOf(process.pid)}`);
    try {
      const next = await startDockerWorker('d3');
      extra.push(next);
      expect(containersOf(w.pid)).toEqual([]);
      const running = docker('ps', '-q', '--no-trunc');
      expect(running).not.toContain(reused);
      expect(running).toContain(live);
      await next.kill();
    } finally {
      spawnSync('docker', ['rm', '-f', reused, live]);
    }
  });

  it('stowage worker --runtime docker without an engine exits naming it; bad --runtime and --image are refused', async () => {
    const env = { STOWAGE_SERVER: stowage.server.address, STOWAGE_TOKEN: stowage.server.token, STOWAGE_LOG_LEVEL: 'warn' };
    const workDir = join(work, 'no-engine');
    const none = await runCli(['worker', '--runtime', 'docker', '--work-dir', workDir, '--id', 'none'], { ...env, DOCKER_HOST: `unix://${join(work, 'no-such.sock')}` });
    expect(none.code).toBe(6); // UNAVAILABLE
    expect(none.stderr).toContain('the Docker engine is not reachable');
    expect(none.stderr).toContain('start dockerd on this host, or point DOCKER_HOST at it');
    const badRuntime = await runCli(['worker', '--runtime', 'podman', '--work-dir', workDir], env);
    expect(badRuntime.code).toBe(2);
    expect(badRuntime.stderr).toContain('--runtime "podman": choose process or docker');
    const imageWithoutDocker = await runCli(['worker', '--image', STOWAGE_IMAGE, '--work-dir', workDir], env);
    expect(imageWithoutDocker.code).toBe(2);
    expect(imageWithoutDocker.stderr).toContain('--image is for --runtime docker');
    const missingImage = await runCli(['worker', '--runtime', 'docker', '--image', 'no-such-image:404', '--work-dir', workDir, '--id', 'mi'], env);
    expect(missingImage.code).toBe(5);
    expect(missingImage.stderr).toContain("image no-such-image:404 (the worker's --image) is not on the Docker engine of worker mi");
  });

  it('an engine that stops answering: the call fails UNAVAILABLE naming it, and the worker recovers when it is back', async () => {
    // The worker reaches the engine through a proxy of its socket, which this test stops and starts.
    const sock = join(work, 'docker-proxy.sock');
    let proxy: Server | undefined;
    const startProxy = () =>
      new Promise<void>((res) => {
        rmSync(sock, { force: true });
        proxy = createServer((c) => {
          const up = createConnection('/var/run/docker.sock');
          c.pipe(up).pipe(c);
          c.on('error', () => up.destroy());
          up.on('error', () => c.destroy());
        });
        proxy.listen(sock, res);
      });
    await startProxy();
    const w = await startDockerWorker('d4', ['--idle-timeout', '500ms'], { DOCKER_HOST: `unix://${sock}` });
    extra.push(w);
    try {
      await onlyWorkers('d4');
      expect(((await fn('noop').remote()) as Where).inContainer).toBe(true);
      // Idle runners stopped; then the engine goes.
      await waitFor('idle runners to stop', () => runnerPids(w.pid).length === 0);
      await new Promise<void>((res) => proxy!.close(() => res()));
      rmSync(sock, { force: true });
      const err = (await fn('noop')
        .remote()
        .catch((e: unknown) => e)) as FunctionError & RemoteErrorDetails;
      expect(err.code).toBe('UNAVAILABLE');
      expect(err.message).toContain('the Docker engine is not reachable');
      expect(err.message).toContain('start dockerd on this host, or point DOCKER_HOST at it');
      await startProxy();
      expect(((await fn('noop').remote()) as Where).inContainer).toBe(true);
    } finally {
      await w.kill();
      proxy?.close();
    }
  });
});
