/**
 * Workers with scoped tokens: a worker needs bridge:*:write (it runs any
 * function) and read on the volumes its calls mount, the code volume among
 * them. With those it registers and runs calls; without bridge:*:write it
 * exits 12 (PERMISSION_DENIED) naming the scope instead of retrying forever.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { App, createToken } from '../src/client/index.js';
import { FIXTURE, cleanUpWorkers, spawnWorker, startWorker } from './support/bridge.js';
import { startStowage, uniqueName, type Stowage } from './support/processes.js';
import { within } from './support/state-servers.js';

describe('workers with scoped tokens', () => {
  let stowage: Stowage;
  const token = async (scopes: string[]) => (await createToken({ scopes, ttlMs: 600_000, connection: stowage.connection })).token;

  beforeAll(async () => {
    stowage = await startStowage();
  });
  afterAll(async () => {
    cleanUpWorkers();
    await stowage?.stop();
  });

  it('registers and runs calls with bridge:*:write and volume:*:read', async () => {
    const w = await startWorker({ id: uniqueName('w'), server: stowage.server.address, token: await token(['bridge:*:write', 'volume:*:read']) });
    try {
      const app = new App('tok', { connection: stowage.connection });
      const add = app.function<[number, number], unknown>({ module: FIXTURE, name: 'add' }, () => undefined);
      expect(await add.remote(2, 3)).toBe(5);
    } finally {
      await w.kill();
    }
  }, 90_000);

  it('without bridge:*:write, exits 12 naming the scope', async () => {
    const w = spawnWorker({ id: uniqueName('w'), server: stowage.server.address, token: await token(['bridge:jobs-*:write', 'volume:*:read']) });
    expect(await within('the worker to exit', w.exited, 60_000)).toBe(12);
    expect(w.stderr()).toContain('lacks bridge:*:write');
    expect(w.stderr()).not.toMatch(/reconnecting/);
  }, 90_000);
});
