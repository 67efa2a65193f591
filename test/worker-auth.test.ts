/**
 * `stowage worker` and the server's answer to it (issue 13, "Trust nothing"):
 * a wrong token is final, so the worker exits with the authentication error
 * (status 7, as any command) instead of retrying forever; a bridge it cannot
 * reach is not, so it keeps retrying and registers once the server is up.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { cleanUpWorkers, spawnServe, spawnWorker, waitFor, type ServeProcess } from './support/bridge.js';
import { freePort, tempDir, uniqueName } from './support/processes.js';
import { within } from './support/state-servers.js';

describe('a worker and its credentials', () => {
  let serve: ServeProcess | undefined;
  afterEach(async () => {
    await serve?.kill();
    serve = undefined;
  });
  afterAll(() => cleanUpWorkers());

  it('with a wrong token, exits 7 with the authentication error and does not retry', async () => {
    serve = await spawnServe(tempDir('serve'), await freePort());
    const worker = spawnWorker({ id: uniqueName('w'), server: serve.address, token: 'not-the-token' });
    // Bounded, so that a worker that retries forever fails the test rather than hanging it.
    expect(await within('the worker to exit', worker.exited, 60_000)).toBe(7);
    expect(worker.stderr()).toMatch(/^error: missing or wrong token: set STOWAGE_TOKEN/m);
    expect(worker.stderr()).not.toMatch(/reconnecting/);
    expect(worker.stdout()).not.toMatch(/registered/);
  });

  it('with the bridge unreachable, keeps retrying, and registers once the server is up', async () => {
    const dataDir = tempDir('serve');
    const token = `stw_${uniqueName('token')}`;
    // The server takes the token it finds in its data dir: the worker can be given it before the server starts.
    mkdirSync(dataDir, { recursive: true });
    writeFileSync(join(dataDir, 'token'), `${token}\n`, { mode: 0o600 });
    const port = await freePort();
    const worker = spawnWorker({ id: uniqueName('w'), server: `127.0.0.1:${port}`, token });
    try {
      await waitFor('two failed attempts to reach the bridge', () => (worker.stderr().match(/reconnecting/g) ?? []).length >= 2, 60_000);
      serve = await spawnServe(dataDir, port);
      await waitFor('the worker to register', () => worker.stdout().includes('registered with the bridge'), 60_000);
    } finally {
      await worker.kill();
    }
    expect(await worker.exited).toBe(0);
  });
});
