/**
 * Several servers behind one connection: `STOWAGE_SERVER=a:7420,b:7420,c:7420`
 * (the SDK's `server` option takes the same list). The list becomes a target
 * of our own resolver scheme, which looks each name up (every address it
 * has) and hands grpc-js the lot with the round_robin policy: calls are
 * spread over the servers that answer, a server that dies is left out until
 * it answers again, and new calls go to the others. A call in flight on a
 * server that dies fails UNAVAILABLE. Calls that can be sent twice without
 * harm (reads, uploads of content-addressed blobs, heartbeats: RETRIED) are
 * sent again by grpc-js to the next server, up to 5 times within about 2 s;
 * the SDK sends a commit again itself, with the same commit id (volume.ts),
 * which the servers land once. The rest (create, delete, rename; dict and
 * queue operations, which are not all idempotent) fail, as with one server.
 *
 * Names are looked up again whenever grpc-js asks (a server unreachable,
 * at most every few seconds), so a name that moves is followed. With TLS
 * the servers' certificate must name the first server of the list (grpc-js
 * checks every server against that one authority), so a cluster's
 * certificate names all of them (stowage certs create --host a --host b …).
 */
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { Metadata, experimental, status, type ChannelOptions } from '@grpc/grpc-js';
import { InvalidArgumentError } from '../common/errors.js';
import { quote } from '../common/quote.js';

const SCHEME = 'stowage-servers';
/** Methods of the volume service that are safe to send again: they change nothing, or the same thing again. */
const RETRIED = [
  'GetVolume',
  'ListVolumes',
  'Heartbeat',
  'ListVersions',
  'GetVersion',
  'ListFiles',
  'Stat',
  'GetFile',
  'PresignBlobs',
  'PlanUpload',
  'PutBlob',
  'ReadBlob',
  'GetTreeObjects',
  'ListDamaged',
  'ReportMount',
];
const RETRY_POLICY = { maxAttempts: 5, initialBackoff: '0.1s', maxBackoff: '1s', backoffMultiplier: 2, retryableStatusCodes: ['UNAVAILABLE'] };
let registered = false;

interface HostPort {
  host: string;
  port: number;
}

/** The servers of a comma-separated list, checked (each HOST:PORT, [IPv6]:PORT). */
export function parseServerList(list: string): HostPort[] {
  const out: HostPort[] = [];
  for (const raw of list.split(',')) {
    const item = raw.trim();
    const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(item);
    const port = m ? Number(m[3]) : NaN;
    if (!m || port < 1 || port > 65535) {
      throw new InvalidArgumentError(`server ${quote(item)} in ${quote(list)} is not HOST:PORT (a list is HOST:PORT,HOST:PORT,…)`);
    }
    out.push({ host: m[1] ?? m[2]!, port });
  }
  return out;
}

/**
 * The grpc-js target and channel options for `server`: as it is for one
 * server, our resolver with round_robin for a list.
 */
export function channelTarget(server: string): { target: string; options: ChannelOptions } {
  if (!server.includes(',')) return { target: server, options: {} };
  const servers = parseServerList(server);
  if (!registered) {
    experimental.registerResolver(SCHEME, ServerListResolver);
    registered = true;
  }
  const path = servers.map((s) => (isIP(s.host) === 6 ? `[${s.host}]:${s.port}` : `${s.host}:${s.port}`)).join(',');
  return {
    target: `${SCHEME}:///${path}`,
    options: {
      'grpc.service_config': JSON.stringify({
        loadBalancingConfig: [{ round_robin: {} }],
        methodConfig: [{ name: RETRIED.map((method) => ({ service: 'stowage.v1.VolumeService', method })), retryPolicy: RETRY_POLICY }],
      }),
      // The certificate is checked against the first server's name (see above).
      'grpc.default_authority': `${servers[0]!.host}:${servers[0]!.port}`,
    },
  };
}

class ServerListResolver implements experimental.Resolver {
  private servers: HostPort[] = [];
  private error: string | undefined;
  private pending = false;

  constructor(
    target: { path: string },
    private readonly listener: experimental.ResolverListener,
  ) {
    try {
      this.servers = parseServerList(target.path);
    } catch (err) {
      this.error = (err as Error).message;
    }
  }

  updateResolution(): void {
    if (this.pending) return;
    this.pending = true;
    void this.resolve().finally(() => {
      this.pending = false;
    });
  }

  private async resolve(): Promise<void> {
    const fail = (details: string): void => {
      this.listener(experimental.statusOrFromError({ code: status.UNAVAILABLE, details, metadata: new Metadata() }), {}, null, '');
    };
    if (this.error) return fail(this.error);
    const found = await Promise.all(
      this.servers.map(async (s) => {
        if (isIP(s.host)) return [{ host: s.host, port: s.port }];
        const addrs = await lookup(s.host, { all: true }).catch(() => []);
        return addrs.map((a) => ({ host: a.address, port: s.port }));
      }),
    );
    const endpoints = found.flat().map((address) => ({ addresses: [address] }));
    if (endpoints.length === 0) return fail(`none of the servers ${this.servers.map((s) => `${s.host}:${s.port}`).join(', ')} could be looked up`);
    this.listener(experimental.statusOrFromValue(endpoints), {}, null, '');
  }

  destroy(): void {
    // Nothing held between resolutions.
  }

  static getDefaultAuthority(target: { path: string }): string {
    return target.path.split(',')[0]!;
  }
}
