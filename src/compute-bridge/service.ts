/**
 * The BridgeService of one server: the active bridge's handlers when this
 * server runs it (term.ts), and forwarding to the server that does when it
 * does not (forward.ts).
 *
 * Alone (no Redis): the server always runs the bridge, over LMDB under
 * <data-dir>/bridge, as one term for its whole life.
 *
 * In a set of servers sharing one Redis: the bridge is still ONE active
 * instance. The servers elect it with a lease (lease.ts); the winner starts
 * a term over the calls in Redis (redis-store.ts), fenced by its lease value,
 * and serves; every other server forwards each BridgeService call, of
 * workers and callers alike, to the address the winner advertised. So a
 * worker or caller may connect to any server of the set. A call forwarded
 * once is never forwarded again: a server that gets one without running the
 * bridge (the lease moved meanwhile) answers UNAVAILABLE, and so does every
 * server while no bridge is active (the lease is free, or its holder is
 * still loading calls). Clients and workers retry UNAVAILABLE.
 */
import { credentials, status, type ChannelCredentials, type Metadata, type StatusObject, type UntypedServiceImplementation } from '@grpc/grpc-js';
import { join } from 'node:path';
import { messageOf } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { ClientTls } from '../common/tls.js';
import type { Authenticator } from '../common/tokens.js';
import { BridgeServiceService, type CallInfo, type WorkerInfo } from '../gen/stowage/v1/bridge.js';
import type { BridgeOptions } from './bridge.js';
import { FORWARDED_BY, Upstream, forwardingHandlers } from './forward.js';
import { BridgeLease, DEFAULT_BRIDGE_LEASE_MS, type LeaseHolder } from './lease.js';
import { openBridgeRedis, type BridgeRedis } from './redis-client.js';
import { RedisCallStore } from './redis-store.js';
import { LmdbCallStore } from './store.js';
import { BridgeTerm } from './term.js';
import type { BridgeObserver, VolumeResolver } from './types.js';

/** How a server takes part in a set of servers sharing one Redis. */
export interface BridgeSetOptions {
  redisUrl: string;
  /** A single-host redisUrl is a Redis Cluster seed. */
  redisCluster?: boolean;
  /** This server's id in the set, unique per process (in the lease, logs and messages). */
  id: string;
  /** Lease time (default 10 s): how long a set can be without a bridge after its holder dies. */
  leaseMs?: number;
  /** TLS to the leader when the servers speak TLS; plain when undefined. */
  peerTls?: ClientTls;
}

/** What the dashboard and metrics read of the bridge: the active one's, or nothing on a server that does not run it. */
export interface BridgeView {
  stats(): { workers: number; runningCalls: number; queuedCalls: number };
  listWorkers(): WorkerInfo[];
  listCalls(schedule: string, limit: number): CallInfo[];
  cachedChunksOf(workerId: string): ReadonlySet<string> | undefined;
}

export class BridgeService implements BridgeView {
  /** The term serving now (started); undefined on a server that does not run the bridge. */
  private term: BridgeTerm | undefined;
  private starting: BridgeTerm | undefined;
  private lease: BridgeLease | undefined;
  private redis: BridgeRedis | undefined;
  private upstream: Upstream | undefined;
  private closing = false;

  private constructor(
    private readonly volumes: VolumeResolver,
    private readonly log: Logger,
    private readonly opts: BridgeOptions,
    private readonly observer: BridgeObserver | undefined,
    private readonly set: BridgeSetOptions | undefined,
  ) {}

  /**
   * Alone: the bridge over LMDB under `<dataDir>/bridge`, started. With `set`:
   * connected to its Redis (UnavailableError when it cannot be reached), ready
   * to join the election (join). `observer` is told what the bridge does (metrics).
   */
  static async open(
    dataDir: string,
    volumes: VolumeResolver,
    log: Logger,
    opts: BridgeOptions = {},
    observer?: BridgeObserver,
    set?: BridgeSetOptions,
  ): Promise<BridgeService> {
    const service = new BridgeService(volumes, log, opts, observer, set);
    if (!set) {
      const term = new BridgeTerm(new LmdbCallStore(join(dataDir, 'bridge'), log), volumes, log, opts, observer);
      try {
        await term.start();
      } catch (err) {
        await term.close();
        throw err;
      }
      service.term = term;
      return service;
    }
    service.redis = await openBridgeRedis(set.redisUrl, set.redisCluster);
    return service;
  }

  /**
   * With a set: joins the election, advertising `address` (host:port) as where
   * the others reach this server; once this resolves the server may run the
   * bridge, or forwards to the one that does. Before it, bridge calls are
   * answered UNAVAILABLE. Alone: nothing to do.
   */
  async join(address: string): Promise<void> {
    if (!this.set || this.lease || this.closing) return;
    this.lease = new BridgeLease(
      this.redis!,
      { id: this.set.id, address },
      this.set.leaseMs ?? DEFAULT_BRIDGE_LEASE_MS,
      {
        elected: (fence) => this.elected(fence),
        lost: (why) => this.lost(why),
        leaderChanged: (holder) => this.leaderChanged(holder),
      },
      this.log,
    );
    await this.lease.start();
  }

  handlers(token: Authenticator | string): UntypedServiceImplementation {
    const forwarded = this.set ? forwardingHandlers(BridgeServiceService, (md) => this.pick(md), this.set.id) : undefined;
    // Built once per term, on its first call.
    let local: { term: BridgeTerm; handlers: UntypedServiceImplementation } | undefined;
    const out: UntypedServiceImplementation = {};
    for (const name of Object.keys(BridgeServiceService)) {
      out[name] = ((call: { metadata: Metadata }, cb?: (err: Partial<StatusObject>) => void) => {
        const term = this.term;
        if (term) {
          if (local?.term !== term) local = { term, handlers: term.handlers(token) as unknown as UntypedServiceImplementation };
          return (local.handlers[name] as (c: unknown, cb: unknown) => void)(call, cb);
        }
        if (forwarded) return (forwarded[name] as (c: unknown, cb: unknown) => void)(call, cb);
        const down = { code: status.UNAVAILABLE, details: 'the compute bridge on this server is shutting down; retry' };
        if (cb) cb(down);
        else (call as unknown as NodeJS.EventEmitter).emit('error', down);
      }) as UntypedServiceImplementation[string];
    }
    return out;
  }

  stats(): { workers: number; runningCalls: number; queuedCalls: number } {
    return this.term?.bridge.stats() ?? { workers: 0, runningCalls: 0, queuedCalls: 0 };
  }

  listWorkers(): WorkerInfo[] {
    return this.term?.bridge.listWorkers() ?? [];
  }

  listCalls(schedule: string, limit: number): CallInfo[] {
    return this.term?.bridge.listCalls(schedule, limit) ?? [];
  }

  cachedChunksOf(workerId: string): ReadonlySet<string> | undefined {
    return this.term?.bridge.cachedChunksOf(workerId);
  }

  async close(): Promise<void> {
    this.closing = true;
    const terms = [this.term, this.starting];
    this.term = undefined;
    this.starting = undefined;
    for (const t of terms) await t?.close();
    this.upstream?.close('this server is shutting down; retry');
    this.upstream = undefined;
    // After the bridge stopped acting: releasing lets the next server take over at once.
    await this.lease?.stop();
    this.redis?.close();
  }

  // ---- the lease -------------------------------------------------------------

  private elected(fence: string): void {
    if (this.closing) return;
    this.setUpstream(undefined, 'this server runs the compute bridge now; reconnect');
    const term = new BridgeTerm(new RedisCallStore(this.redis!, fence), this.volumes, this.log, this.opts, this.observer);
    this.starting = term;
    term.start().then(
      () => {
        if (this.starting !== term) return; // lost meanwhile
        this.starting = undefined;
        this.term = term;
        this.log.info({ ...term.bridge.stats() }, 'bridge: calls and schedules loaded from redis; serving as the active bridge');
      },
      (err: unknown) => {
        if (this.starting !== term) return;
        this.starting = undefined;
        this.log.error({ err: messageOf(err) }, 'bridge: cannot load the calls from redis; giving the lease up');
        void term.close();
        void this.lease?.resign(`the calls could not be loaded: ${messageOf(err)}`);
      },
    );
  }

  private lost(why: string): void {
    const terms = [this.term, this.starting];
    this.term = undefined;
    this.starting = undefined;
    for (const t of terms) void t?.close(`the server running the compute bridge lost its lease (${why}); reconnect`);
  }

  private leaderChanged(holder: LeaseHolder | undefined): void {
    if (this.closing) return;
    if (!holder) return this.setUpstream(undefined, 'the compute bridge lease is free; reconnect');
    if (holder.id === this.set!.id) return;
    this.log.info({ leader: holder.id, address: holder.address }, 'bridge: forwarding bridge calls to the server that runs it');
    this.setUpstream(new Upstream(holder.address, `server ${holder.id} at ${holder.address}`, this.peerCredentials()), `the compute bridge moved to server ${holder.id} at ${holder.address}; reconnect`);
  }

  private setUpstream(next: Upstream | undefined, why: string): void {
    this.upstream?.close(why);
    this.upstream = next;
  }

  private peerCredentials(): ChannelCredentials {
    const tls = this.set?.peerTls;
    return tls ? credentials.createSsl(tls.ca ?? null, tls.key ?? null, tls.cert ?? null) : credentials.createInsecure();
  }

  /** Where a call this server cannot serve goes: the leader, or UNAVAILABLE saying why not. */
  private pick(metadata: Metadata): Upstream | Partial<StatusObject> {
    const by = metadata.get(FORWARDED_BY)[0];
    if (by !== undefined) {
      return { code: status.UNAVAILABLE, details: `server ${this.set!.id} got a bridge call forwarded by server ${String(by)} but does not run the compute bridge (the lease moved); retrying` };
    }
    if (this.upstream) return this.upstream;
    const where = this.lease?.where ?? '?';
    const state = this.starting ? 'held by this server, which is loading the calls' : this.lease?.held ? 'held by this server' : 'free, or its holder is not known yet';
    return { code: status.UNAVAILABLE, details: `no compute bridge is active (the leader lease at ${where} is ${state}); retrying` };
  }
}
