/**
 * The bridge lease (compute-bridge/lease.ts) on a real redis-server: one
 * holder at a time; the others know who it is; a holder whose key was taken
 * over, or that cannot renew, stops before the lease runs out in Redis; a
 * holder that stops releases the lease, and the next server takes it at its
 * next try rather than after a lease time.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../src/common/logger.js';
import { BridgeLease, type LeaseHolder } from '../src/compute-bridge/lease.js';
import { openBridgeRedis, type BridgeRedis } from '../src/compute-bridge/redis-client.js';
import { LEADER_KEY } from '../src/compute-bridge/redis-store.js';
import { waitFor } from './support/bridge.js';
import { startRedis, type RedisServer } from './support/redis.js';

const LEASE_MS = 900;
const log = createLogger('test');

interface Seen {
  lease: BridgeLease;
  elected: number[];
  lost: { atMs: number; why: string }[];
  leaders: (LeaseHolder | undefined)[];
}

describe('bridge lease', () => {
  let server: RedisServer;
  const clients: BridgeRedis[] = [];
  const leases: BridgeLease[] = [];

  const lease = async (id: string): Promise<Seen> => {
    const redis = await openBridgeRedis(server.url);
    clients.push(redis);
    const seen: Omit<Seen, 'lease'> = { elected: [], lost: [], leaders: [] };
    const l = new BridgeLease(redis, { id, address: `127.0.0.1:${id.length}` }, LEASE_MS, {
      elected: () => void seen.elected.push(Date.now()),
      lost: (why) => void seen.lost.push({ atMs: Date.now(), why }),
      leaderChanged: (h) => void seen.leaders.push(h),
    }, log);
    leases.push(l);
    return { ...seen, lease: l };
  };

  beforeAll(async () => {
    server = await startRedis();
  });
  afterEach(async () => {
    for (const l of leases.splice(0)) await l.stop();
    for (const c of clients.splice(0)) c.close();
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('one holder; the others learn who it is; stopping releases it, and the next takes it at its next try', async () => {
    const a = await lease('a');
    const b = await lease('bb');
    await a.lease.start();
    await b.lease.start();
    expect(a.lease.held).toBe(true);
    expect(a.elected).toHaveLength(1);
    expect(b.lease.held).toBe(false);
    expect(b.leaders.at(-1)).toMatchObject({ id: 'a', address: '127.0.0.1:1' });
    // Several renewals later, still a's.
    await new Promise((r) => setTimeout(r, 2 * LEASE_MS));
    expect(a.lease.held).toBe(true);
    expect(a.lost).toEqual([]);
    expect(b.elected).toEqual([]);
    const stoppedAt = Date.now();
    await a.lease.stop();
    await waitFor('b to take the released lease', () => b.lease.held, 5000);
    expect(b.elected[0]! - stoppedAt).toBeLessThan(LEASE_MS);
  });

  it('a holder whose key now names another server stops at its next renewal', async () => {
    const a = await lease('a');
    await a.lease.start();
    expect(a.lease.held).toBe(true);
    const client = clients[0]!;
    const takenAt = Date.now();
    await client.call((c) => c.set(LEADER_KEY, JSON.stringify({ id: 'x', address: '127.0.0.1:9', term: 't' }), 'PX', 60_000));
    await waitFor('a to notice', () => a.lost.length > 0, 5000);
    expect(a.lease.held).toBe(false);
    expect(a.lost[0]!.why).toMatch(/another server holds the lease/);
    expect(a.lost[0]!.atMs - takenAt).toBeLessThan(LEASE_MS / 3 + 400);
    // It follows the new holder at its next try.
    await waitFor('a to see x as the holder', () => a.leaders.at(-1)?.id === 'x', 5000);
    await client.call((c) => c.del(LEADER_KEY));
  });

  it('a holder that cannot reach Redis stops before the lease could run out there', async () => {
    const a = await lease('a');
    await a.lease.start();
    expect(a.lease.held).toBe(true);
    const stoppedAt = Date.now();
    await server.stop();
    try {
      await waitFor('a to give up the lease', () => a.lost.length > 0, 5000);
      // Its last renewal was sent at most LEASE_MS / 3 before Redis went away.
      expect(a.lost[0]!.atMs - stoppedAt).toBeLessThan(LEASE_MS);
      expect(a.lost[0]!.why).toMatch(/no renewal got through/);
    } finally {
      await server.restart();
    }
    // Redis back (empty): a wins again.
    await waitFor('a to win again', () => a.lease.held, 10_000);
    expect(a.elected).toHaveLength(2);
  });
});
