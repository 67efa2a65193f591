/**
 * A full disk under `stowage serve`: the server's --data-dir on a small tmpfs
 * of the test's own (real ENOSPC from the kernel), a real `stowage serve`
 * child process, filled with dict puts, queue puts or bridge submits until a
 * write fails. The failing call gets RESOURCE_EXHAUSTED naming the store's
 * directory; the server lives on, serves reads, prints no unhandled
 * rejection, and takes writes again (no restart) once a filler file on the
 * same tmpfs is deleted. Also the local blob store: a chunk write that fails
 * for space leaves no file behind, temporary or final. Needs `npm run build`
 * and root (mount -t tmpfs).
 */
import { randomBytes } from 'node:crypto';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { submitCalls } from '../src/client/invoke.js';
import { BridgeAdmin, Connection, Dict, Queue, ResourceExhaustedError, Volume, collectGarbage, type StowageError } from '../src/client/index.js';
import type { FunctionSpec } from '../src/gen/stowage/v1/bridge.js';
import { blobKey } from '../src/volume-server/store/interface.js';
import { LocalBlobStore } from '../src/volume-server/store/local.js';
import { isAlive, spawnServe, type ServeProcess } from './support/bridge.js';
import { escapeRegExp, expectFailure } from './support/checks.js';
import { freePort, uniqueName } from './support/processes.js';
import { mountTmpfs, unmountAll, type Tmpfs } from './support/tmpfs.js';
import { KiB, MiB, sha256 } from './support/volume-data.js';

const DISK = 24 * MiB;
/** Taken at start, given back to show that writes work again. */
const FILLER = 4 * MiB;
const VALUE = 256 * KiB;
/** Far more writes of VALUE than fit on DISK: one of them must fail before. */
const MAX_WRITES = 4 * (DISK / VALUE);

interface SmallDisk {
  disk: Tmpfs;
  dataDir: string;
  server: ServeProcess;
  connection: Connection;
  filler: string;
}

async function serveOnSmallDisk(label: string): Promise<SmallDisk> {
  const disk = mountTmpfs(label, DISK);
  const dataDir = join(disk.dir, 'data');
  try {
    const server = await spawnServe(dataDir, await freePort());
    const filler = disk.fill(FILLER);
    const connection = new Connection({ server: server.address, token: server.token });
    return { disk, dataDir, server, connection, filler };
  } catch (err) {
    disk.unmount();
    throw err;
  }
}

async function stop(s: SmallDisk): Promise<void> {
  s.connection.close();
  await s.server.kill();
  s.disk.unmount();
}

/** Runs `write(0)`, `write(1)`, … until one fails: its index and error. */
async function fillUntilFailure(write: (i: number) => Promise<unknown>): Promise<{ failedAt: number; err: unknown }> {
  for (let i = 0; i < MAX_WRITES; i++) {
    try {
      await write(i);
    } catch (err) {
      return { failedAt: i, err };
    }
  }
  throw new Error(`${MAX_WRITES} writes of ${VALUE} bytes all fitted on a ${DISK}-byte disk`);
}

function expectNoSpace(err: unknown, storeDir: string): void {
  expect(err, String(err)).toBeInstanceOf(ResourceExhaustedError);
  const e = err as StowageError;
  expect(e.code).toBe('RESOURCE_EXHAUSTED');
  expect(e.message).toMatch(new RegExp(`^no space left for the .* in ${escapeRegExp(storeDir).source}: `));
  expect(e.message).toMatch(/free space on that disk, then retry/);
}

/** The server process is still there, and nothing reached Node's unhandled-rejection path (nor our guard for it). */
function expectAliveAndQuiet(s: SmallDisk): void {
  expect(isAlive(s.server.pid), s.server.stderr()).toBe(true);
  expect(s.server.stderr()).not.toMatch(/unhandled|no caller left to tell/i);
}

afterAll(() => unmountAll());

describe('stowage serve on a disk that fills up (LMDB)', () => {
  it('dict: the put that finds the disk full fails with RESOURCE_EXHAUSTED naming <data-dir>/dict; reads go on; puts work again once space is freed', async () => {
    const s = await serveOnSmallDisk('full-dict');
    try {
      const d = await Dict.fromName<string, string | Uint8Array>(uniqueName('full'), { createIfMissing: true, connection: s.connection });
      await d.put('kept', 'written before the disk filled');
      const { failedAt, err } = await fillUntilFailure((i) => d.put(`k${i}`, randomBytes(VALUE)));
      expect(failedAt).toBeGreaterThan(0);
      expectNoSpace(err, join(s.dataDir, 'dict'));
      expectAliveAndQuiet(s);

      // Reads go on; nothing of the failed put was kept.
      expect(await d.get('kept')).toBe('written before the disk filled');
      expect(await d.get('k0')).toHaveLength(VALUE);
      expect(await d.get(`k${failedAt}`)).toBeUndefined();
      expect(await d.len()).toBe(failedAt + 1);

      await rm(s.filler);
      const again = randomBytes(VALUE);
      await d.put(`k${failedAt}`, again);
      expect(Buffer.from((await d.get(`k${failedAt}`)) as Uint8Array).equals(again)).toBe(true);
      expect(await d.len()).toBe(failedAt + 2);
      expectAliveAndQuiet(s);
    } finally {
      await stop(s);
    }
  });

  it('queue: the put that finds the disk full fails with RESOURCE_EXHAUSTED naming <data-dir>/queue; len and peek go on; puts work again once space is freed', async () => {
    const s = await serveOnSmallDisk('full-queue');
    try {
      const q = await Queue.fromName<string | Uint8Array>(uniqueName('full'), { createIfMissing: true, connection: s.connection });
      await q.put('first');
      const { failedAt, err } = await fillUntilFailure(() => q.put(randomBytes(VALUE)));
      expect(failedAt).toBeGreaterThan(0);
      expectNoSpace(err, join(s.dataDir, 'queue'));
      expectAliveAndQuiet(s);

      expect(await q.len()).toBe(failedAt + 1);
      const peeked: (string | Uint8Array)[] = [];
      for await (const item of q.iterate()) peeked.push(item);
      expect(peeked).toHaveLength(failedAt + 1);
      expect(peeked[0]).toBe('first');

      await rm(s.filler);
      await q.put('after');
      expect(await q.len()).toBe(failedAt + 2);
      expect(await q.get({ block: false })).toBe('first');
      expectAliveAndQuiet(s);
    } finally {
      await stop(s);
    }
  });

  it('bridge: the submit that finds the disk full fails with RESOURCE_EXHAUSTED naming <data-dir>/bridge; calls already kept are still there; submits work again once space is freed', async () => {
    const s = await serveOnSmallDisk('full-bridge');
    try {
      // No worker: calls stay queued, and each Submit is one write of its call (with its arguments) to the call store.
      const spec: FunctionSpec = {
        module: 'jobs.mjs',
        function: 'count',
        codeVolume: '__code__',
        bundlePath: `/bundles/${'0'.repeat(64)}.mjs`,
        bundleHash: '0'.repeat(64),
        volumes: {},
        reads: [],
        timeoutMs: 0,
        retries: 0,
        schedule: '',
        retryPolicy: undefined,
        writable: [], image: '', cpu: 0, memoryBytes: 0, gpu: '',
      };
      const submit = async (): Promise<string> => {
        const [id] = await submitCalls(s.connection, spec, [{ id: '', args: randomBytes(VALUE), reads: [] }]);
        return id!;
      };
      const first = await submit();
      const { failedAt, err } = await fillUntilFailure(() => submit());
      expect(failedAt).toBeGreaterThan(0);
      expectNoSpace(err, join(s.dataDir, 'bridge'));
      expectAliveAndQuiet(s);

      expect((await BridgeAdmin.call(first, s.connection)).callId).toBe(first);
      expect(await BridgeAdmin.calls({ limit: 1000 }, s.connection)).toHaveLength(failedAt + 1);

      await rm(s.filler);
      const after = await submit();
      expect((await BridgeAdmin.call(after, s.connection)).callId).toBe(after);
      expectAliveAndQuiet(s);
    } finally {
      await stop(s);
    }
  });
});

describe('volumes on a disk that fills up', () => {
  it('the put that finds the disk full fails with RESOURCE_EXHAUSTED naming the data dir; committed files read; puts work once space is freed, and GC takes back what the failed put left', async () => {
    const s = await serveOnSmallDisk('full-volume');
    try {
      const vol = await Volume.fromName(uniqueName('full'), { createIfMissing: true, connection: s.connection });
      const first = randomBytes(VALUE);
      await vol.batchUpload().putFile(first, 'first.bin').commit();
      const { failedAt, err } = await fillUntilFailure((i) => vol.batchUpload().putFile(randomBytes(VALUE), `f${i}.bin`).commit());
      expect(err, String(err)).toBeInstanceOf(ResourceExhaustedError);
      expect((err as StowageError).message).toMatch(new RegExp(`${escapeRegExp(s.dataDir).source}.*free space on that disk, then retry`));
      expectAliveAndQuiet(s);
      // What was committed reads; the failed put is not a version.
      expect((await vol.readBytes('first.bin')).equals(first)).toBe(true);
      expect((await vol.info()).latestVersion).toBe(failedAt + 1);
      await expect(vol.stat(`f${failedAt}.bin`)).rejects.toThrow(/not found/);

      await rm(s.filler);
      const again = randomBytes(VALUE);
      await vol.batchUpload().putFile(again, `f${failedAt}.bin`).commit();
      expect((await vol.readBytes(`f${failedAt}.bin`)).equals(again)).toBe(true);
      // Whatever the failed put stored is unreferenced: a collection with no grace removes it, and keeps every file.
      await collectGarbage({ connection: s.connection, graceMs: 0 });
      expect((await vol.readBytes('first.bin')).equals(first)).toBe(true);
      expect((await vol.readBytes(`f${failedAt}.bin`)).equals(again)).toBe(true);
      expectAliveAndQuiet(s);
    } finally {
      await stop(s);
    }
  });
});

describe('local blob store on a disk that fills up', () => {
  it('a chunk write that fails for space fails with RESOURCE_EXHAUSTED and leaves neither the chunk nor a temporary file', async () => {
    const disk = mountTmpfs('full-store', 4 * MiB);
    try {
      const root = join(disk.dir, 'store');
      const store = new LocalBlobStore(root);
      const small = randomBytes(64 * KiB);
      await store.put(blobKey(sha256(small)), small);
      const big = randomBytes(6 * MiB);
      const key = blobKey(sha256(big));
      await expectFailure(
        () => store.put(key, big),
        ResourceExhaustedError,
        'RESOURCE_EXHAUSTED',
        escapeRegExp(`no space left to write ${key} in local directory ${root}: ENOSPC`),
        /free space on that disk, then retry/,
      );
      expect(await store.head(key)).toBeUndefined();
      const left = await readdir(root, { recursive: true });
      expect(left.filter((f) => f.includes('.tmp-'))).toEqual([]);
      // The failed write gave back all it took: what nearly fills the disk fits.
      const most = randomBytes(3 * MiB);
      await store.put(blobKey(sha256(most)), most);
      expect((await store.get(blobKey(sha256(most)))).equals(most)).toBe(true);
    } finally {
      disk.unmount();
    }
  });
});
