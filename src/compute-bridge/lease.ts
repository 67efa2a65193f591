/**
 * The bridge lease: which server of a set sharing one Redis runs the active
 * compute bridge. The lease is one key, `{stowage:bridge}:leader`, holding
 * JSON {id, address, term} of its holder (`term` is new at each win, so a
 * server that wins again is a new term with a new fence for its call store).
 *
 * - Winning: `SET key value NX PX leaseMs`, tried every leaseMs/3 by each
 *   server that does not hold it; a server that sees a holder remembers it
 *   (where to forward to).
 * - Holding: every leaseMs/3 the holder extends the key with a Lua
 *   compare-and-extend (PEXPIRE only while the key holds its own value).
 * - Losing: a renewal that finds another value, or no renewal succeeding
 *   before the lease would run out on this server's clock (measured from the
 *   moment the last successful renewal was sent, less a margin), ends the
 *   term at once: `lost` is called and the bridge stops acting. Redis counts
 *   PX from when it executes the command, which is after it was sent, so a
 *   holder always gives up before Redis lets the key expire (clock rates
 *   assumed equal; the call store's writes are fenced besides, redis-store.ts).
 * - Leaving (stop): the holder deletes the key if it still holds it, so the
 *   next server takes over at its next try instead of after a lease time.
 *
 * Handlers are called in order, never concurrently with another tick.
 */
import { randomUUID } from 'node:crypto';
import { messageOf } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { BridgeRedis } from './redis-client.js';
import { LEADER_KEY } from './redis-store.js';

export const DEFAULT_BRIDGE_LEASE_MS = 10_000;

/** A server of the set, as the lease names it. */
export interface BridgeServerId {
  /** Unique per server process (the server makes one at start). */
  id: string;
  /** host:port the other servers reach it at (--advertise). */
  address: string;
}

export interface LeaseHolder extends BridgeServerId {
  term: string;
}

export interface LeaseHandlers {
  /** This server won the lease; `fence` is the value its call store must find in the key. */
  elected(fence: string): void;
  /** This server lost (or gave up) the lease: stop acting now. */
  lost(why: string): void;
  /** Another server holds the lease now (undefined: nobody, as far as this server knows). */
  leaderChanged(holder: LeaseHolder | undefined): void;
}

/** KEYS: leader. ARGV: value, ms. 1 when extended, 0 when the key holds something else. */
const EXTEND = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`;
/** KEYS: leader. ARGV: value. */
const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

export class BridgeLease {
  private value: string | undefined;
  private holder: LeaseHolder | undefined;
  private tickTimer: NodeJS.Timeout | undefined;
  private expiryTimer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> = Promise.resolve();
  private stopped = false;
  private readonly everyMs: number;

  constructor(
    private readonly redis: BridgeRedis,
    readonly me: BridgeServerId,
    readonly leaseMs: number,
    private readonly handlers: LeaseHandlers,
    private readonly log: Logger,
  ) {
    this.everyMs = Math.max(1, Math.floor(leaseMs / 3));
  }

  /** Where the lease lives, for messages. */
  get where(): string {
    return this.redis.where;
  }

  /** True while this server holds the lease. */
  get held(): boolean {
    return this.value !== undefined;
  }

  /** The holder as last seen (this server included), undefined when the lease was free. */
  get leader(): LeaseHolder | undefined {
    return this.holder;
  }

  /** Makes the first attempt now; resolves once it is done (this server may hold the lease then). */
  async start(): Promise<void> {
    await this.tick();
  }

  /** Stops trying; releases the lease if held (the bridge must have stopped acting first). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.tickTimer);
    await this.ticking;
    const value = this.value;
    this.endTerm();
    if (value) {
      await this.redis.script(RELEASE, [LEADER_KEY], [value]).catch((err: unknown) =>
        this.log.warn({ err: messageOf(err) }, 'bridge lease: could not release the lease; it runs out by itself'),
      );
    }
  }

  /** Gives the lease up while this server holds it (it cannot serve as the bridge); it may win it again later. */
  async resign(why: string): Promise<void> {
    const value = this.value;
    if (!value) return;
    this.lose(why);
    await this.redis.script(RELEASE, [LEADER_KEY], [value]).catch(() => undefined);
  }

  private tick(): Promise<void> {
    this.ticking = (this.value ? this.renew(this.value) : this.tryWin()).finally(() => {
      if (!this.stopped) this.tickTimer = setTimeout(() => void this.tick(), this.everyMs);
    });
    return this.ticking;
  }

  private async tryWin(): Promise<void> {
    const term = randomUUID();
    const value = JSON.stringify({ id: this.me.id, address: this.me.address, term });
    const sentAt = Date.now();
    try {
      const won = await this.redis.call((c) => c.set(LEADER_KEY, value, 'PX', this.leaseMs, 'NX'));
      if (this.stopped) {
        if (won === 'OK') await this.redis.script(RELEASE, [LEADER_KEY], [value]);
        return;
      }
      if (won === 'OK') {
        this.value = value;
        this.armExpiry(sentAt);
        this.holder = { ...this.me, term };
        this.log.info({ lease: this.where, leaseMs: this.leaseMs }, 'bridge lease: won; this server runs the compute bridge');
        this.handlers.elected(value);
        return;
      }
      const seen = await this.redis.call((c) => c.get(LEADER_KEY));
      this.see(seen === null ? undefined : parseHolder(seen));
    } catch (err) {
      this.log.warn({ err: messageOf(err) }, 'bridge lease: cannot reach the lease');
      this.see(undefined);
    }
  }

  private async renew(value: string): Promise<void> {
    const sentAt = Date.now();
    try {
      const extended = Number(await this.redis.script(EXTEND, [LEADER_KEY], [value, this.leaseMs]));
      if (this.value !== value) return; // the term ended meanwhile (expiry timer)
      if (extended === 1) this.armExpiry(sentAt);
      else this.lose('another server holds the lease now');
    } catch (err) {
      // The expiry timer ends the term if no renewal gets through in time.
      this.log.warn({ err: messageOf(err) }, 'bridge lease: renewal failed');
    }
  }

  private armExpiry(sentAt: number): void {
    clearTimeout(this.expiryTimer);
    const margin = Math.min(500, Math.floor(this.leaseMs / 10));
    const left = sentAt + this.leaseMs - margin - Date.now();
    this.expiryTimer = setTimeout(() => this.lose(`no renewal got through within the lease of ${this.leaseMs} ms`), Math.max(0, left));
  }

  private lose(why: string): void {
    if (!this.value) return;
    this.endTerm();
    this.log.warn({ lease: this.where }, `bridge lease: lost (${why}); this server stops running the compute bridge`);
    this.handlers.lost(why);
  }

  private endTerm(): void {
    clearTimeout(this.expiryTimer);
    this.value = undefined;
    this.holder = undefined;
  }

  private see(holder: LeaseHolder | undefined): void {
    if (holder?.term === this.holder?.term) return;
    this.holder = holder;
    this.handlers.leaderChanged(holder);
  }
}

function parseHolder(value: string): LeaseHolder | undefined {
  try {
    const v = JSON.parse(value) as Partial<LeaseHolder>;
    if (typeof v.id === 'string' && typeof v.address === 'string' && typeof v.term === 'string') return { id: v.id, address: v.address, term: v.term };
  } catch {
    // not ours: treated as no known holder
  }
  return undefined;
}
