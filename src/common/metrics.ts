/**
 * Metrics: what one server has done, in the Prometheus text format
 * (prom-client), for `/metrics` (served by `stowage serve --http`) and the
 * dashboard. Every instance has its own Registry, never prom-client's global
 * one: tests and benchmarks run many servers in one process, and each must
 * count only its own work. Process metrics (CPU, memory, event loop, GC) are
 * the process's whatever the server, so they are collected once per process
 * in a registry of their own and appended to every instance's render.
 *
 * Nothing here knows the services: they report through small interfaces
 * (OpCounter here; the tree cache, the BlobStore wrapper and the bridge each
 * declare their own), which this class satisfies by shape, and src/server/
 * wires them together. Scrape-time values (queue depths, bridge workers) come
 * from sources the server registers; a source that fails leaves its gauge
 * empty for that scrape instead of failing the scrape.
 *
 * Labels are bounded: methods and codes come from the registered services,
 * op kinds from the protocol; dict and queue names are never labels, and the
 * per-name counts the dashboard reads (opCounts) stop adding names at
 * MAX_NAMED_COUNTS.
 */
import { status as GrpcStatus } from '@grpc/grpc-js';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Counts operations of one kind on one named object (a dict, a queue). */
export interface OpCounter {
  count(kind: string, name: string): void;
}

/** Cache counters reported by a mount (or the worker holding its cache), as increments since its last report. */
export interface ChunkCacheDelta {
  hits: number;
  misses: number;
  /** Bytes fetched from the store into the cache. */
  bytesFetched: number;
  /** Bytes read by applications through the cache. */
  bytesRead: number;
}

/** Names counted one by one in opCounts (dicts and queues together); more go to `dict:(other)` / `queue:(other)`. */
export const MAX_NAMED_COUNTS = 10_000;
/** Queues whose depth one scrape reports. */
export const MAX_QUEUE_DEPTHS = 200;

const STORE_OPS = ['put', 'get', 'head', 'delete', 'list', 'scan', 'move', 'presign_put', 'presign_get'] as const;
const STORE_OUTCOMES = ['ok', 'not_found', 'error'] as const;
const BRIDGE_OUTCOMES = ['succeeded', 'failed', 'timeout', 'lost', 'cancelled'] as const;
/** Seconds: from well under a millisecond (an LMDB dict op) to long streams. */
const RPC_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** A BlobStore operation kind (the store wrapper's label values). */
export type StoreOp = (typeof STORE_OPS)[number];
/** How a store operation ended: NotFoundError is `not_found`, any other failure `error`. */
export type StoreOutcome = (typeof STORE_OUTCOMES)[number];

let processRegistry: Registry | undefined;
/** The process-wide registry of prom-client's default metrics, made on first use (once per process: its collectors never stop). */
function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry, prefix: 'stowage_' });
  }
  return processRegistry;
}

type CounterChild = ReturnType<Counter<string>['labels']>;

/** Operations of one family (dict or queue): by kind, by name (up to the shared bound), and beyond it. */
interface OpTally {
  byKind: Map<string, number>;
  byName: Map<string, number>;
  other: number;
}
const newTally = (): OpTally => ({ byKind: new Map(), byName: new Map(), other: 0 });

type HistogramChild = ReturnType<Histogram<string>['labels']>;

/** How a Metrics is made. */
export interface MetricsOptions {
  /** Include the process metrics (default true). */
  processMetrics?: boolean;
}

/** One server's metrics (see the head of this file). */
export class Metrics {
  private readonly registry = new Registry();
  private readonly withProcess: boolean;
  /** The Prometheus content type of render()'s text. */
  readonly contentType: string;

  private readonly rpcRequests = this.counter('stowage_rpc_requests_total', 'gRPC calls finished, by service, method and status code (refused calls included).', ['service', 'method', 'code']);
  private readonly rpcDuration = new Histogram({
    name: 'stowage_rpc_duration_seconds',
    help: 'Time from the start of a gRPC call to its status, by service, method and status code (streams: their whole life).',
    labelNames: ['service', 'method', 'code'],
    buckets: RPC_BUCKETS,
    registers: [this.registry],
  });
  private readonly rpcChildren = new Map<string, { count: CounterChild; time: HistogramChild }>();

  private readonly storeRequests = this.counter('stowage_store_requests_total', 'BlobStore operations (S3 or local directory), by operation kind and outcome.', ['op', 'outcome']);
  private readonly storeBytes = this.counter('stowage_store_bytes_total', 'Bytes moved by BlobStore operations: direction "in" is written to the store, "out" read from it.', ['op', 'direction']);
  private readonly storeChildren = new Map<string, CounterChild>();

  private readonly treeHits = this.counter('stowage_tree_cache_hits_total', "Tree page lookups served from the volume server's memory cache of decoded pages.");
  private readonly treeMisses = this.counter('stowage_tree_cache_misses_total', 'Tree page lookups that had to load the page (from the index or the store).');
  private readonly chunkHits = this.counter('stowage_chunk_cache_hits_total', 'Chunk cache hits reported by mounts.');
  private readonly chunkMisses = this.counter('stowage_chunk_cache_misses_total', 'Chunk cache misses reported by mounts.');
  private readonly chunkFetched = this.counter('stowage_chunk_cache_fetched_bytes_total', 'Bytes mounts fetched from the store into their chunk caches.');
  private readonly chunkRead = this.counter('stowage_chunk_cache_read_bytes_total', 'Bytes applications read through mounts (from the cache or fetched).');

  // Plain tallies, published to prom-client at scrape time: an operation costs two Map updates, not a label hash.
  private readonly tallies: Record<'dict' | 'queue', OpTally> = { dict: newTally(), queue: newTally() };
  private namedCount = 0;
  private queueDepthSource: (() => Promise<{ name: string; length: number }[]>) | undefined;

  private readonly bridgeCalls = this.counter('stowage_bridge_calls_total', 'Bridge calls finished, by outcome: succeeded; failed (the function raised, or its reads could not be resolved); timeout (ran past its timeout); lost (its worker or runner was lost on its last allowed attempt).', ['outcome']);
  private readonly bridgeRequeued = this.counter('stowage_bridge_attempts_requeued_total', 'Bridge call attempts lost with their worker or runner and queued again for another attempt.');
  private readonly bridgePlacements = this.counter('stowage_bridge_placements_total', 'Placements of bridge calls that declare reads: hit="true" when the chosen worker\'s cache held at least one byte of the call\'s reads (its cachedBytes in the placement decision > 0), "false" otherwise. Calls declaring no reads are not counted.', ['hit']);
  private placementHits = 0;
  private placementTotal = 0;
  private bridgeSource: (() => { workers: number; runningCalls: number; queuedCalls: number }) | undefined;

  constructor(opts: MetricsOptions = {}) {
    this.withProcess = opts.processMetrics ?? true;
    this.contentType = this.registry.contentType;
    // Series that exist from the start (at 0), so that rates and ratios have a base.
    for (const op of STORE_OPS) for (const outcome of STORE_OUTCOMES) this.storeChild('requests', op, outcome).inc(0);
    this.storeChild('bytes', 'put', 'in').inc(0);
    this.storeChild('bytes', 'get', 'out').inc(0);
    for (const outcome of BRIDGE_OUTCOMES) this.bridgeCalls.labels(outcome).inc(0);
    for (const hit of ['true', 'false']) this.bridgePlacements.labels(hit).inc(0);
    const self = this;
    for (const family of ['dict', 'queue'] as const) {
      const tally = this.tallies[family];
      new Counter({
        name: `stowage_${family}_ops_total`,
        help: `${family === 'dict' ? 'Dict' : 'Queue'} operations run, by kind (each operation of a batch counts).`,
        labelNames: ['op'],
        registers: [this.registry],
        collect() {
          this.reset();
          for (const [op, n] of tally.byKind) this.inc({ op }, n);
        },
      });
    }
    new Gauge({
      name: 'stowage_queue_depth',
      help: `Items in each queue (all partitions, leased and dead letters included), read at scrape time; at most ${MAX_QUEUE_DEPTHS} queues.`,
      labelNames: ['queue'],
      registers: [this.registry],
      async collect() {
        this.reset();
        const depths = await self.queueDepthSource?.().catch(() => []);
        for (const d of (depths ?? []).slice(0, MAX_QUEUE_DEPTHS)) this.set({ queue: d.name }, d.length);
      },
    });
    const bridgeGauge = (name: string, help: string, pick: (s: { workers: number; runningCalls: number; queuedCalls: number }) => number) =>
      new Gauge({
        name,
        help,
        registers: [this.registry],
        collect() {
          const s = self.bridgeSource?.();
          this.set(s ? pick(s) : 0);
        },
      });
    bridgeGauge('stowage_bridge_workers', 'Workers registered with the bridge.', (s) => s.workers);
    bridgeGauge('stowage_bridge_running_calls', 'Bridge calls running on workers.', (s) => s.runningCalls);
    bridgeGauge('stowage_bridge_queued_calls', 'Bridge calls waiting to be placed.', (s) => s.queuedCalls);
  }

  private counter(name: string, help: string, labelNames: string[] = []): Counter<string> {
    return new Counter({ name, help, labelNames, registers: [this.registry] });
  }

  /** Everything, in the Prometheus text exposition format (contentType). */
  async render(): Promise<string> {
    const own = await this.registry.metrics();
    return this.withProcess ? own + (await processMetrics().metrics()) : own;
  }

  // ---- gRPC ------------------------------------------------------------------

  /** A gRPC call ended with `code` (a grpc status number) after `seconds`; `path` is "/package.Service/Method". */
  rpcFinished(path: string, code: number, seconds: number): void {
    const key = `${path} ${code}`;
    let c = this.rpcChildren.get(key);
    if (!c) {
      const slash = path.lastIndexOf('/');
      const service = path.slice(1, Math.max(1, slash));
      const method = path.slice(slash + 1);
      const codeName = GrpcStatus[code] ?? String(code);
      c = { count: this.rpcRequests.labels(service, method, codeName), time: this.rpcDuration.labels(service, method, codeName) };
      this.rpcChildren.set(key, c);
    }
    c.count.inc();
    c.time.observe(seconds);
  }

  // ---- store -----------------------------------------------------------------

  /** One BlobStore operation; `bytesIn` were written to the store, `bytesOut` read from it. */
  storeRequest(op: StoreOp, outcome: StoreOutcome, bytesIn = 0, bytesOut = 0): void {
    this.storeChild('requests', op, outcome).inc();
    if (bytesIn) this.storeChild('bytes', op, 'in').inc(bytesIn);
    if (bytesOut) this.storeChild('bytes', op, 'out').inc(bytesOut);
  }

  private storeChild(which: 'requests' | 'bytes', op: string, second: string): CounterChild {
    const key = `${which} ${op} ${second}`;
    let c = this.storeChildren.get(key);
    if (!c) this.storeChildren.set(key, (c = (which === 'requests' ? this.storeRequests : this.storeBytes).labels(op, second)));
    return c;
  }

  // ---- caches ----------------------------------------------------------------

  /** The tree-page cache's counter (hit: served from memory). */
  readonly treeCache = {
    hit: (): void => this.treeHits.inc(),
    miss: (): void => this.treeMisses.inc(),
  };

  /** Adds a mount's chunk cache counters since its last report; negative or non-finite fields are ignored. */
  chunkCacheReport(delta: ChunkCacheDelta): void {
    const add = (c: Counter<string>, n: number) => {
      if (Number.isFinite(n) && n > 0) c.inc(n);
    };
    add(this.chunkHits, delta.hits);
    add(this.chunkMisses, delta.misses);
    add(this.chunkFetched, delta.bytesFetched);
    add(this.chunkRead, delta.bytesRead);
  }

  // ---- dict and queue --------------------------------------------------------

  /** The dict service's counter. */
  readonly dictOps: OpCounter = this.opCounter(this.tallies.dict);
  /** The queue service's counter. */
  readonly queueOps: OpCounter = this.opCounter(this.tallies.queue);

  private opCounter(t: OpTally): OpCounter {
    return {
      count: (kind, name) => {
        t.byKind.set(kind, (t.byKind.get(kind) ?? 0) + 1);
        const n = t.byName.get(name);
        if (n !== undefined) t.byName.set(name, n + 1);
        else if (this.namedCount < MAX_NAMED_COUNTS) {
          t.byName.set(name, 1);
          this.namedCount++;
        } else t.other++;
      },
    };
  }

  /**
   * Operations per dict and queue since the server started, keyed `dict:NAME`
   * and `queue:NAME`; after MAX_NAMED_COUNTS names, new names count under
   * `dict:(other)` and `queue:(other)`.
   */
  opCounts(): ReadonlyMap<string, number> {
    const out = new Map<string, number>();
    for (const family of ['dict', 'queue'] as const) {
      const t = this.tallies[family];
      for (const [name, n] of t.byName) out.set(`${family}:${name}`, n);
      if (t.other) out.set(`${family}:(other)`, t.other);
    }
    return out;
  }

  /** Where stowage_queue_depth comes from at each scrape (the first MAX_QUEUE_DEPTHS queues it returns). */
  setQueueDepthSource(source: () => Promise<{ name: string; length: number }[]>): void {
    this.queueDepthSource = source;
  }

  // ---- bridge ----------------------------------------------------------------

  /** The bridge's observer. */
  readonly bridge = {
    callFinished: (outcome: string): void => this.bridgeCalls.labels(outcome).inc(),
    attemptRequeued: (): void => this.bridgeRequeued.inc(),
    placed: (hit: boolean): void => {
      this.placementTotal++;
      if (hit) this.placementHits++;
      this.bridgePlacements.labels(hit ? 'true' : 'false').inc();
    },
  };

  /** Placements counted by stowage_bridge_placements_total: how many, and how many were hits. */
  placementCounts(): { hits: number; total: number } {
    return { hits: this.placementHits, total: this.placementTotal };
  }

  /** Where the bridge gauges come from at each scrape. */
  setBridgeSource(source: () => { workers: number; runningCalls: number; queuedCalls: number }): void {
    this.bridgeSource = source;
  }
}
