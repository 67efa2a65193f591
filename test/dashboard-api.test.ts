/**
 * The dashboard's HTTP side (`stowage serve --http`): access checks on every
 * endpoint, the JSON each view reads against what the test created (volumes
 * with their real sizes, versions and dedup, directory listings, downloads
 * by signed link, queues with partitions and dead letters, a real FUSE
 * mount's reports), bad input, and services left out with --only.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { App, Queue, Volume } from '../src/client/index.js';
import { FIXTURE, cleanUpWorkers, startWorker, type WorkerProcess } from './support/bridge.js';
import { cleanUpMounts, startMountProcess, stopMount } from './support/mount.js';
import { spawnStowage, startStowage, tempDir, uniqueName, type Stowage } from './support/processes.js';
import { readFile } from 'node:fs/promises';
import { Dict } from '../src/client/index.js';
import { parsePrometheusText, total } from './support/prom-text.js';
import { join } from 'node:path';

interface Answer {
  status: number;
  body: Record<string, unknown> & { error?: string };
  text: string;
}

async function call(base: string, path: string, token: string | undefined, init: RequestInit = {}): Promise<Answer> {
  const headers: Record<string, string> = token === undefined ? {} : { authorization: `Bearer ${token}` };
  const res = await fetch(`${base}${path}`, { ...init, headers: { ...headers, ...(init.headers as Record<string, string> | undefined) } });
  const text = await res.text();
  let body: Answer['body'] = {};
  try {
    body = JSON.parse(text) as Answer['body'];
  } catch {
    // not JSON: the page, or bytes
  }
  return { status: res.status, body, text };
}

/** Polls `read` until `ok` holds (15 s at most), returning the last value. */
async function until<T>(what: string, read: () => Promise<T>, ok: (v: T) => boolean): Promise<T> {
  const end = Date.now() + 15_000;
  for (;;) {
    const v = await read();
    if (ok(v)) return v;
    if (Date.now() > end) throw new Error(`${what}: not reached in 15 s; last: ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('dashboard HTTP API', () => {
  let stowage: Stowage;
  let base: string;
  let token: string;
  const vol = uniqueName('dash');
  const shared = randomBytes(300_000);
  const other = randomBytes(50_000);

  beforeAll(async () => {
    stowage = await startStowage({ http: { host: '127.0.0.1', port: 0, sampleEveryMs: 200 } });
    base = `http://${stowage.server.httpAddress}`;
    token = stowage.server.token;
    const v = await Volume.fromName(vol, { createIfMissing: true, connection: stowage.connection });
    // Version 1: the same bytes twice (stored once); version 2 adds a file and keeps the rest.
    await v.batchUpload().putFile(shared, '/a.bin').putFile(shared, '/dir/copy.bin').commit();
    await v.batchUpload().putFile(other, '/dir/other.bin').commit();
    await v.close();
  });

  afterAll(async () => {
    cleanUpMounts();
    await stowage?.stop();
  });

  it('answers 401 and no data to a request without the token, or with a wrong one, on every endpoint', async () => {
    const endpoints = ['/api/whoami', '/api/volumes', `/api/volumes/${vol}/versions`, `/api/volumes/${vol}/files?path=/`, '/api/dicts', '/api/bridge', '/api/mounts', '/metrics'];
    for (const path of endpoints) {
      for (const t of [undefined, 'stw_wrong', `${token}x`, '']) {
        const a = await call(base, path, t);
        expect(a.status, `${path} with token ${String(t)}`).toBe(401);
        expect(a.body.error).toMatch(/missing or wrong token/);
        expect(a.text).not.toContain(vol);
      }
    }
    const link = await call(base, `/api/volumes/${vol}/download-link`, undefined, { method: 'POST', body: JSON.stringify({ path: '/a.bin' }) });
    expect(link.status).toBe(401);
  });

  it('serves the page itself without a token, and no data in it', async () => {
    const page = await call(base, '/', undefined);
    expect(page.status).not.toBe(401);
    expect(page.text).not.toContain(vol);
    expect(page.text).not.toContain(token);
  });

  it('shows each volume with its real size, file count, versions and dedup ratio', async () => {
    const row = async () => {
      const a = await call(base, '/api/volumes', token);
      expect(a.status).toBe(200);
      return (a.body.volumes as Record<string, unknown>[]).find((r) => r.name === vol)!;
    };
    const first = await row();
    expect(first).toMatchObject({ latestVersion: 2, versionCount: 2, fileCount: 3, totalBytes: 650_000, ephemeral: false });
    // Computed in the background after the first request: logical = 600,000 + 650,000; stored = 300,000 + 50,000.
    const done = await until('volume usage', row, (r) => r.storedBytes !== null);
    expect(done).toMatchObject({ logicalBytes: 1_250_000, storedBytes: 350_000 });
    expect(done.dedupRatio).toBeCloseTo(1_250_000 / 350_000, 6);
  });

  it('lists versions oldest first, and directories of a chosen version', async () => {
    const versions = await call(base, `/api/volumes/${vol}/versions`, token);
    expect((versions.body.versions as { version: number; totalBytes: number; fileCount: number }[]).map((v) => [v.version, v.fileCount, v.totalBytes])).toEqual([
      [1, 2, 600_000],
      [2, 3, 650_000],
    ]);
    const root = await call(base, `/api/volumes/${vol}/files?path=/`, token);
    expect(root.body).toMatchObject({ volume: vol, version: 2, path: '/', truncated: false });
    expect(root.body.entries).toEqual([
      { name: 'a.bin', path: '/a.bin', type: 'file', size: 300_000, mtimeMs: expect.any(Number) },
      { name: 'dir', path: '/dir', type: 'dir', size: 0, mtimeMs: expect.any(Number) },
    ]);
    const dirV1 = await call(base, `/api/volumes/${vol}/files?path=/dir&version=1`, token);
    expect(dirV1.body.version).toBe(1);
    expect((dirV1.body.entries as { path: string }[]).map((e) => e.path)).toEqual(['/dir/copy.bin']);
  });

  it('downloads a file byte for byte by a signed link that pins its version, and refuses a tampered one', async () => {
    const made = await call(base, `/api/volumes/${vol}/download-link`, token, { method: 'POST', body: JSON.stringify({ path: '/dir/other.bin' }) });
    expect(made.status).toBe(200);
    expect(made.body).toMatchObject({ size: 50_000, version: 2 });
    const url = made.body.url as string;
    expect(url).toMatch(/^\/download\//);
    const res = await fetch(`${base}${url}`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-disposition')).toContain('other.bin');
    expect(Buffer.from(await res.arrayBuffer()).equals(other)).toBe(true);
    // A later commit changes the file; the link still names version 2's bytes.
    const v = await Volume.fromName(vol, { connection: stowage.connection });
    await v.batchUpload({ force: true }).putFile(randomBytes(10), '/dir/other.bin').commit();
    await v.close();
    expect(Buffer.from(await (await fetch(`${base}${url}`)).arrayBuffer()).equals(other)).toBe(true);
    const tampered = await call(base, `${url.slice(0, -2)}xx`, undefined);
    expect(tampered.status).toBe(401);
    expect(tampered.body.error).toMatch(/download link is not valid/);
    const forged = await call(base, `/download/${Buffer.from(JSON.stringify({ volume: vol, version: 1, path: 'a.bin', e: Date.now() + 1e6 })).toString('base64url')}.abc`, undefined);
    expect(forged.status).toBe(401);
  });

  it('refuses bad input with a clear error and the right status', async () => {
    const post = (path: string, body: string) => call(base, `/api/volumes/${vol}/download-link`, token, { method: 'POST', body: path === '' ? body : JSON.stringify({ path: body }) });
    const cases: [Promise<Answer>, number, RegExp][] = [
      [call(base, `/api/volumes/${vol}/files?path=/../etc`, token), 400, /"\.\." is not allowed/],
      [call(base, `/api/volumes/${vol}/files?path=/a%00b`, token), 400, /NUL|invalid path/],
      [call(base, `/api/volumes/${vol}/files?path=/&version=-1`, token), 400, /not a version number/],
      [call(base, `/api/volumes/${vol}/files?path=/&version=99`, token), 404, /version 99/],
      [call(base, '/api/volumes/no-such-volume/versions', token), 404, /create it with: stowage volume create no-such-volume/],
      [call(base, `/api/volumes/${'x'.repeat(100)}/versions`, token), 400, /invalid volume name/],
      [post('x', '/missing.bin'), 404, /missing\.bin/],
      [post('x', '/dir'), 400, /is a directory/],
      [post('', 'not json'), 400, /must be a JSON object/],
      [post('', JSON.stringify({ path: 'x'.repeat(70_000) })), 400, /over 65536 bytes/],
      [call(base, '/api/nothing', token), 404, /no such endpoint/],
    ];
    for (const [answer, status, message] of cases) {
      const a = await answer;
      expect(a.status, a.text).toBe(status);
      expect(a.body.error).toMatch(message);
    }
  });

  it('serves /metrics as Prometheus text whose counters move with the work, and dict ops per second over time', async () => {
    const scrape = async () => {
      const res = await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${token}` } });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
      return parsePrometheusText(await res.text());
    };
    const name = uniqueName('ops');
    const before = total(await scrape(), 'stowage_dict_ops_total');
    const d = await Dict.fromName<string, number>(name, { createIfMissing: true, connection: stowage.connection });
    for (let i = 0; i < 50; i++) await d.put(`k${i}`, i);
    expect(total(await scrape(), 'stowage_dict_ops_total')).toBeGreaterThanOrEqual(before + 50);
    // Sampled every 200 ms here (5 s by default): the dict's rate shows in its history.
    const row = await until(
      'the dict\'s ops per second',
      async () => ((await call(base, '/api/dicts', token)).body.dicts as { name: string; length: number; history: [number, number][] }[]).find((r) => r.name === name),
      (r) => (r?.history.some(([, rate]) => rate > 0) ?? false),
    );
    expect(row!.length).toBe(50);
    await d.close();
  });

  it('shows queues with their partitions and dead letters, and dicts with their length', async () => {
    const name = uniqueName('dq');
    const q = await Queue.fromName<string>(name, { createIfMissing: true, maxDeliveries: 1, connection: stowage.connection });
    await q.putMany(['a', 'b']);
    await q.put('c', { partition: 'p1' });
    const leased = await q.get({ ack: true, visibilityMs: 100 });
    expect(leased).toBeDefined();
    const row = async () => {
      const a = await call(base, '/api/dicts', token);
      return (a.body.queues as Record<string, unknown>[]).find((r) => r.name === name);
    };
    const seen = await until('dead letter', row, (r) => r?.deadLetters === 1);
    expect(seen).toMatchObject({ length: 3, deadLetters: 1, partitions: [{ name: '', length: 1 }, { name: 'p1', length: 1 }] });
    await q.close();
  });

  it('shows a real mount with its cache hits, misses and bytes, reported as it reads', async () => {
    const dir = join(tempDir('dash-mnt'), 'm');
    const m = await startMountProcess({
      volume: vol,
      dir,
      cacheDir: tempDir('dash-cache'),
      args: ['--report-interval', '200ms', '--client-name', 'dashboard-test'],
      env: { STOWAGE_SERVER: stowage.server.address, STOWAGE_TOKEN: token },
    });
    try {
      expect((await readFile(join(dir, 'a.bin'))).equals(shared)).toBe(true);
      expect((await readFile(join(dir, 'dir', 'copy.bin'))).equals(shared)).toBe(true);
      const mount = await until(
        'mount report',
        async () => ((await call(base, '/api/mounts', token)).body.mounts as Record<string, number | string | null>[]).find((r) => r.client === 'dashboard-test'),
        (r) => (r?.bytesRead as number) >= 600_000,
      );
      expect(mount).toMatchObject({ volume: vol, version: 3, bytesRead: 600_000, bytesFetched: 300_000 });
      expect(mount!.misses).toBeGreaterThanOrEqual(1);
      expect(mount!.hits).toBeGreaterThanOrEqual(1);
      expect(mount!.hitRatio).toBeCloseTo((mount!.hits as number) / ((mount!.hits as number) + (mount!.misses as number)), 9);
      // What mounts report is counted in /metrics too.
      const metrics = parsePrometheusText(await (await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${token}` } })).text());
      expect(total(metrics, 'stowage_chunk_cache_read_bytes_total')).toBeGreaterThanOrEqual(600_000);
      expect(total(metrics, 'stowage_chunk_cache_fetched_bytes_total')).toBeGreaterThanOrEqual(300_000);
    } finally {
      expect(await stopMount(m, 'SIGTERM')).toBe(0);
    }
  });
});

describe('dashboard bridge view with a real worker', () => {
  let stowage: Stowage;
  let worker: WorkerProcess;
  const dataset = uniqueName('dash-data');
  const SHARD = 256 * 1024;

  beforeAll(async () => {
    stowage = await startStowage({ http: { host: '127.0.0.1', port: 0, sampleEveryMs: 200 } });
    const v = await Volume.fromName(dataset, { createIfMissing: true, connection: stowage.connection, chunkSize: 64 * 1024 });
    await v.batchUpload().putFile(randomBytes(SHARD), '/shards/a.bin').commit();
    await v.close();
    worker = await startWorker({ id: 'dash-w1', server: stowage.server.address, token: stowage.server.token, slots: 1 });
  }, 60_000);

  afterAll(async () => {
    await worker?.kill();
    cleanUpWorkers();
    await stowage?.stop();
  });

  it('shows the worker with its slots and cached bytes, the call with its worker, duration and placement reason, and the worker\'s mount', async () => {
    const base = `http://${stowage.server.httpAddress}`;
    const token = stowage.server.token;
    const app = new App('dash', { connection: stowage.connection });
    const fn = app.function<[string], { bytes: number; worker: string }>(
      { module: FIXTURE, name: 'readShard', volumes: { '/data': dataset }, reads: ((s: string) => [`/data/shards/${s}`]) as (...a: unknown[]) => string[] },
      () => undefined as never,
    );
    const spawned = await fn.spawn('a.bin');
    expect((await spawned.get()).bytes).toBe(SHARD);
    const bridge = await until(
      'the worker to report the shard cached',
      async () => (await call(base, '/api/bridge', token)).body as { workers: Record<string, unknown>[]; calls: Record<string, unknown>[] },
      (b) => (b.workers[0]?.cachedBytes as number) >= SHARD,
    );
    expect(bridge.workers).toEqual([expect.objectContaining({ id: 'dash-w1', slots: 1, running: 0, cachedChunks: 4, cachedBytes: SHARD })]);
    const row = bridge.calls.find((c) => c.id === spawned.id)!;
    expect(row).toMatchObject({ state: 'succeeded', worker: 'dash-w1', attempt: 1, function: `readShard (${FIXTURE.split('/').at(-1)})` });
    expect(row.placementReason).toBe('ours: no worker caches any of its reads: least-loaded worker');
    expect(row.durationMs).toBeGreaterThan(0);
    // Its worker cached none of its reads: a placement, not a hit.
    expect((bridge as unknown as { placement: { hits: number; total: number } }).placement).toMatchObject({ hits: 0, total: 1 });
    // The worker's mount of the dataset reports as "worker <id>" (every 5 s).
    const mount = await until(
      "the worker's mount report",
      async () => ((await call(base, '/api/mounts', token)).body.mounts as Record<string, unknown>[]).find((m) => m.volume === dataset),
      (m) => (m?.bytesRead as number) >= SHARD,
    );
    expect(mount).toMatchObject({ client: 'worker dash-w1', version: 1, bytesFetched: SHARD });
    expect(mount!.misses).toBeGreaterThanOrEqual(1);
  }, 60_000);
});

describe('dashboard with services left out, and from the CLI', () => {
  it('answers {"hosted": false} for a service the server does not host', async () => {
    const s = await startStowage({ only: ['dict'], http: { host: '127.0.0.1', port: 0 } });
    try {
      const base = `http://${s.server.httpAddress}`;
      for (const path of ['/api/volumes', '/api/bridge', `/api/volumes/x/versions`]) {
        expect((await call(base, path, s.server.token)).body).toEqual({ hosted: false });
      }
      expect((await call(base, '/api/dicts', s.server.token)).body).toMatchObject({ dicts: [], queues: [], dictsHosted: true, queuesHosted: false });
      expect((await call(base, '/api/whoami', s.server.token)).body).toMatchObject({ server: { services: ['dict'] } });
    } finally {
      await s.stop();
    }
  });

  it('stowage serve --http HOST:PORT serves it; a bad --http value is refused before anything starts', async () => {
    const { runCli } = await import('./support/processes.js');
    const bad = await runCli(['serve', '--data-dir', tempDir('bad-http'), '--port', '0', '--http', '127.0.0.1:99999'], {});
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--http port/);
    const child = await spawnStowage(tempDir('cli-http'), ['--http', '127.0.0.1:0']);
    try {
      const line = await until('the dashboard line', async () => /dashboard on http:\/\/(127\.0\.0\.1:\d+)\//.exec(child.stderr()), (m) => m !== null);
      const address = line![1]!;
      expect((await call(`http://${address}`, '/api/whoami', child.token)).status).toBe(200);
      expect((await call(`http://${address}`, '/api/whoami', undefined)).status).toBe(401);
    } finally {
      await child.kill('SIGTERM');
    }
  });
});
