// Garbage collection: retention, what the sweep gives back, leases for
// uploads in flight, collections running beside busy writers, and a
// collection killed half way.
import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Connection, Volume, collectGarbage, setRetention } from '../src/client/index.js';
import { isStowageError } from '../src/common/errors.js';
import { removeScratch, scratchDir, startSetup, type Setup, type StoreKind } from './support/faults.js';
import { runCli, spawnStowage, startStowage, uniqueName } from './support/processes.js';
import type { BlobStore } from '../src/volume-server/store/interface.js';

afterAll(() => removeScratch());

async function keys(store: BlobStore, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const k of store.list(prefix)) out.push(k);
  return out;
}

/** Blob hashes every version of every volume still references, listed through the SDK. */
async function referencedBlobs(connection: Connection): Promise<Set<string>> {
  const out = new Set<string>();
  for (const info of await Volume.list({ connection })) {
    const vol = await Volume.fromName(info.name, { connection });
    for (const v of await vol.versions()) {
      for await (const batch of connection.stream(
        connection.volumes.listFiles({ volume: info.name, path: '', recursive: true, version: v.version, pageSize: 0, pageToken: '', withoutExtents: false }),
      )) {
        for (const e of batch.entries) for (const x of e.extents) out.add(x.blob);
      }
    }
  }
  return out;
}

const chunkHashes = async (store: BlobStore): Promise<Set<string>> => new Set((await keys(store, 'chunks/')).map((k) => k.slice(k.lastIndexOf('/') + 1)));

describe.each<StoreKind>(['local', 's3'])('garbage collection (%s store)', (kind) => {
  let setup: Setup;
  beforeAll(async () => {
    setup = await startSetup(kind);
  });
  afterAll(async () => {
    await setup?.stop();
  });

  it('gives back the bytes of overwritten files, removed files and deleted volumes, and keeps what is referenced', async () => {
    const connection = setup.stowage.connection;
    const store = setup.stowage.server.store;
    const vol = await Volume.fromName(uniqueName('gc'), { createIfMissing: true, connection, chunkSize: 64 * 1024 });
    const other = await Volume.fromName(uniqueName('gc-other'), { createIfMissing: true, connection, chunkSize: 64 * 1024 });
    const shared = randomBytes(100_000);
    const first = randomBytes(300_000);
    const small = Array.from({ length: 30 }, (_, i) => randomBytes(500 + i));
    const b = vol.batchUpload().putFile(first, 'model.bin').putFile(shared, 'shared.bin');
    small.forEach((d, i) => b.putFile(d, `small/${i}.txt`));
    await b.commit();
    await other.batchUpload().putFile(shared, 'shared.bin').putFile(randomBytes(200_000), 'only-here.bin').commit();
    const second = randomBytes(300_000);
    await vol.batchUpload({ force: true }).putFile(second, 'model.bin').commit();
    await vol.removeFile('small', { recursive: true });
    await setRetention(vol.name, { keepLast: 1, keepWithinMs: 0, connection });
    await Volume.delete(other.name, { connection });

    const before = await chunkHashes(store);
    // A dry run reports and deletes nothing.
    const dry = await collectGarbage({ graceMs: 0, dryRun: true, connection });
    expect(dry.dryRun).toBe(true);
    expect(dry.versionsRemoved).toBe(2);
    expect(dry.blobsRemoved).toBeGreaterThan(0);
    expect(await chunkHashes(store)).toEqual(before);
    expect((await vol.versions()).length).toBe(3);

    const r = await collectGarbage({ graceMs: 0, connection });
    expect(r.versionsRemoved).toBe(2);
    expect(r.blobsRemoved).toBe(dry.blobsRemoved);
    expect(r.blobBytesRemoved).toBeGreaterThanOrEqual(first.length + 200_000);
    expect(r.treesRemoved).toBeGreaterThan(0);
    // The store now holds exactly the blobs the kept version references.
    const after = await chunkHashes(store);
    expect(after).toEqual(await referencedBlobs(connection));
    expect(after.size).toBeLessThan(before.size);
    expect((await vol.versions()).map((v) => v.version)).toEqual([3]);
    expect((await vol.readBytes('model.bin')).equals(second)).toBe(true);
    expect((await vol.readBytes('shared.bin')).equals(shared)).toBe(true);
    await expect(vol.readBytes('model.bin', { version: 1 })).rejects.toThrow(/has no version 1/);
    // Nothing left to collect.
    const again = await collectGarbage({ graceMs: 0, connection });
    expect(again).toMatchObject({ versionsRemoved: 0, blobsRemoved: 0, treesRemoved: 0 });
    // The small files collected are put again: their bytes are sent again (the server no longer offers the
    // blob they were packed in), and they read back.
    const plan = await connection.unary(connection.volumes.planUpload.bind(connection.volumes), {
      volume: vol.name,
      blobs: [],
      contents: small.map((d) => createHash('sha256').update(d).digest('hex')),
      presign: false,
    });
    expect(plan.knownContents).toEqual({});
    const back = vol.batchUpload();
    small.forEach((d, i) => back.putFile(d, `small/${i}.txt`));
    await back.commit();
    for (const [i, d] of small.entries()) expect((await vol.readBytes(`small/${i}.txt`)).equals(d)).toBe(true);
  });

  it('keeps unreferenced objects younger than the grace period, and blobs planned for an upload', async () => {
    const connection = setup.stowage.connection;
    const store = setup.stowage.server.store;
    const vol = await Volume.fromName(uniqueName('gc-grace'), { createIfMissing: true, connection, chunkSize: 64 * 1024 });
    const planned = randomBytes(70_000);
    const dropped = randomBytes(70_000);
    await vol.batchUpload().putFile(planned, 'p.bin').putFile(dropped, 'd.bin').commit();
    await vol.removeFile('p.bin');
    await vol.removeFile('d.bin');
    await setRetention(vol.name, { keepLast: 1, keepWithinMs: 0, connection });
    // Unreferenced now, but young: the default grace keeps them.
    const young = await collectGarbage({ connection });
    expect(young.objectsKeptByGrace).toBeGreaterThan(0);
    const stored = await chunkHashes(store);
    // An upload plans p.bin's chunk again (it is found stored: nothing is sent), so it is leased.
    const hashP = createHash('sha256').update(planned.subarray(0, 64 * 1024)).digest('hex');
    const hashD = createHash('sha256').update(dropped.subarray(0, 64 * 1024)).digest('hex');
    expect(stored.has(hashP) && stored.has(hashD)).toBe(true);
    // Time passes: the leases the first upload took on both chunks run out (the test server is in this process).
    const index = setup.stowage.server.catalog.index;
    await index.clearPlanned([hashP, hashD]);
    const plan = await connection.unary(connection.volumes.planUpload.bind(connection.volumes), { volume: vol.name, blobs: [hashP], contents: [], presign: false });
    expect(plan.missingBlobs).toEqual([]);
    expect(index.getPlanned(hashP)).toBeDefined();
    // A grace of 1 ms makes every unreferenced object old enough; the lease still holds p.bin's chunk.
    await new Promise((r) => setTimeout(r, 5));
    const r = await collectGarbage({ graceMs: 1, connection });
    const left = await chunkHashes(store);
    expect(left.has(hashP)).toBe(true);
    expect(left.has(hashD)).toBe(false);
    expect(r.objectsKeptByGrace).toBeGreaterThan(0);
    // The upload that planned it commits after the sweep and loses nothing.
    await vol.batchUpload().putFile(planned, 'p.bin').commit();
    expect((await vol.readBytes('p.bin')).equals(planned)).toBe(true);
  });

  it('loses no acknowledged file while collections run in a loop beside four writers, and the store shrinks after deletes', async () => {
    const connection = setup.stowage.connection;
    const store = setup.stowage.server.store;
    const vol = await Volume.fromName(uniqueName('gc-busy'), { createIfMissing: true, connection, chunkSize: 64 * 1024 });
    await setRetention(vol.name, { keepLast: 1, keepWithinMs: 0, connection });
    const acknowledged = new Map<string, Buffer>();
    let stop = false;
    let collections = 0;
    // A grace of 1 ms: every unreferenced object is old enough to go, but what uploads plan is leased (grace 0 would ignore that).
    const collector = (async () => {
      while (!stop) {
        await collectGarbage({ graceMs: 1, connection });
        collections++;
      }
    })();
    const writer = async (w: number): Promise<void> => {
      const v = await Volume.fromName(vol.name, { connection, chunkSize: 64 * 1024 });
      for (let round = 0; round < 12; round++) {
        const files = new Map<string, Buffer>();
        for (let i = 0; i < 3; i++) files.set(`w${w}/f${(round + i) % 5}.bin`, randomBytes(i === 0 ? 90_000 : 2000));
        // Some rounds put bytes that were stored before and then dropped: the collector may be deleting them.
        if (round % 3 === 2) files.set(`w${w}/again.bin`, Buffer.alloc(70_000, w));
        for (let attempt = 0; ; attempt++) {
          const b = v.batchUpload({ force: true });
          for (const [p, d] of files) b.putFile(d, p);
          try {
            await b.commit();
            break;
          } catch (err) {
            // A chunk planned while a sweep had already chosen to delete it: the commit says so (never a lost file); try again.
            if (!isStowageError(err, 'FAILED_PRECONDITION') || attempt > 5) throw err;
          }
        }
        for (const [p, d] of files) acknowledged.set(p, d);
        if (round % 4 === 3) {
          await v.removeFile(`w${w}/again.bin`).catch(() => undefined);
          acknowledged.delete(`w${w}/again.bin`);
        }
      }
    };
    try {
      await Promise.all([0, 1, 2, 3].map(writer));
    } finally {
      stop = true;
      await collector;
    }
    expect(collections).toBeGreaterThan(0);
    for (const [p, d] of acknowledged) expect((await vol.readBytes(p)).equals(d), p).toBe(true);
    const listed = (await vol.listdir('/', { recursive: true })).filter((f) => f.type === 'file').map((f) => f.path).sort();
    expect(listed).toEqual([...acknowledged.keys()].sort());

    // Deleting the writers' files and collecting gives their bytes back.
    const before = (await chunkHashes(store)).size;
    await vol.removeFile('w0', { recursive: true });
    await vol.removeFile('w1', { recursive: true });
    await collectGarbage({ graceMs: 0, connection });
    const after = await chunkHashes(store);
    expect(after.size).toBeLessThan(before);
    expect(after).toEqual(await referencedBlobs(connection));
    for (const [p, d] of acknowledged) if (p.startsWith('w2/') || p.startsWith('w3/')) expect((await vol.readBytes(p)).equals(d), p).toBe(true);
  });
});

describe('a collection killed half way', () => {
  it('deleted nothing referenced, and runs again to the end', async () => {
    const dataDir = scratchDir('gc-killed');
    let server = await spawnStowage(dataDir);
    let connection = new Connection({ server: server.address, token: server.token });
    const vol = await Volume.fromName(uniqueName('gc-kill'), { createIfMissing: true, connection, chunkSize: 64 * 1024 });
    const kept = randomBytes(200_000);
    await vol.batchUpload().putFile(kept, 'kept.bin').commit();
    for (let i = 0; i < 6; i++) await vol.batchUpload({ force: true }).putFile(randomBytes(200_000), 'churn.bin').commit();
    await setRetention(vol.name, { keepLast: 1, keepWithinMs: 0, connection });
    const last = await vol.readBytes('churn.bin');
    connection.close();
    await server.kill('SIGTERM');

    server = await spawnStowage(dataDir, [], { STOWAGE_TEST_FAULTS: 'kill-after-deletes:4' });
    const env = { STOWAGE_SERVER: server.address, STOWAGE_TOKEN: server.token };
    const killed = await runCli(['volume', 'gc', '--grace', '0'], env);
    expect(killed.code).not.toBe(0);
    await server.exited;

    server = await spawnStowage(dataDir);
    connection = new Connection({ server: server.address, token: server.token });
    try {
      const v = await Volume.fromName(vol.name, { connection });
      expect((await v.readBytes('kept.bin')).equals(kept)).toBe(true);
      expect((await v.readBytes('churn.bin')).equals(last)).toBe(true);
      const rerun = await runCli(['volume', 'gc', '--grace', '0', '--json'], { STOWAGE_SERVER: server.address, STOWAGE_TOKEN: server.token });
      expect(rerun.code, rerun.stderr).toBe(0);
      const report = JSON.parse(rerun.stdout) as { blobsRemoved: number };
      expect(report.blobsRemoved).toBeGreaterThan(0);
      expect((await v.readBytes('kept.bin')).equals(kept)).toBe(true);
      expect((await v.readBytes('churn.bin')).equals(last)).toBe(true);
      const human = await runCli(['volume', 'gc', '--grace', '0'], { STOWAGE_SERVER: server.address, STOWAGE_TOKEN: server.token });
      expect(human.stdout).toMatch(/^removed 0 versions, 0 chunks \(0 B\), 0 tree objects/);
    } finally {
      connection.close();
      await server.kill('SIGTERM');
    }
  });

  it('refuses to run on an index not rebuilt from the store yet', async () => {
    // startStowage on an unreachable S3 leaves the index unsynced.
    const stowage = await startStowage({
      dataDir: scratchDir('gc-unsynced'),
      s3: { bucket: 'b', endpoint: 'http://127.0.0.1:1', region: 'us-east-1', prefix: 'p', credentials: { accessKeyId: 'x', secretAccessKey: 'y' } },
    });
    try {
      await expect(collectGarbage({ connection: stowage.connection })).rejects.toThrow(/needs the index rebuilt/);
    } finally {
      await stowage.stop();
    }
  });
});
