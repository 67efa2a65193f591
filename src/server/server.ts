/**
 * `stowage serve`: one gRPC server hosting the services on one port. The
 * embedded default keeps chunks, tree objects and version records under <data-dir>/store, the
 * volume index under <data-dir>/index, and dicts and queues in LMDB under
 * <data-dir>/dict and <data-dir>/queue, and the compute bridge's calls under
 * <data-dir>/bridge. With an S3 bucket, chunks, tree objects and records go there; with a
 * Redis URL, dicts and queues go there. The bridge reads volumes through a
 * VolumeResolver made here from the catalogue (services never import each other).
 *
 * Metrics (server.metrics, rendered for `/metrics`) are wired here: the
 * rpcMetrics interceptor inside callGuard, the BlobStore wrapped by
 * store/metrics.ts, and the counters the catalogue, dict, queue and bridge are
 * given. The standard grpc.health.v1 service answers on the same port, without
 * a token: SERVING for the server ("") and each hosted service by its full
 * name, NOT_SERVING for services left out with `only`, and for all of them
 * once stop() begins.
 */
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { HealthImplementation, type ServingStatusMap } from 'grpc-health-check';
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { BridgeService } from '../compute-bridge/service.js';
import type { BridgeOptions } from '../compute-bridge/bridge.js';
import type { VolumeResolver } from '../compute-bridge/types.js';
import { loadOrCreateToken } from '../common/auth.js';
import { TokenStore } from '../common/tokens.js';
import { DEFAULT_DATA_DIR, DEFAULT_HOST, DEFAULT_PORT } from '../common/config.js';
import { FailedPreconditionError, InvalidArgumentError, UnavailableError, messageOf } from '../common/errors.js';
import { rpcMetrics } from '../common/grpc-metrics.js';
import { callGuard, withRequestLimits } from '../common/grpc-server.js';
import type { IdleOptions } from '../common/idle.js';
import { createLogger, type Logger } from '../common/logger.js';
import { MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES } from '../common/message-limits.js';
import { MAX_QUEUE_DEPTHS, Metrics } from '../common/metrics.js';
import type { RedisWait } from '../common/redis-commands.js';
import { redactUrl } from '../common/urls.js';
import type { ClientTls, ServerTls } from '../common/tls.js';
import { stowageVersion } from '../common/version.js';
import { startHttp, type RunningHttp } from '../dashboard/http-server.js';
import type { DictBackend } from '../dict/types.js';
import { validatedDictBackend } from '../dict/validating.js';
import { DictService } from '../dict/service.js';
import { BridgeServiceService } from '../gen/stowage/v1/bridge.js';
import { DictServiceService } from '../gen/stowage/v1/dict.js';
import { QueueServiceService } from '../gen/stowage/v1/queue.js';
import { TokenServiceService } from '../gen/stowage/v1/token.js';
import { VolumeServiceService } from '../gen/stowage/v1/volume.js';
import { QueueService } from '../queue/service.js';
import type { QueueBackend } from '../queue/types.js';
import { validatedQueueBackend } from '../queue/validating.js';
import { VolumeCatalog, type CatalogOptions } from '../volume-server/catalog.js';
import { RedisSharedVolumes, type SharedHeads } from '../volume-server/shared.js';
import { StoreSharedHeads } from '../volume-server/store-heads.js';
import { RedisTokenRecords } from './redis-tokens.js';
import { StoreTokenRecords } from './store-tokens.js';
import { collectGarbage } from '../volume-server/gc.js';
import { volumeService } from '../volume-server/grpc-service.js';
import { LmdbIndex } from '../volume-server/index/lmdb.js';
import { MountReports } from '../volume-server/mount-reports.js';
import type { BlobStore } from '../volume-server/store/interface.js';
import { withFaults } from '../volume-server/store/faults.js';
import { withMetrics } from '../volume-server/store/metrics.js';
import { LocalBlobStore } from '../volume-server/store/local.js';
import { S3BlobStore, type S3StoreOptions } from '../volume-server/store/s3.js';
import { BRIDGE_REQUEST_LIMITS, DICT_REQUEST_LIMITS, QUEUE_REQUEST_LIMITS, VOLUME_REQUEST_LIMITS } from './method-limits.js';
import { openDataDir, type DataDirLock } from './data-dir.js';
import { methodScopes } from './method-scopes.js';
import { tokenService } from './token-service.js';
import { dashboardSources } from './dashboard-sources.js';

export const DEFAULT_GC_INTERVAL_MS = 6 * 3600_000;
export const HEADS_MODES = ['local', 'redis', 's3'] as const;
export type HeadsMode = (typeof HEADS_MODES)[number];

export interface ServeOptions {
  dataDir?: string;
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  s3?: S3StoreOptions;
  /** A store to use as it is (tests wrap stores to count or inject faults). */
  store?: BlobStore;
  catalog?: CatalogOptions;
  /** Keep dicts and queues in this Redis (redis://…; several host:port: a Redis Cluster) instead of LMDB. */
  redisUrl?: string;
  /**
   * Where volume heads live: 'local' in this server's index (one server per
   * bucket); 'redis' in `redisUrl`, shared by every server over the bucket
   * (volume-server/shared.ts); or 's3' in the bucket itself, by conditional
   * writes (volume-server/store-heads.ts). Default: 'redis' with `redisUrl`
   * and a bucket, else 'local'.
   */
  heads?: HeadsMode;
  /** Treat a single-host redisUrl as a Redis Cluster seed. */
  redisCluster?: boolean;
  /** After each dict and queue write, WAIT for this many Redis replicas (off when undefined). */
  redisWait?: RedisWait;
  /** How often idle dicts and queues are looked for (tests shorten it). */
  idle?: IdleOptions;
  /** Services to host; all of them by default. */
  only?: readonly ServiceName[];
  /** Compute bridge settings (placement policy, timings). */
  bridge?: BridgeOptions;
  /**
   * With `redisUrl`: the servers sharing that Redis elect one active compute
   * bridge (compute-bridge/service.ts); the others forward bridge calls to it.
   */
  bridgeSet?: {
    /** Lease time (default 10 s). */
    leaseMs?: number;
    /** host:port the other servers reach this one at (default: the address it listens on). */
    advertise?: string;
    /** TLS of this server as a client of the leader (when it serves TLS). */
    peerTls?: ClientTls;
  };
  /** How often garbage collection runs in the background (0: never; default 6 h). */
  gcIntervalMs?: number;
  /** Serve the dashboard and /metrics over HTTP here (port 0: a free one); off when undefined. HTTPS with `tls`'s cert and key. */
  http?: { host: string; port: number; sampleEveryMs?: number };
  /**
   * TLS on the gRPC port (and HTTPS for the dashboard); plain when undefined.
   * With `clientCa`, every gRPC client must present a certificate signed by
   * it (grpc-js checks client certificates for the whole port or not at
   * all); the dashboard asks browsers for none (its token guards it).
   */
  tls?: ServerTls;
  /**
   * false: nothing reports to `metrics` (no interceptor, no store wrapper, no
   * counters; render() gives zeros and no process metrics). Only for
   * measuring what the instrumentation costs (bench/metrics); default true.
   */
  metrics?: boolean;
  log?: Logger;
}

export const SERVICE_NAMES = ['volume', 'dict', 'queue', 'bridge'] as const;
export type ServiceName = (typeof SERVICE_NAMES)[number];

export interface RunningServer {
  address: string;
  port: number;
  token: string;
  tokenPath: string;
  tokenCreated: boolean;
  dataDir: string;
  store: BlobStore;
  catalog: VolumeCatalog;
  /** Where dicts and queues live: an LMDB directory or a redacted Redis URL. */
  stateDescription: string;
  services: readonly ServiceName[];
  /** host:port of the dashboard and /metrics, when `http` was given. */
  httpAddress?: string;
  /** 'off': plain gRPC (and HTTP); 'tls': TLS (and HTTPS); 'mutual': TLS requiring client certificates on the gRPC port. */
  tls: 'off' | 'tls' | 'mutual';
  /** The latest report of each live mount. */
  mounts: MountReports;
  /** What this server has done, for `/metrics` (render()) and the dashboard. */
  metrics: Metrics;
  stop(): Promise<void>;
}

/** The full gRPC name of each service, as health checks name them. */
export const GRPC_SERVICE_NAMES: Record<ServiceName, string> = {
  volume: 'stowage.v1.VolumeService',
  dict: 'stowage.v1.DictService',
  queue: 'stowage.v1.QueueService',
  bridge: 'stowage.v1.BridgeService',
};

export async function startServer(opts: ServeOptions = {}): Promise<RunningServer> {
  const log = opts.log ?? createLogger('stowage');
  const dataDir = resolve(opts.dataDir ?? DEFAULT_DATA_DIR);
  // Before anything else in the directory is opened: one server per data directory.
  const lock = await openDataDir(dataDir, log);
  const opened: { close(): Promise<void> }[] = [];
  try {
    return await serve(opts, log, dataDir, lock, opened);
  } catch (err) {
    for (const o of opened.reverse()) await o.close().catch(() => undefined);
    lock.release();
    throw err;
  }
}

async function serve(
  opts: ServeOptions,
  log: Logger,
  dataDir: string,
  lock: DataDirLock,
  opened: { close(): Promise<void> }[],
): Promise<RunningServer> {
  const { token, path: tokenPath, created } = loadOrCreateToken(dataDir);
  // The admin token and the scoped tokens it issued (<data-dir>/tokens.json).
  const tokens = new TokenStore(dataDir, token);
  const services = opts.only ?? SERVICE_NAMES;
  const instrumented = opts.metrics ?? true;
  const metrics = new Metrics({ processMetrics: instrumented });
  const bare = withFaults(
    opts.store ?? (opts.s3 ? new S3BlobStore(opts.s3) : new LocalBlobStore(join(dataDir, 'store'))),
    process.env.STOWAGE_TEST_FAULTS,
  );
  const store = instrumented ? withMetrics(bare, metrics) : bare;
  const index = new LmdbIndex(join(dataDir, 'index'), log);
  opened.push(index);
  // Shared heads need a shared store: the default with a bucket and a Redis.
  const heads = opts.heads ?? (opts.redisUrl && opts.s3 ? 'redis' : 'local');
  if (heads === 'redis' && !opts.redisUrl) throw new InvalidArgumentError('heads in Redis need a Redis: give --redis-url too');
  if (heads === 'redis' && !opts.s3) {
    throw new InvalidArgumentError('heads in Redis are for servers sharing one bucket: give --s3-bucket too (a local store is this server\'s alone)');
  }
  if (heads === 's3' && !opts.s3) throw new InvalidArgumentError('--heads s3 is for servers sharing one bucket: give --s3-bucket too');
  const storeName = opts.s3 ? `${opts.s3.bucket}/${opts.s3.prefix ?? ''}` : '';
  const shared: SharedHeads | undefined =
    heads === 'redis' ? await RedisSharedVolumes.connect(opts.redisUrl!, storeName, opts.redisCluster) : heads === 's3' ? await StoreSharedHeads.open(store) : undefined;
  if (shared) opened.push(shared);
  if (shared) {
    // Scoped tokens are shared with the other servers too, where the heads are (common/tokens.ts).
    opened.push(tokens);
    const records =
      heads === 'redis' ? await RedisTokenRecords.connect(opts.redisUrl!, storeName, opts.redisCluster) : new StoreTokenRecords(store as ConstructorParameters<typeof StoreTokenRecords>[0]);
    await tokens.share(records, (err) => log.warn({ err: messageOf(err) }, `cannot reload the scoped tokens from ${shared.describe()}`));
  }
  const catalog = new VolumeCatalog(store, index, log, {
    ...opts.catalog,
    treeCacheCounter: instrumented ? metrics.treeCache : undefined,
    shared,
  });
  opened.push(catalog);
  // Only the hosted services open their backends (and run their timers).
  const { dicts, queues } = await openStateBackends(dataDir, opts, services, log);
  if (dicts) opened.push(dicts);
  if (queues) opened.push(queues);
  const dictService = dicts && new DictService(dicts, log, opts.idle, instrumented ? metrics.dictOps : undefined);
  const queueService = queues && new QueueService(queues, log, opts.idle, instrumented ? metrics.queueOps : undefined);
  if (dictService) opened.push(dictService);
  if (queueService) opened.push(queueService);
  // The bridge reads the catalogue (for placement) even when the volume service is not hosted here.
  if (services.includes('volume') || services.includes('bridge')) await catalog.init();
  // With Redis, the servers elect one active bridge; it joins the election once this server listens.
  const bridgeService = services.includes('bridge')
    ? await BridgeService.open(dataDir, volumeResolver(catalog), log, opts.bridge, instrumented ? metrics.bridge : undefined, opts.redisUrl ? { redisUrl: opts.redisUrl, redisCluster: opts.redisCluster, id: `${hostname()}-${randomUUID().slice(0, 8)}`, ...opts.bridgeSet } : undefined)
    : undefined;
  if (bridgeService) opened.push(bridgeService);
  if (instrumented && queues) metrics.setQueueDepthSource(() => queueDepths(queues));
  if (instrumented && bridgeService) metrics.setBridgeSource(() => bridgeService.stats());

  // What mounts report adds to the chunk cache counters of /metrics.
  const mounts = new MountReports(instrumented ? (g) => metrics.chunkCacheReport(g) : undefined);
  const server = new Server({
    // Checked from each message's length prefix, before the message is read (see common/grpc-server.ts).
    'grpc.max_receive_message_length': MAX_REQUEST_BYTES,
    'grpc.max_send_message_length': MAX_RESPONSE_BYTES,
    // rpcMetrics first: inside callGuard, so that the calls it refuses are counted too.
    interceptors: instrumented
      ? [rpcMetrics(metrics), callGuard(tokens, methodScopes(), log)]
      : [callGuard(tokens, methodScopes(), log)],
  });
  const health = new HealthImplementation(healthStatuses(services));
  health.addToServer(server);
  if (services.includes('volume')) {
    server.addService(withRequestLimits(VolumeServiceService, VOLUME_REQUEST_LIMITS), volumeService(catalog, mounts, tokens, log));
  }
  if (dictService) server.addService(withRequestLimits(DictServiceService, DICT_REQUEST_LIMITS), dictService.handlers(tokens));
  if (queueService) server.addService(withRequestLimits(QueueServiceService, QUEUE_REQUEST_LIMITS), queueService.handlers(tokens));
  if (bridgeService) server.addService(withRequestLimits(BridgeServiceService, BRIDGE_REQUEST_LIMITS), bridgeService.handlers(tokens));
  server.addService(TokenServiceService, tokenService(tokens, log));
  const host = opts.host ?? DEFAULT_HOST;
  const port = await new Promise<number>((res, rej) =>
    server.bindAsync(`${host}:${opts.port ?? DEFAULT_PORT}`, serverCredentials(opts.tls), (err, p) =>
      err
        ? rej(new UnavailableError(`cannot listen on ${host}:${opts.port ?? DEFAULT_PORT}: ${err.message} (pick another with --port)`))
        : res(p),
    ),
  );
  const address = `${host}:${port}`;
  try {
    await bridgeService?.join(opts.bridgeSet?.advertise ?? advertisedAddress(host, port));
  } catch (err) {
    server.forceShutdown();
    throw err;
  }
  let http: RunningHttp | undefined;
  if (opts.http) {
    try {
      http = await startHttp({
        ...opts.http,
        tls: opts.tls && { cert: opts.tls.cert, key: opts.tls.key },
        tokens,
        log,
        sources: dashboardSources({
          server: {
            address,
            version: stowageVersion(),
            services: [...services],
            store: store.description,
            state: stateDescription(dataDir, opts),
            startedAtMs: Date.now(),
          },
          catalog: services.includes('volume') ? catalog : undefined,
          dicts,
          queues,
          bridge: bridgeService,
          mounts,
          metrics,
        }),
      });
    } catch (err) {
      server.forceShutdown();
      throw err;
    }
  }
  const reaper = services.includes('volume')
    ? setInterval(() => {
        catalog.reapEphemeral().catch((err: unknown) => log.warn({ err: (err as Error).message }, 'ephemeral reaper failed'));
      }, 30_000).unref()
    : undefined;
  // Not yet with shared heads (gc.ts says why): nothing is deleted there.
  const gcInterval = shared ? 0 : (opts.gcIntervalMs ?? DEFAULT_GC_INTERVAL_MS);
  if (shared && (opts.gcIntervalMs ?? DEFAULT_GC_INTERVAL_MS) > 0 && services.includes('volume')) {
    log.info({ heads: shared.describe() }, 'background garbage collection is off while servers share volume heads');
  }
  let gcRun: Promise<unknown> = Promise.resolve();
  const gcTimer =
    services.includes('volume') && gcInterval > 0
      ? setInterval(() => {
          gcRun = collectGarbage(catalog).then(
            (r) => log.info({ ...r }, 'garbage collection'),
            (err: unknown) => log.warn({ err: (err as Error).message }, 'garbage collection failed'),
          );
        }, gcInterval).unref()
      : undefined;

  return {
    address,
    port,
    token,
    tokenPath,
    tokenCreated: created,
    dataDir,
    store,
    catalog,
    stateDescription: stateDescription(dataDir, opts),
    services,
    httpAddress: http?.address,
    tls: !opts.tls ? 'off' : opts.tls.clientCa ? 'mutual' : 'tls',
    mounts,
    metrics,
    async stop() {
      for (const name of Object.keys(healthStatuses(SERVICE_NAMES))) health.setStatus(name, 'NOT_SERVING');
      await http?.close();
      if (reaper) clearInterval(reaper);
      if (gcTimer) clearInterval(gcTimer);
      await gcRun;
      await bridgeService?.close();
      await catalog.close();
      // Sessions with blocked gets would hold a graceful shutdown open forever.
      await new Promise<void>((res) => {
        const force = setTimeout(() => server.forceShutdown(), 2000);
        server.tryShutdown(() => {
          clearTimeout(force);
          res();
        });
      });
      await Promise.all([dictService?.close(), queueService?.close()]);
      await Promise.all([index.close(), dicts?.close(), queues?.close(), shared?.close(), tokens.close()]);
      lock.release();
    },
  };
}

/** Where other servers reach this one by default: the listening address, or this host's name when listening on every address. */
function advertisedAddress(host: string, port: number): string {
  const any = host === '0.0.0.0' || host === '::' || host === '[::]';
  return `${any ? hostname() : host.includes(':') && !host.startsWith('[') ? `[${host}]` : host}:${port}`;
}

function serverCredentials(tls: ServerTls | undefined): ServerCredentials {
  if (!tls) return ServerCredentials.createInsecure();
  // checkClientCertificate: with a client CA, a client without a certificate it signed is refused at the handshake.
  return ServerCredentials.createSsl(tls.clientCa ?? null, [{ cert_chain: tls.cert, private_key: tls.key }], tls.clientCa !== undefined);
}

/** SERVING for the whole server ("") and each hosted service, NOT_SERVING for the others. */
function healthStatuses(hosted: readonly ServiceName[]): ServingStatusMap {
  const map: ServingStatusMap = { '': 'SERVING' };
  for (const s of SERVICE_NAMES) map[GRPC_SERVICE_NAMES[s]] = hosted.includes(s) ? 'SERVING' : 'NOT_SERVING';
  return map;
}

/** The depth of the first MAX_QUEUE_DEPTHS queues, for stowage_queue_depth. */
async function queueDepths(queues: QueueBackend): Promise<{ name: string; length: number }[]> {
  const listed = (await queues.list()).slice(0, MAX_QUEUE_DEPTHS);
  // A queue dropped since the listing is left out, not an error of the scrape.
  const depths = await Promise.all(
    listed.map((q) => queues.len(q.name, { total: true }).then((length) => ({ name: q.name, length }), () => undefined)),
  );
  return depths.filter((d) => d !== undefined);
}

function stateDescription(dataDir: string, opts: Pick<ServeOptions, 'redisUrl' | 'redisCluster' | 'redisWait'>): string {
  if (!opts.redisUrl) return `LMDB in ${dataDir}/{dict,queue}`;
  const cluster = opts.redisCluster || opts.redisUrl.includes(',') ? ' (Redis Cluster)' : '';
  const wait = opts.redisWait ? `, WAIT ${opts.redisWait.replicas} replica(s) within ${opts.redisWait.timeoutMs} ms` : '';
  return `${redactUrl(opts.redisUrl)}${cluster}${wait}`;
}

/** What the compute bridge may know of volumes: versions and the extents of their files. */
function volumeResolver(catalog: VolumeCatalog): VolumeResolver {
  return {
    async latestVersion(volume) {
      const v = (await catalog.getVolume(volume)).latestVersion;
      if (!v) throw new FailedPreconditionError(`volume ${volume} has no version yet: put files into it first (stowage volume put ${volume} …)`);
      return v;
    },
    matchFiles(volume, version, glob) {
      return catalog.matchFiles(volume, version, glob);
    },
  };
}

/**
 * The dict and queue backends of the hosted services (undefined for one not
 * hosted), each behind its contract's argument checks (dict/validating.ts,
 * queue/validating.ts).
 */
async function openStateBackends(
  dataDir: string,
  opts: Pick<ServeOptions, 'redisUrl' | 'redisCluster' | 'redisWait'>,
  services: readonly ServiceName[],
  log: Logger,
): Promise<{ dicts?: DictBackend; queues?: QueueBackend }> {
  const { dicts, queues } = await openRawStateBackends(dataDir, opts, services, log);
  return { dicts: dicts && validatedDictBackend(dicts), queues: queues && validatedQueueBackend(queues) };
}

async function openRawStateBackends(
  dataDir: string,
  opts: Pick<ServeOptions, 'redisUrl' | 'redisCluster' | 'redisWait'>,
  services: readonly ServiceName[],
  log: Logger,
): Promise<{ dicts?: DictBackend; queues?: QueueBackend }> {
  const { redisUrl, redisCluster: cluster, redisWait: wait } = opts;
  const wantDicts = services.includes('dict');
  const wantQueues = services.includes('queue');
  if (redisUrl) {
    const { RedisDictBackend } = await import('../dict/redis.js');
    const { RedisQueueBackend } = await import('../queue/redis.js');
    const dicts = wantDicts ? new RedisDictBackend(redisUrl, { cluster, wait }) : undefined;
    try {
      return { dicts, queues: wantQueues ? await RedisQueueBackend.connect({ url: redisUrl, cluster, wait }) : undefined };
    } catch (err) {
      await dicts?.close();
      throw err;
    }
  }
  const { LmdbDictBackend } = await import('../dict/lmdb.js');
  const { LmdbQueueBackend } = await import('../queue/lmdb.js');
  const dicts = wantDicts ? new LmdbDictBackend(join(dataDir, 'dict'), log) : undefined;
  try {
    return { dicts, queues: wantQueues ? new LmdbQueueBackend(join(dataDir, 'queue'), log) : undefined };
  } catch (err) {
    await dicts?.close();
    throw err;
  }
}
