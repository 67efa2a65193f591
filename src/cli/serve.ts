/** `stowage serve`: the server, on the embedded default unless given a bucket. */
import type { Command } from 'commander';
import { DEFAULT_DATA_DIR, DEFAULT_HOST, DEFAULT_HTTP_PORT, DEFAULT_PORT } from '../common/config.js';
import { InvalidArgumentError } from '../common/errors.js';
import { quote } from '../common/quote.js';
import { loadClientTls, loadServerTls } from '../common/tls.js';
import { UINT32_MAX, integerArg } from './values.js';

interface ServeFlags {
  dataDir: string;
  host: string;
  port: string;
  s3Endpoint?: string;
  s3Bucket?: string;
  s3Prefix?: string;
  s3Region?: string;
  presign: boolean;
  redisUrl?: string;
  heads?: string;
  redisCluster?: boolean;
  redisWait?: string;
  only?: string;
  placement: string;
  localityWait?: string;
  gcInterval: string;
  gcGrace: string;
  keepLast: string;
  keepWithin: string;
  http?: string | true;
  tlsCert?: string;
  tlsKey?: string;
  tlsClientCa?: string;
  bridgeLease: string;
  advertise?: string;
}

export function register(program: Command): void {
  program
    .command('serve')
    .description('run the stowage server (embedded default: local directory + LMDB under --data-dir)')
    .option('--data-dir <dir>', 'where the index, token and (without S3) chunks live', process.env.STOWAGE_DATA_DIR ?? DEFAULT_DATA_DIR)
    .option('--host <host>', 'address to listen on', process.env.STOWAGE_HOST ?? DEFAULT_HOST)
    .option('--port <port>', 'port to listen on (0 picks a free one)', process.env.STOWAGE_PORT ?? String(DEFAULT_PORT))
    .option('--s3-endpoint <url>', 'S3 API endpoint (MinIO, R2, ...); AWS when only --s3-bucket is given', process.env.STOWAGE_S3_ENDPOINT)
    .option('--s3-bucket <bucket>', 'keep chunks, tree objects and version records in this bucket', process.env.STOWAGE_S3_BUCKET)
    .option('--s3-prefix <prefix>', 'key prefix inside the bucket', process.env.STOWAGE_S3_PREFIX)
    .option('--s3-region <region>', 'bucket region (default: AWS_REGION or us-east-1)', process.env.STOWAGE_S3_REGION)
    .option('--redis-url <url>', 'keep dicts and queues in Redis (redis://[user:pass@]host:port[/db]; several host:port, comma-separated: a Redis Cluster) instead of LMDB', process.env.STOWAGE_REDIS_URL)
    .option('--redis-cluster', 'the single host of --redis-url is a Redis Cluster node (env STOWAGE_REDIS_CLUSTER=1)', process.env.STOWAGE_REDIS_CLUSTER === '1')
    .option('--redis-wait <n[/timeout]>', 'after each dict and queue write, WAIT until N Redis replicas have it (timeout default 1s), else fail UNAVAILABLE', process.env.STOWAGE_REDIS_WAIT)
    .option('--heads <where>', "where volume heads live: 'redis' (--redis-url: any number of servers may share the bucket; the default with --redis-url and --s3-bucket), 's3' (in the bucket, by conditional writes, where the S3 enforces them), or 'local' (this server's index: one server per bucket)", process.env.STOWAGE_HEADS)
    .option('--bridge-lease <duration>', 'with --redis-url: the lease by which the servers sharing that Redis elect the one that runs the compute bridge (the others forward to it); a set is without a bridge for up to this long after that server dies', '10s')
    .option('--advertise <host:port>', 'with --redis-url: where the other servers reach this one (default: --host and --port)', process.env.STOWAGE_ADVERTISE)
    .option('--only <services>', 'host only these services, comma-separated: volume,dict,queue,bridge')
    .option('--placement <policy>', 'compute bridge placement: ours (by cached bytes), round-robin or random', 'ours')
    .option('--locality-wait <duration>', 'how long a call waits for the busy worker that caches its data before going elsewhere, e.g. 500ms (default 2s)')
    .option('--no-presign', 'stream chunk bytes through the server instead of handing out presigned URLs')
    .option('--gc-interval <duration>', 'run garbage collection in the background this often (0: never)', '6h')
    .option('--gc-grace <duration>', 'garbage collection keeps unreferenced objects younger than this, and leases planned uploads as long', '1h')
    .option('--keep-last <n>', 'default retention: keep the newest N versions of each volume', '10')
    .option('--keep-within <duration>', 'default retention: keep every version younger than this', '24h')
    .option('--http [[host:]port]', 'serve the web dashboard and Prometheus /metrics over HTTP (both need the token); without a value: --host, port 7421', process.env.STOWAGE_HTTP)
    .option('--tls-cert <file>', "serve gRPC (and --http) over TLS with this PEM certificate (chain); with --tls-key", process.env.STOWAGE_TLS_CERT)
    .option('--tls-key <file>', "the PEM private key of --tls-cert", process.env.STOWAGE_TLS_KEY)
    .option('--tls-client-ca <file>', 'mutual TLS: refuse every gRPC client without a certificate signed by this CA', process.env.STOWAGE_TLS_CLIENT_CA)
    .action(async (flags: ServeFlags) => {
      const port = integerArg('--port', flags.port, 0, 65535)!;
      if (flags.s3Endpoint && !flags.s3Bucket) {
        throw new InvalidArgumentError('--s3-endpoint needs --s3-bucket too');
      }
      // Loaded here so that client commands do not pay for the server's modules.
      const { createLogger } = await import('../common/logger.js');
      const { startServer, SERVICE_NAMES } = await import('../server/server.js');
      const only = flags.only?.split(',').map((s) => s.trim());
      const unknown = only?.filter((s) => !(SERVICE_NAMES as readonly string[]).includes(s)) ?? [];
      if (unknown.length || only?.length === 0) {
        throw new InvalidArgumentError(`--only ${quote(flags.only ?? '')}: choose from ${SERVICE_NAMES.join(',')}`);
      }
      const { PLACEMENT_POLICIES } = await import('../compute-bridge/types.js');
      if (!(PLACEMENT_POLICIES as readonly string[]).includes(flags.placement)) {
        throw new InvalidArgumentError(`--placement ${quote(flags.placement)}: choose from ${PLACEMENT_POLICIES.join(', ')}`);
      }
      const { HEADS_MODES } = await import('../server/server.js');
      if (flags.heads !== undefined && !(HEADS_MODES as readonly string[]).includes(flags.heads)) {
        throw new InvalidArgumentError(`--heads ${quote(flags.heads)}: choose from ${HEADS_MODES.join(', ')}`);
      }
      if (flags.heads === 'redis' && !flags.redisUrl) throw new InvalidArgumentError('--heads redis needs --redis-url');
      const { parseDuration } = await import('../common/duration.js');
      const localityWaitMs = flags.localityWait === undefined ? undefined : parseDuration('--locality-wait', flags.localityWait);
      const gcIntervalMs = parseDuration('--gc-interval', flags.gcInterval);
      const graceMs = parseDuration('--gc-grace', flags.gcGrace);
      const keepLast = integerArg('--keep-last', flags.keepLast, 0, UINT32_MAX)!;
      const keepWithinMs = parseDuration('--keep-within', flags.keepWithin);
      const http = httpAddress(flags.http, flags.host);
      if ((flags.redisCluster || flags.redisWait) && !flags.redisUrl) {
        throw new InvalidArgumentError('--redis-cluster and --redis-wait need --redis-url');
      }
      const { parseRedisWait } = await import('../common/redis-commands.js');
      const redisWait = flags.redisWait ? parseRedisWait('--redis-wait', flags.redisWait) : undefined;
      const tls = loadServerTls({ cert: flags.tlsCert, key: flags.tlsKey, clientCa: flags.tlsClientCa });
      const bridgeLeaseMs = parseDuration('--bridge-lease', flags.bridgeLease);
      if (bridgeLeaseMs < 300) throw new InvalidArgumentError(`--bridge-lease ${quote(flags.bridgeLease)}: give at least 300ms (it is renewed every third of it)`);
      if (flags.advertise !== undefined && !/^(\[[0-9A-Fa-f:.]+\]|[^:\s]+):\d{1,5}$/.test(flags.advertise)) {
        throw new InvalidArgumentError(`--advertise ${quote(flags.advertise)}: give HOST:PORT (an IPv6 address in brackets)`);
      }
      // As a client of the leader: the CA clients trust (STOWAGE_TLS_CA, else the client CA), and the client certificate of STOWAGE_TLS_CLIENT_CERT/KEY for mutual TLS.
      const peerTls = tls
        ? loadClientTls({
            tls: true,
            tlsCa: process.env.STOWAGE_TLS_CA || flags.tlsClientCa,
            tlsClientCert: process.env.STOWAGE_TLS_CLIENT_CERT || undefined,
            tlsClientKey: process.env.STOWAGE_TLS_CLIENT_KEY || undefined,
          })
        : undefined;
      const log = createLogger('stowage');
      // What the server creates is its user's alone (the data directory sets
      // its own modes too; this covers whatever a library creates with its own).
      process.umask(0o077);
      const server = await startServer({
        dataDir: flags.dataDir,
        host: flags.host,
        port,
        log,
        s3: flags.s3Bucket
          ? { bucket: flags.s3Bucket, endpoint: flags.s3Endpoint, prefix: flags.s3Prefix, region: flags.s3Region }
          : undefined,
        catalog: { presign: flags.presign, graceMs, retention: { keepLast, keepWithinMs } },
        gcIntervalMs,
        redisUrl: flags.redisUrl,
        heads: flags.heads as (typeof HEADS_MODES)[number] | undefined,
        redisCluster: flags.redisCluster,
        redisWait,
        only: only as typeof SERVICE_NAMES[number][] | undefined,
        bridge: { placement: flags.placement as (typeof PLACEMENT_POLICIES)[number], localityWaitMs },
        bridgeSet: { leaseMs: bridgeLeaseMs, advertise: flags.advertise, peerTls },
        http,
        tls,
      });
      if (server.tokenCreated) {
        console.error(`created a token in ${server.tokenPath}; clients read it from there or from STOWAGE_TOKEN`);
      }
      console.error(
        `stowage serving on ${server.address} (services: ${server.services.join(', ')}; ` +
          `store: ${server.store.description}; index: ${server.dataDir}/index${server.catalog.shared ? ` (a cache: heads in ${server.catalog.shared.describe()})` : ''}; dicts and queues: ${server.stateDescription}` +
          `${server.services.includes('bridge') ? `; bridge placement: ${flags.placement}${flags.redisUrl ? `, one active bridge elected by a ${flags.bridgeLease} lease in redis` : ''}` : ''}` +
          `; ${server.tls === 'off' ? 'plain, no TLS' : server.tls === 'mutual' ? 'TLS, client certificates required' : 'TLS'})`,
      );
      if (server.httpAddress) {
        const scheme = server.tls === 'off' ? 'http' : 'https';
        console.error(`dashboard on ${scheme}://${server.httpAddress}/ and Prometheus metrics on ${scheme}://${server.httpAddress}/metrics (both need the token)`);
      }
      const warning = plainWarning(server.tls !== 'off', flags.host, server.httpAddress && http ? http.host : undefined);
      if (warning) console.error(warning);
      await new Promise<void>((resolve) => {
        const stop = () => {
          console.error('stowage: shutting down');
          server.stop().then(resolve, resolve);
        };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
    });
}

/** `--http` as given: absent, bare (--host, DEFAULT_HTTP_PORT), PORT, or HOST:PORT. */
function httpAddress(flag: string | true | undefined, host: string): { host: string; port: number } | undefined {
  if (flag === undefined) return undefined;
  if (flag === true || flag === '') return { host, port: DEFAULT_HTTP_PORT };
  const at = flag.lastIndexOf(':');
  const h = at < 0 ? host : flag.slice(0, at).replace(/^\[(.*)\]$/, '$1');
  const port = integerArg('--http port', at < 0 ? flag : flag.slice(at + 1), 0, 65535)!;
  if (!h) throw new InvalidArgumentError(`--http ${quote(flag)}: give HOST:PORT, PORT, or no value (${host}:${DEFAULT_HTTP_PORT})`);
  return { host: h, port };
}

/**
 * One line when the token would cross a network in cleartext: the gRPC port
 * or the dashboard listens beyond loopback without TLS. undefined otherwise.
 */
function plainWarning(tls: boolean, grpcHost: string, httpHost: string | undefined): string | undefined {
  if (tls) return undefined;
  const open = [
    ...(isLoopback(grpcHost) ? [] : [`gRPC on ${grpcHost}`]),
    ...(httpHost === undefined || isLoopback(httpHost) ? [] : [`the dashboard on ${httpHost}`]),
  ];
  if (!open.length) return undefined;
  return `warning: stowage listens without TLS (${open.join(', ')}): the token and data cross the network readable (give --tls-cert and --tls-key, see stowage certs create; or listen on 127.0.0.1)`;
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}
