/** Ephemeral volumes live while their client sends heartbeats, and no longer. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NotFoundError, Volume } from '../src/client/index.js';
import { startStowage, type Stowage } from './support/processes.js';

describe('ephemeral volumes', () => {
  let stowage: Stowage;
  beforeAll(async () => {
    stowage = await startStowage({ catalog: { ephemeralTimeoutMs: 2000 } });
  });
  afterAll(async () => {
    await stowage?.stop();
  });

  it('are deleted once their heartbeats stop for longer than the timeout, and kept while they arrive', async () => {
    const connection = stowage.connection;
    const catalog = stowage.server.catalog;
    const kept = await Volume.ephemeral({ connection });
    const dropped = await Volume.ephemeral({ connection });
    await kept.batchUpload().putFile(Buffer.from('scratch'), 'a.txt').commit();
    await dropped.batchUpload().putFile(Buffer.from('scratch'), 'a.txt').commit();

    // Within the timeout nothing goes.
    expect(await catalog.reapEphemeral(Date.now() + 1000)).toEqual([]);
    // Only `kept` sends a heartbeat (the SDK sends one every 30 s; here by hand).
    await new Promise((r) => setTimeout(r, 1500));
    await connection.unary(connection.volumes.heartbeat.bind(connection.volumes), { name: kept.name });
    // 1 s later (as the reaper sees it): `dropped` is silent for over 2 s, `kept` for about 1 s.
    const reaped = await catalog.reapEphemeral(Date.now() + 1000);
    expect(reaped).toContain(dropped.name);
    expect(reaped).not.toContain(kept.name);
    await expect(Volume.fromName(dropped.name, { connection })).rejects.toBeInstanceOf(NotFoundError);
    expect((await kept.readBytes('a.txt')).toString()).toBe('scratch');

    // Named volumes are never reaped.
    const named = await Volume.fromName(`named-${Date.now()}`, { connection, createIfMissing: true });
    expect(await catalog.reapEphemeral(Date.now() + 3_600_000)).not.toContain(named.name);
    await kept.close();
    await expect(Volume.fromName(kept.name, { connection })).rejects.toBeInstanceOf(NotFoundError);
  });
});
