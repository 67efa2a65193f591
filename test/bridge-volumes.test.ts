/**
 * Functions' volumes on real workers (root: each runner process gets a mount
 * namespace of its own): read at their declared paths as Modal code does
 * ('/data/...'), two workers of one host binding different volumes at the
 * same path, writable volumes (committed at return, dropped on failure,
 * volume('/out').commit() and reload()), EROFS naming the volume, a worker
 * SIGKILLed mid-write, and the fallback of a worker that binds nothing
 * (--no-volume-paths): volumePath() only. A stowage server in this process;
 * workers run the built CLI (npm run build first). Functions come from
 * test/fixtures/bridge/volumes.mjs. The declared paths /data and /out are
 * made (empty) on this host by the workers, as on any worker host.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { App, FunctionError, Volume, type RemoteErrorDetails } from '../src/client/index.js';
import { FIXTURE, cleanUpWorkers, pidsMentioning, startWorker, waitFor, type WorkerProcess } from './support/bridge.js';
import { removeDir, runCli, startStowage, tempDir, uniqueName, type Stowage } from './support/processes.js';
import { KiB } from './support/volume-data.js';

const VOLUMES_FIXTURE = join(FIXTURE, '..', 'volumes.mjs');
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** The fixture's seededBytes: `size` bytes that depend only on `seed`. */
function seededBytes(seed: string, size: number): Buffer {
  const out = Buffer.alloc(size);
  let block = createHash('sha256').update(seed).digest();
  for (let off = 0; off < size; off += block.length) {
    block.copy(out, off);
    block = createHash('sha256').update(block).digest();
  }
  return out;
}

describe('compute bridge: volumes at declared paths, writable volumes (2 workers of one slot, local store)', () => {
  let stowage: Stowage;
  const workers = new Map<string, WorkerProcess>();
  let app: App;
  const work = tempDir('bridge-volumes');
  const dsA = uniqueName('ds-a');
  const dsB = uniqueName('ds-b');
  const results = uniqueName('results');
  const bytesA = seededBytes('a', 300 * KiB);
  const bytesB = seededBytes('b', 200 * KiB);
  let n = 0;
  /** A fresh empty host directory, for the fixture's barrier and marker files. */
  /** Commits `bytes` at `path` of `vol`, from a local file. */
  const put = async (vol: Volume, path: string, bytes: Buffer) => {
    const local = join(work, `upload-${++n}`);
    writeFileSync(local, bytes);
    await vol.batchUpload().putFile(local, path).commit();
  };
  const scratch = () => {
    const d = join(work, `scratch-${++n}`);
    mkdirSync(d);
    return d;
  };

  beforeAll(async () => {
    stowage = await startStowage();
    const { address, token } = stowage.server;
    for (const [name, bytes] of [[dsA, bytesA], [dsB, bytesB]] as const) {
      const vol = await Volume.fromName(name, { connection: stowage.connection, createIfMissing: true, chunkSize: 64 * KiB });
      await put(vol, '/shard.bin', bytes);
    }
    const res = await Volume.fromName(results, { connection: stowage.connection, createIfMissing: true });
    await put(res, '/README', Buffer.from('seed'));
    // One slot each: two calls running at once are on different workers.
    for (const id of ['v1', 'v2']) workers.set(id, await startWorker({ id, server: address, token, slots: 1 }));
    app = new App('volumes', { connection: stowage.connection });
  }, 90_000);

  afterAll(async () => {
    await Promise.all([...workers.values()].map((w) => w.kill()));
    cleanUpWorkers();
    await stowage?.stop();
    removeDir(work);
  });

  const fn = <A extends unknown[]>(name: string, opts: Parameters<App['function']>[0] = {}) =>
    app.function<A, unknown>({ ...opts, module: VOLUMES_FIXTURE, name }, () => undefined);
  const resultsVol = () => Volume.fromName(results, { connection: stowage.connection });

  it('a function opens /data/... directly, as Modal code does', async () => {
    const out = (await fn<[string]>('hashData', { volumes: { '/data': dsA } }).remote('/shard.bin')) as { sha256: string; volumePath: string };
    expect(out.sha256).toBe(sha256(bytesA));
    expect(out.volumePath).toBe('/data');
  });

  it('two workers of one host bind different volumes at /data at once, each seeing its own', async () => {
    const dir = scratch();
    const [a, b] = await Promise.all([
      fn<[string, string, number, string]>('barrierHash', { volumes: { '/data': dsA } }).spawn(dir, 'a', 2, '/shard.bin'),
      fn<[string, string, number, string]>('barrierHash', { volumes: { '/data': { name: dsB } } }).spawn(dir, 'b', 2, '/shard.bin'),
    ]);
    const [ra, rb] = (await Promise.all([a.get(), b.get()])) as { sha256: string; worker: string }[];
    expect(ra!.sha256).toBe(sha256(bytesA));
    expect(rb!.sha256).toBe(sha256(bytesB));
    expect(new Set([ra!.worker, rb!.worker])).toEqual(new Set(['v1', 'v2']));
    // Nothing was bound on the host itself.
    expect(existsSync('/data/shard.bin')).toBe(false);
  });

  it("a reused function process shows only the next call's volumes: a call declaring none sees nothing at /data", async () => {
    // Both workers' function processes bound /data in the tests above (idle timeout 30 s: they are reused here).
    const dir = scratch();
    const lister = fn<[string, string, number]>('barrierListData');
    const calls = await Promise.all(['l1', 'l2'].map((m) => lister.spawn(dir, m, 2)));
    const got = (await Promise.all(calls.map((c) => c.get()))) as { entries: string[]; worker: string }[];
    expect(new Set(got.map((g) => g.worker))).toEqual(new Set(['v1', 'v2']));
    for (const g of got) expect(g.entries).not.toContain('shard.bin');
  });

  it('a function downloads into a writable volume: committed when it returns, read back by the SDK and by both workers', async () => {
    const before = (await (await resultsVol()).info()).latestVersion;
    const out = (await fn<[string, string, number]>('download', { volumes: { '/out': { name: results, writable: true } } }).remote('model.bin', 'm', 700 * KiB)) as {
      sha256: string;
    };
    const expected = sha256(seededBytes('m', 700 * KiB));
    expect(out.sha256).toBe(expected);
    const vol = await resultsVol();
    expect((await vol.info()).latestVersion).toBe(before + 1);
    expect(sha256(await vol.readBytes('/downloads/model.bin'))).toBe(expected);
    const dir = scratch();
    const reader = fn<[string, string, number, string]>('barrierHash', { volumes: { '/data': results } });
    const calls = await Promise.all(['x', 'y'].map((m) => reader.spawn(dir, m, 2, '/downloads/model.bin')));
    const got = (await Promise.all(calls.map((c) => c.get()))) as { sha256: string; worker: string }[];
    expect(got.map((g) => g.sha256)).toEqual([expected, expected]);
    expect(new Set(got.map((g) => g.worker))).toEqual(new Set(['v1', 'v2']));
  });

  it('stowage run --volume PATH=VOLUME:rw mounts it writable and commits at return; a bad form is refused naming the forms', async () => {
    const env = { STOWAGE_SERVER: stowage.server.address, STOWAGE_TOKEN: stowage.server.token, STOWAGE_LOG_LEVEL: 'warn' };
    const before = (await (await resultsVol()).info()).latestVersion;
    const r = await runCli(['run', `${VOLUMES_FIXTURE}#download`, '"cli.bin"', '"c"', String(50 * KiB), '--volume', `/out=${results}:rw`, '-q'], env);
    expect(r.code, r.stderr).toBe(0);
    const expected = sha256(seededBytes('c', 50 * KiB));
    expect((JSON.parse(r.stdout) as { sha256: string }).sha256).toBe(expected);
    const vol = await resultsVol();
    expect((await vol.info()).latestVersion).toBe(before + 1);
    expect(sha256(await vol.readBytes('/downloads/cli.bin'))).toBe(expected);
    const bad = await runCli(['run', `${VOLUMES_FIXTURE}#download`, '"x"', '"x"', '1', '--volume', `/out=${results}:rwx`], env);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--volume "\/out=.*:rwx": use PATH=VOLUME or PATH=VOLUME:rw/);
    expect((await vol.info()).latestVersion).toBe(before + 1);
  });

  it('two calls writing one volume at once both land; for the file both wrote, the later commit wins', async () => {
    const dir = scratch();
    const writer = fn<[string, string, number, string, number]>('barrierDownload', { volumes: { '/out': { name: results, writable: true } } });
    const calls = await Promise.all(['p.bin', 'q.bin'].map((name) => writer.spawn(dir, name, 2, name, 100 * KiB)));
    await Promise.all(calls.map((c) => c.get()));
    const vol = await resultsVol();
    for (const name of ['p.bin', 'q.bin']) expect(sha256(await vol.readBytes(`/downloads/${name}`))).toBe(sha256(seededBytes(name, 100 * KiB)));
    expect(['p.bin', 'q.bin']).toContain((await vol.readBytes('/same.txt')).toString());
  });

  it('a commit that conflicts with another (a file where the other made a directory) fails the call with a clear error', async () => {
    const dir = scratch();
    const writer = fn<[string, string, number, string, string]>('barrierWrite', { volumes: { '/out': { name: results, writable: true } } });
    const calls = await Promise.all([
      writer.spawn(dir, 'file', 2, '/clash', 'a file'),
      writer.spawn(dir, 'dir', 2, '/clash/inner.txt', 'a file in a directory'),
    ]);
    const settled = await Promise.allSettled(calls.map((c) => c.get()));
    const failed = settled.filter((r) => r.status === 'rejected').map((r) => (r as PromiseRejectedResult).reason as Error);
    expect(failed).toHaveLength(1);
    expect(failed[0]!.message).toMatch(new RegExp(`^the function returned, but committing its writes to volume ${results} \\(/out\\) failed: .*clash`));
    expect(failed[0]!.message).toContain('were dropped');
  });

  it("a failing function's writes are dropped, said in its error and in the worker's log", async () => {
    const before = (await (await resultsVol()).info()).latestVersion;
    const err = (await fn<[string]>('writeThenFail', { volumes: { '/out': { name: results, writable: true } } })
      .remote('half.txt')
      .catch((e: unknown) => e)) as FunctionError & RemoteErrorDetails;
    expect(err).toBeInstanceOf(FunctionError);
    expect(err.message).toContain('failed after writing /out/half.txt');
    expect(err.message).toContain(`its writes to ${results} (/out) not yet committed were dropped`);
    const vol = await resultsVol();
    expect((await vol.info()).latestVersion).toBe(before);
    await expect(vol.stat('/half.txt')).rejects.toThrow(/not found/i);
    expect(workers.get(err.workerId)!.stderr()).toContain(`its uncommitted writes to ${results} (/out) are dropped`);
  });

  it('writing into a read-only volume is EROFS, naming the volume and how to make it writable', async () => {
    const err = (await fn<[string]>('writeReadOnly', { volumes: { '/data': dsA } })
      .remote('x.txt')
      .catch((e: unknown) => e)) as FunctionError & RemoteErrorDetails;
    expect(err).toBeInstanceOf(FunctionError);
    expect(err.message).toMatch(/^EROFS: read-only file system, open '\/data\/x.txt'/);
    expect(err.message).toContain(`volume ${dsA} is mounted read-only at /data`);
    expect(err.message).toContain(`'/data': { name: '${dsA}', writable: true }`);
  });

  it("volume('/out').commit() makes a version at once; writes after it are committed at return", async () => {
    const before = (await (await resultsVol()).info()).latestVersion;
    const out = (await fn('commitThenWrite', { volumes: { '/out': { name: results, writable: true } } }).remote()) as { first: number };
    expect(out.first).toBe(before + 1);
    const vol = await resultsVol();
    expect((await vol.info()).latestVersion).toBe(before + 2);
    expect((await vol.readBytes('/first.txt', { version: out.first })).toString()).toBe('first');
    await expect(vol.stat('/second.txt', { version: out.first })).rejects.toThrow(/not found/i);
    expect((await vol.readBytes('/second.txt')).toString()).toBe('second');
  });

  it("volume('/data').reload() shows a version committed while the call runs (read-only volume)", async () => {
    const started = join(scratch(), 'started');
    const call = await fn<[string, string]>('waitForFile', { volumes: { '/data': dsA } }).spawn('/late.bin', started);
    await waitFor('the call to start', () => existsSync(started), 30_000);
    const late = seededBytes('late', 50 * KiB);
    const vol = await Volume.fromName(dsA, { connection: stowage.connection });
    await put(vol, '/late.bin', late);
    const out = (await call.get()) as { sha256: string; version: number };
    expect(out.sha256).toBe(sha256(late));
    expect(out.version).toBe((await vol.info()).latestVersion);
  });

  it('a worker SIGKILLed mid-write commits nothing half-written; the retry elsewhere commits the whole file', async () => {
    const marker = join(scratch(), 'first-piece');
    const vol = await resultsVol();
    const before = (await vol.info()).latestVersion;
    const call = await fn<[string, string, number, string]>('slowWrite', { volumes: { '/out': { name: results, writable: true } }, retries: 1 }).spawn(
      'big.bin',
      'big',
      16,
      marker,
    );
    const victim = workers.get(await waitFor('the first piece to be written', () => existsSync(marker) && readFileSync(marker, 'utf8'), 30_000) as string)!;
    await victim.kill('SIGKILL');
    workers.delete(victim.id);
    const out = (await call.get()) as { sha256: string; worker: string };
    expect(out.worker).not.toBe(victim.id);
    const expected = sha256(seededBytes('big', 16 * 256 * KiB));
    expect(out.sha256).toBe(expected);
    // Every version since: without big.bin, or with all of it. Here one version: the retry's.
    const versions = (await vol.versions()).map((v) => v.version).filter((v) => v > before);
    expect(versions).toEqual([before + 1]);
    expect(sha256(await vol.readBytes('/big.bin', { version: before + 1 }))).toBe(expected);
    // The killed worker's mounts went with it, dropping their staging.
    await waitFor('the killed worker\'s mounts and runners to exit', () => pidsMentioning(victim.workDir).length === 0, 30_000);
    const staging = join(victim.workDir, 'staging');
    expect(existsSync(staging) ? readdirSync(staging) : []).toEqual([]);
  });

  it('a worker that cannot bind volumes says so at start; volumePath() still finds them', async () => {
    await Promise.all([...workers.values()].map((w) => w.kill()));
    workers.clear();
    const w = await startWorker({ id: 'v3', server: stowage.server.address, token: stowage.server.token, slots: 1, args: ['--no-volume-paths'] });
    workers.set(w.id, w);
    expect(w.stderr()).toContain('functions see their volumes only through volumePath(), not at their declared paths: started with --no-volume-paths');
    const out = (await fn<[string]>('hashViaVolumePath', { volumes: { '/data': dsB } }).remote('/shard.bin')) as { sha256: string; local: string; direct: string };
    expect(out.sha256).toBe(sha256(bytesB));
    expect(out.local).toBe(join(w.workDir, 'mounts', `${dsB}@1`, 'shard.bin'));
    expect(out.direct).toBe('ENOENT');
  });
});
