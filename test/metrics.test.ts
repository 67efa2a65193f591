/**
 * Metrics (issue 15): a real server's render() parses as Prometheus text
 * (test/support/prom-text.ts, strict), holds every stowage metric, and its
 * counters move when the test does work: volume RPCs and store requests, dict
 * and queue operations and queue depth, a call refused for its token, the
 * chunk cache reports, and the bridge's calls and placements (a worker played
 * by this test over the Work stream: no FUSE, no worker process).
 */
import { Metadata, credentials, type ClientDuplexStream } from '@grpc/grpc-js';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Connection, Dict, Queue, UnauthenticatedError, Volume } from '../src/client/index.js';
import { NotFoundError } from '../src/common/errors.js';
import { MAX_NAMED_COUNTS, Metrics } from '../src/common/metrics.js';
import { LocalBlobStore } from '../src/volume-server/store/local.js';
import { withMetrics } from '../src/volume-server/store/metrics.js';
import { BridgeServiceClient, type BridgeMessage, type FunctionSpec, type WorkerMessage } from '../src/gen/stowage/v1/bridge.js';
import { expectFailure } from './support/checks.js';
import { startStowage, tempDir, uniqueName, type Stowage } from './support/processes.js';
import { STOWAGE_METRICS } from './support/metric-names.js';
import { parsePrometheusText, total } from './support/prom-text.js';
import { eventually } from './support/state-servers.js';

describe('the Prometheus text parser of the tests', () => {
  it('refuses malformed text', () => {
    const ok = '# HELP a_total A.\n# TYPE a_total counter\na_total{x="1"} 2\n';
    expect(total(parsePrometheusText(ok), 'a_total', { x: '1' })).toBe(2);
    for (const bad of [
      'a_total 1', // no final newline
      'a total 1\n',
      'a_total{x=1} 1\n',
      'a_total{x="1} 1\n',
      'a_total{x="\\q"} 1\n',
      'a_total one\n',
      '# TYPE a_total counter\na_total -1\n',
      '# TYPE a_total countr\n',
      'a_total 1\n# HELP a_total late\n',
      'a_total{x="1"} 1\na_total{x="1"} 2\n',
      'a 1\nb 1\na 2\n',
      '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_count 1\n',
      '# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_count 1\n',
    ]) {
      expect(() => parsePrometheusText(bad), JSON.stringify(bad)).toThrow();
    }
  });
});

describe('metrics of a running server', () => {
  let stowage: Stowage;
  const scrape = async () => parsePrometheusText(await stowage.server.metrics.render());

  beforeAll(async () => {
    stowage = await startStowage();
  });
  afterAll(async () => {
    await stowage?.stop();
  });

  it('render() is well-formed Prometheus text holding every metric, with help', async () => {
    const text = await stowage.server.metrics.render();
    expect(stowage.server.metrics.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    const families = parsePrometheusText(text);
    for (const [name, type] of Object.entries(STOWAGE_METRICS)) {
      expect(families.get(name)?.type, name).toBe(type);
      expect(families.get(name)?.help, name).toMatch(/\w/);
    }
    for (const name of families.keys()) expect(name).toMatch(/^stowage_/);
  });

  it('volume create, put and read move the RPC, store and tree cache counters', async () => {
    const before = await scrape();
    const name = uniqueName('metrics-vol');
    const vol = await Volume.fromName(name, { connection: stowage.connection, createIfMissing: true });
    const data = randomBytes(5000);
    await vol.batchUpload().putFile(data, '/a.bin').commit();
    expect(await vol.readBytes('/a.bin')).toEqual(data);
    const after = await scrape();
    const moved = (metric: string, labels: Record<string, string> = {}) => total(after, metric, labels) - total(before, metric, labels);
    const volumeOk = { service: 'stowage.v1.VolumeService', code: 'OK' };
    expect(moved('stowage_rpc_requests_total', { ...volumeOk, method: 'CreateVolume' })).toBe(1);
    expect(moved('stowage_rpc_requests_total', { ...volumeOk, method: 'Commit' })).toBe(1);
    expect(moved('stowage_rpc_requests_total', volumeOk)).toBeGreaterThanOrEqual(4);
    expect(moved('stowage_rpc_duration_seconds_count', { ...volumeOk, method: 'Commit' })).toBe(1);
    expect(moved('stowage_rpc_duration_seconds_sum', { ...volumeOk, method: 'Commit' })).toBeGreaterThan(0);
    // The commit stores its tree pages and version record.
    expect(moved('stowage_store_requests_total', { op: 'put', outcome: 'ok' })).toBeGreaterThanOrEqual(2);
    expect(moved('stowage_store_bytes_total', { op: 'put', direction: 'in' })).toBeGreaterThan(0);
    expect(moved('stowage_tree_cache_hits_total') + moved('stowage_tree_cache_misses_total')).toBeGreaterThanOrEqual(1);
  });

  it('dict puts and gets move the dict op counters and the per-name counts', async () => {
    const name = uniqueName('metrics-dict');
    const d = await Dict.fromName<string, number>(name, { connection: stowage.connection, createIfMissing: true });
    const before = await scrape();
    await d.put('a', 1);
    await d.put('b', 2);
    expect(await d.get('a')).toBe(1);
    const after = await scrape();
    expect(total(after, 'stowage_dict_ops_total', { op: 'put' }) - total(before, 'stowage_dict_ops_total', { op: 'put' })).toBe(2);
    expect(total(after, 'stowage_dict_ops_total', { op: 'get' }) - total(before, 'stowage_dict_ops_total', { op: 'get' })).toBe(1);
    expect(stowage.server.metrics.opCounts().get(`dict:${name}`)).toBeGreaterThanOrEqual(3);
    // Names are never labels.
    expect(JSON.stringify([...after.values()])).not.toContain(name);
  });

  it('queue puts move the queue op counter and the queue depth gauge', async () => {
    const name = uniqueName('metrics-queue');
    const q = await Queue.fromName<string>(name, { connection: stowage.connection, createIfMissing: true });
    const before = await scrape();
    for (const item of ['x', 'y', 'z']) await q.put(item);
    const after = await scrape();
    expect(total(after, 'stowage_queue_depth', { queue: name })).toBe(3);
    expect(total(after, 'stowage_queue_ops_total', { op: 'put' }) - total(before, 'stowage_queue_ops_total', { op: 'put' })).toBe(3);
    expect(await q.get({ block: false })).toBe('x');
    expect(total(await scrape(), 'stowage_queue_depth', { queue: name })).toBe(2);
    expect(stowage.server.metrics.opCounts().get(`queue:${name}`)).toBeGreaterThanOrEqual(4);
  });

  it('a call refused for a wrong token is counted with code UNAUTHENTICATED', async () => {
    const before = await scrape();
    const stranger = new Connection({ server: stowage.server.address, token: 'not-the-token' });
    try {
      await expectFailure(() => Dict.fromName(uniqueName('refused'), { connection: stranger }), UnauthenticatedError, 'UNAUTHENTICATED');
    } finally {
      stranger.close();
    }
    const after = await scrape();
    const refused = { service: 'stowage.v1.DictService', code: 'UNAUTHENTICATED' };
    expect(total(after, 'stowage_rpc_requests_total', refused) - total(before, 'stowage_rpc_requests_total', refused)).toBeGreaterThanOrEqual(1);
    expect(total(after, 'stowage_rpc_duration_seconds_count', refused)).toBe(total(after, 'stowage_rpc_requests_total', refused));
  });

  it('chunkCacheReport adds to the chunk cache counters', async () => {
    const before = await scrape();
    stowage.server.metrics.chunkCacheReport({ hits: 7, misses: 3, bytesFetched: 3 * 65536, bytesRead: 10 * 65536 });
    // Nonsense is ignored, not added.
    stowage.server.metrics.chunkCacheReport({ hits: -1, misses: Number.NaN, bytesFetched: Infinity, bytesRead: 0 });
    const after = await scrape();
    const moved = (m: string) => total(after, m) - total(before, m);
    expect(moved('stowage_chunk_cache_hits_total')).toBe(7);
    expect(moved('stowage_chunk_cache_misses_total')).toBe(3);
    expect(moved('stowage_chunk_cache_fetched_bytes_total')).toBe(3 * 65536);
    expect(moved('stowage_chunk_cache_read_bytes_total')).toBe(10 * 65536);
  });

  it('bridge calls count by outcome, and placements on a worker caching their reads count as hits', async () => {
    const name = uniqueName('metrics-bridge');
    const vol = await Volume.fromName(name, { connection: stowage.connection, createIfMissing: true });
    await vol.batchUpload().putFile(randomBytes(3000), '/cached.bin').putFile(randomBytes(3000), '/cold.bin').commit();
    const version = (await vol.info()).latestVersion;
    const [cached] = await stowage.server.catalog.matchFiles(name, version, 'cached.bin');
    const metadata = new Metadata();
    metadata.set('authorization', `Bearer ${stowage.server.token}`);
    const client = new BridgeServiceClient(stowage.server.address, credentials.createInsecure());
    const work: ClientDuplexStream<WorkerMessage, BridgeMessage> = client.work(metadata);
    try {
      const assigned: { callId: string; attempt: number }[] = [];
      let registered = false;
      work.on('data', (m: BridgeMessage) => {
        if (m.registered) registered = true;
        if (m.assign) assigned.push({ callId: m.assign.callId, attempt: m.assign.attempt });
      });
      work.on('error', () => undefined);
      const send = (m: Partial<WorkerMessage>) => work.write({ register: undefined, chunks: undefined, heartbeat: undefined, outcome: undefined, logs: undefined, ...m });
      send({ register: { workerId: uniqueName('w'), host: 'test', slots: 4, chunks: cached!.extents.map((e) => e.hash), running: [], containers: false } });
      await eventually('registered', () => registered);
      const before = await scrape();
      const placementsBefore = stowage.server.metrics.placementCounts();
      const spec = (read: string): FunctionSpec => ({
        module: 'jobs.mjs',
        function: 'job',
        codeVolume: name,
        bundlePath: '/bundle.mjs',
        bundleHash: '',
        volumes: { '/data': name },
        reads: [read],
        timeoutMs: 0,
        retries: 0,
        schedule: '',
        retryPolicy: undefined,
        writable: [], image: '', cpu: 0, memoryBytes: 0, gpu: '',
      });
      const submit = (read: string, n: number) =>
        new Promise<string[]>((resolve, reject) =>
          client.submit(
            { function: spec(read), calls: Array.from({ length: n }, () => ({ id: '', args: Buffer.alloc(0), reads: [] })) },
            metadata,
            (err, res) => (err ? reject(err) : resolve(res!.callIds)),
          ),
        );
      await submit('/data/cached.bin', 2);
      await submit('/data/cold.bin', 1);
      await eventually('three calls assigned', () => assigned.length === 3);
      const running = await scrape();
      expect(total(running, 'stowage_bridge_workers')).toBe(1);
      expect(total(running, 'stowage_bridge_running_calls')).toBe(3);
      const [first, second, third] = assigned as [(typeof assigned)[number], (typeof assigned)[number], (typeof assigned)[number]];
      const outcome = (a: { callId: string; attempt: number }, ok: boolean) =>
        send({
          outcome: {
            ...a,
            ok,
            value: Buffer.alloc(0),
            error: ok ? undefined : { code: 'FUNCTION_ERROR', message: 'raised on purpose', name: 'Error', stack: '' },
            lost: false,
          },
        });
      outcome(first, true);
      outcome(second, false);
      outcome(third, true);
      // The same outcome again is acknowledged but not counted twice.
      outcome(first, true);
      const moved = async (labels: Record<string, string>) => {
        const now = await scrape();
        return total(now, 'stowage_bridge_calls_total', labels) - total(before, 'stowage_bridge_calls_total', labels);
      };
      await eventually('outcomes counted', async () => (await moved({})) === 3);
      expect(await moved({ outcome: 'succeeded' })).toBe(2);
      expect(await moved({ outcome: 'failed' })).toBe(1);
      const after = await scrape();
      const placed = (hit: string) =>
        total(after, 'stowage_bridge_placements_total', { hit }) - total(before, 'stowage_bridge_placements_total', { hit });
      expect(placed('true')).toBe(2);
      expect(placed('false')).toBe(1);
      const counts = stowage.server.metrics.placementCounts();
      expect(counts.total - placementsBefore.total).toBe(3);
      expect(counts.hits - placementsBefore.hits).toBe(2);
      expect(total(after, 'stowage_bridge_running_calls')).toBe(0);
    } finally {
      work.end();
      client.close();
    }
  });
});

describe('Metrics on its own', () => {
  it('counts per name up to MAX_NAMED_COUNTS names, the rest under (other); instances share nothing', async () => {
    const a = new Metrics({ processMetrics: false });
    const b = new Metrics({ processMetrics: false });
    for (let i = 0; i < MAX_NAMED_COUNTS + 5; i++) a.dictOps.count('get', `d${i}`);
    a.dictOps.count('get', 'd0');
    a.queueOps.count('put', 'late');
    const counts = a.opCounts();
    expect(counts.size).toBe(MAX_NAMED_COUNTS + 2);
    expect(counts.get('dict:d0')).toBe(2);
    expect(counts.get('dict:(other)')).toBe(5);
    expect(counts.get('queue:(other)')).toBe(1);
    expect(total(parsePrometheusText(await a.render()), 'stowage_dict_ops_total', { op: 'get' })).toBe(MAX_NAMED_COUNTS + 6);
    expect(total(parsePrometheusText(await b.render()), 'stowage_dict_ops_total')).toBe(0);
    expect(b.opCounts().size).toBe(0);
  });

  it('a queue depth source that fails leaves the gauge empty; the scrape still works', async () => {
    const m = new Metrics({ processMetrics: false });
    m.setQueueDepthSource(async () => [{ name: 'q1', length: 4 }]);
    expect(total(parsePrometheusText(await m.render()), 'stowage_queue_depth', { queue: 'q1' })).toBe(4);
    m.setQueueDepthSource(() => Promise.reject(new Error('redis is down')));
    const families = parsePrometheusText(await m.render());
    expect(families.get('stowage_queue_depth')?.samples).toEqual([]);
    m.setQueueDepthSource(async () => Array.from({ length: 300 }, (_, i) => ({ name: `q${i}`, length: i })));
    expect(parsePrometheusText(await m.render()).get('stowage_queue_depth')?.samples.length).toBe(200);
  });
});

describe('the BlobStore wrapper', () => {
  it('counts each operation by kind and outcome, and the bytes put and got', async () => {
    const m = new Metrics({ processMetrics: false });
    const store = withMetrics(new LocalBlobStore(tempDir('metrics-store')), m);
    await store.put('a/x', Buffer.alloc(1000, 1));
    await store.put('a/y', Buffer.alloc(24, 2));
    expect((await store.get('a/x', { offset: 10, length: 100 })).length).toBe(100);
    await expect(store.get('a/missing')).rejects.toBeInstanceOf(NotFoundError);
    expect(await store.head('a/y')).toBe(24);
    expect(await store.head('a/missing')).toBeUndefined();
    const keys: string[] = [];
    for await (const k of store.list('a/')) keys.push(k);
    expect(keys).toEqual(['a/x', 'a/y']);
    // A listing stopped early still counts once.
    for await (const o of store.scan('a/')) if (o) break;
    await store.delete('a/x');
    const f = parsePrometheusText(await m.render());
    const req = (op: string, outcome: string) => total(f, 'stowage_store_requests_total', { op, outcome });
    expect([req('put', 'ok'), req('get', 'ok'), req('get', 'not_found'), req('head', 'ok'), req('head', 'not_found')]).toEqual([2, 1, 1, 1, 1]);
    expect([req('list', 'ok'), req('scan', 'ok'), req('delete', 'ok'), req('get', 'error')]).toEqual([1, 1, 1, 0]);
    expect(total(f, 'stowage_store_bytes_total', { op: 'put', direction: 'in' })).toBe(1024);
    expect(total(f, 'stowage_store_bytes_total', { op: 'get', direction: 'out' })).toBe(100);
  });
});

describe('a server started with metrics: false', () => {
  let stowage: Stowage | undefined;
  afterAll(async () => {
    await stowage?.stop();
  });

  it('serves as usual and reports nothing (the baseline of bench/metrics)', async () => {
    stowage = await startStowage({ metrics: false });
    const d = await Dict.fromName<string, number>(uniqueName('plain'), { connection: stowage.connection, createIfMissing: true });
    await d.put('k', 1);
    expect(await d.get('k')).toBe(1);
    const f = parsePrometheusText(await stowage.server.metrics.render());
    expect(total(f, 'stowage_rpc_requests_total')).toBe(0);
    expect(total(f, 'stowage_dict_ops_total')).toBe(0);
    expect(total(f, 'stowage_store_requests_total')).toBe(0);
    expect(f.has('stowage_process_cpu_seconds_total')).toBe(false);
    expect(stowage.server.metrics.opCounts().size).toBe(0);
  });
});
