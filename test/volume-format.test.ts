// The stored format of versions: data dirs and buckets written before the
// tree format open (converted), damage stays where it is, and a server killed
// in the middle of a commit shows the version before it.
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Connection, IntegrityError, NotFoundError, Volume, collectGarbage, listDamaged, rebuildIndex } from '../src/client/index.js';
import { treeObjectKey } from '../src/tree/format.js';
import { removeScratch, scratchDir, startSetup, storedObjectFile, type Setup } from './support/faults.js';
import { ROOT, spawnStowage, startS3rver, startStowage, uniqueName, type Stowage } from './support/processes.js';

const FIXTURES = join(ROOT, 'test/fixtures/format1');
type Expected = Record<string, Record<string, { path: string; size: number; mode: number; sha256: string }[]>>;
const expected = JSON.parse(readFileSync(join(FIXTURES, 'expected.json'), 'utf8')) as Expected;

afterAll(() => removeScratch());

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Every version of every volume reads as the old server listed it. */
async function checkAgainstFixture(connection: Connection): Promise<void> {
  const names = (await Volume.list({ connection })).map((v) => v.name).sort();
  expect(names).toEqual(Object.keys(expected).sort());
  for (const [name, versions] of Object.entries(expected)) {
    const vol = await Volume.fromName(name, { connection });
    expect((await vol.versions()).map((v) => String(v.version))).toEqual(Object.keys(versions));
    for (const [version, files] of Object.entries(versions)) {
      const listed = (await vol.listdir('/', { recursive: true, version: Number(version) })).filter((f) => f.type === 'file');
      expect(listed.map((f) => ({ path: f.path, size: f.size, mode: f.mode }))).toEqual(files.map((f) => ({ path: f.path, size: f.size, mode: f.mode })));
      for (const f of files) expect(sha(await vol.readBytes(f.path, { version: Number(version) })), `${name} v${version} ${f.path}`).toBe(f.sha256);
    }
  }
}

async function idOf(connection: Connection, volume: string, path: string, version: number): Promise<number> {
  const r = await connection.unary(connection.volumes.stat.bind(connection.volumes), { volume, path, version });
  return r.entry!.id;
}

describe('data written before the tree format', () => {
  it('a data dir of the local store opens: every version converted, ids kept for unchanged files, and new commits work', async () => {
    const dir = scratchDir('format1-local');
    execFileSync('tar', ['-xzf', join(FIXTURES, 'local.tar.gz'), '-C', dir]);
    const dataDir = join(dir, 'local');
    let stowage: Stowage | undefined = await startStowage({ dataDir });
    try {
      await checkAgainstFixture(stowage.connection);
      const c = stowage.connection;
      // Unchanged across versions 1 to 4: the same inode id; a file rewritten in version 2: a new one.
      expect(await idOf(c, 'history', 'small/f00.txt', 4)).toBe(await idOf(c, 'history', 'small/f00.txt', 1));
      expect(await idOf(c, 'history', 'big/weights.bin', 2)).not.toBe(await idOf(c, 'history', 'big/weights.bin', 1));
      const vol = await Volume.fromName('history', { connection: c });
      await vol.batchUpload().putFile(Buffer.from('new'), 'after/upgrade.txt').commit();
      expect((await vol.readBytes('after/upgrade.txt')).toString()).toBe('new');
      await stowage.stop();
      // A restart converts nothing again, and a rebuild from the store alone finds the same.
      stowage = await startStowage({ dataDir });
      expect(await rebuildIndex({ connection: stowage.connection })).toMatchObject({ converted: 0, skipped: [] });
      await stowage.stop();
      await rm(join(dataDir, 'index'), { recursive: true });
      stowage = await startStowage({ dataDir });
      expect(await (await Volume.fromName('history', { connection: stowage.connection })).versions()).toHaveLength(6);
      // Garbage collection removes the manifests once converted, and everything still reads.
      const r = await collectGarbage({ connection: stowage.connection, graceMs: 0 });
      expect(r.otherRemoved).toBeGreaterThanOrEqual(9);
      const left: string[] = [];
      for await (const k of stowage.server.store.list('manifests/')) left.push(k);
      expect(left).toEqual([]);
      await checkAgainstFixture2(stowage.connection);
    } finally {
      await stowage?.stop();
    }
  });

  it('a manifest whose extents are malformed is skipped and listed as damaged; the other versions convert', async () => {
    const dir = scratchDir('format1-bad-manifest');
    execFileSync('tar', ['-xzf', join(FIXTURES, 'local.tar.gz'), '-C', dir]);
    const dataDir = join(dir, 'local');
    const manifests = join(dataDir, 'store', 'manifests');
    // The volume with five versions: its third manifest gets an extent that is not [blob, offset, length, hash].
    const id = readdirSync(manifests).find((d) => readdirSync(join(manifests, d)).length === 5)!;
    const key = `manifests/${id}/${String(3).padStart(12, '0')}.json`;
    const m = JSON.parse(readFileSync(join(dataDir, 'store', key), 'utf8')) as { files: { extents: unknown[] }[] };
    m.files[0]!.extents = [[1, 'x']];
    writeFileSync(join(dataDir, 'store', key), JSON.stringify(m));
    const stowage = await startStowage({ dataDir });
    try {
      const c = stowage.connection;
      const history = await Volume.fromName('history', { connection: c });
      expect((await history.versions()).map((v) => v.version)).toEqual([1, 2, 4, 5]);
      for (const f of expected.history!['5']!) expect(sha(await history.readBytes(f.path, { version: 5 })), f.path).toBe(f.sha256);
      const damaged = await listDamaged({ connection: c });
      expect(damaged.map((d) => [d.kind, d.key])).toEqual([['version', key]]);
      expect(damaged[0]!.reason).toMatch(/extent .* is malformed/);
      expect((await (await Volume.fromName('emptied', { connection: c })).versions()).length).toBe(2);
    } finally {
      await stowage.stop();
    }
  });

  it('a bucket written by the old server opens on a new server with an empty data dir', async () => {
    const dir = scratchDir('format1-s3');
    execFileSync('tar', ['-xzf', join(FIXTURES, 's3rver.tar.gz'), '-C', dir]);
    const s3 = await startS3rver({ dir: join(dir, 's3rver'), bucket: 'fixture' });
    const stowage = await startStowage({ dataDir: scratchDir('format1-s3-data'), s3: s3.storeOptions('old') });
    try {
      await checkAgainstFixture(stowage.connection);
    } finally {
      await stowage.stop();
      await s3.stop();
    }
  });
});

/** The fixture's versions with the one commit the first test added on top. */
async function checkAgainstFixture2(connection: Connection): Promise<void> {
  const vol = await Volume.fromName('history', { connection });
  const latest = (await vol.info()).latestVersion;
  const files = (await vol.listdir('/', { recursive: true })).filter((f) => f.type === 'file').map((f) => f.path);
  expect(files).toEqual([...expected.history!['5']!.map((f) => f.path), 'after/upgrade.txt'].sort());
  expect(latest).toBe(6);
}

describe.each(['local', 's3'] as const)('damage in the store stays where it is (%s store)', (kind) => {
  it('a damaged tree object fails the reads below it with INTEGRITY naming the path; other directories read', async () => {
    const s3 = kind === 's3' ? await startS3rver({ dir: scratchDir('s3rver') }) : undefined;
    const prefix = uniqueName('prefix');
    const dataDir = scratchDir('damaged-tree');
    const options = () => (s3 ? { dataDir: scratchDir('damaged-tree-data'), s3: s3.storeOptions(prefix) } : { dataDir });
    let stowage = await startStowage(options());
    try {
      const connection = stowage.connection;
      const vol = await Volume.fromName(uniqueName('damaged-tree'), { createIfMissing: true, connection });
      const batch = vol.batchUpload();
      for (let i = 0; i < 20; i++) batch.putFile(Buffer.from(`a${i}`), `good/a${i}.txt`).putFile(Buffer.from(`b${i}`), `bad/deeper/b${i}.txt`);
      await batch.commit();
      const dirStat = await connection.unary(connection.volumes.stat.bind(connection.volumes), { volume: vol.name, path: 'bad/deeper', version: 0 });
      const setup = { kind, stowage, s3 } as Setup;
      writeFileSync(await storedObjectFile(setup, treeObjectKey(dirStat.entry!.tree)), randomBytes(200));
      // A fresh server (for S3: with a new data dir, whose index has no copy of the page) reads the page from the store.
      await stowage.stop();
      stowage = await startStowage(options());
      const fresh = await Volume.fromName(vol.name, { connection: stowage.connection });
      await expect(fresh.listdir('bad/deeper')).rejects.toThrow(IntegrityError);
      await expect(fresh.readBytes('bad/deeper/b3.txt')).rejects.toThrow(/reading "bad\/deeper\/b3\.txt" of volume .*tree object .* (damaged|malformed)/);
      expect((await fresh.readBytes('good/a3.txt')).toString()).toBe('a3');
      expect(await fresh.listdir('good')).toHaveLength(20);
      // The parent still lists the damaged directory by name: only what is below it is unreadable.
      expect((await fresh.listdir('bad')).map((f) => f.path)).toEqual(['bad/deeper']);
    } finally {
      await stowage.stop();
      await s3?.stop();
    }
  });
});

describe('a damaged record does not stop the rebuild', () => {
  it('skips a damaged version record and a damaged volume record, lists them, opens everything else, and GC keeps the skipped volume', async () => {
    const setup = await startSetup('local');
    try {
      const c = setup.stowage.connection;
      const a = await Volume.fromName(uniqueName('a'), { createIfMissing: true, connection: c });
      const b = await Volume.fromName(uniqueName('b'), { createIfMissing: true, connection: c });
      const z = await Volume.fromName(uniqueName('z'), { createIfMissing: true, connection: c });
      for (let v = 1; v <= 3; v++) await a.batchUpload().putFile(Buffer.from(`a${v}`), `f${v}.txt`).commit();
      await b.batchUpload().putFile(Buffer.from('b'), 'b.txt').commit();
      await z.batchUpload().putFile(Buffer.from('z'), 'z.txt').commit();
      const aInfo = await a.info();
      const zInfo = await z.info();
      const dataDir = setup.stowage.dataDir;
      await setup.stowage.stop();
      const zRecord = join(dataDir, 'store', 'volumes', `${zInfo.id}.json`);
      const zGood = readFileSync(zRecord);
      writeFileSync(join(dataDir, 'store', 'versions', aInfo.id, `${String(3).padStart(12, '0')}.json`), '{"format": 2, "truncat');
      writeFileSync(zRecord, 'not json');
      await rm(join(dataDir, 'index'), { recursive: true });
      setup.stowage = await startStowage({ dataDir });
      const conn = setup.stowage.connection;
      const names = (await Volume.list({ connection: conn })).map((v) => v.name);
      expect(names).toContain(a.name);
      expect(names).toContain(b.name);
      expect(names).not.toContain(z.name);
      const a2 = await Volume.fromName(a.name, { connection: conn });
      expect((await a2.versions()).map((v) => v.version)).toEqual([1, 2]);
      expect((await a2.readBytes('f2.txt')).toString()).toBe('a2');
      expect((await Volume.fromName(b.name, { connection: conn }).then((v) => v.readBytes('b.txt'))).toString()).toBe('b');
      const damaged = await listDamaged({ connection: conn });
      expect(damaged.map((d) => [d.kind, d.key]).sort()).toEqual(
        [
          ['version', `versions/${aInfo.id}/${String(3).padStart(12, '0')}.json`],
          ['volume', `volumes/${zInfo.id}.json`],
        ].sort(),
      );
      expect(damaged.find((d) => d.kind === 'version')!.reason).toMatch(/not valid JSON/);
      await expect(Volume.fromName(z.name, { connection: conn })).rejects.toThrow(NotFoundError);

      // A collection deletes nothing of the volume the index does not hold: it is damaged, not deleted.
      await collectGarbage({ graceMs: 0, connection: conn });
      await setup.stowage.stop();
      writeFileSync(zRecord, zGood);
      await rm(join(dataDir, 'index'), { recursive: true });
      setup.stowage = await startStowage({ dataDir });
      const z2 = await Volume.fromName(z.name, { connection: setup.stowage.connection });
      expect((await z2.readBytes('z.txt')).toString()).toBe('z');
      expect(await listDamaged({ connection: setup.stowage.connection })).toEqual([
        expect.objectContaining({ kind: 'version', key: `versions/${aInfo.id}/${String(3).padStart(12, '0')}.json` }),
      ]);
    } finally {
      await setup.stop();
    }
  });
});

describe('a server killed in the middle of a commit', () => {
  for (const fault of ['kill-before-put:versions/', 'kill-after-put:versions/']) {
    it(`shows the version before it after a restart (${fault})`, async () => {
      const dataDir = scratchDir('crash');
      let server = await spawnStowage(dataDir);
      let conn = new Connection({ server: server.address, token: server.token });
      const name = uniqueName('crash');
      const vol = await Volume.fromName(name, { createIfMissing: true, connection: conn });
      await vol.batchUpload().putFile(Buffer.from('one'), 'one.txt').commit();
      conn.close();
      await server.kill('SIGTERM');

      server = await spawnStowage(dataDir, [], { STOWAGE_TEST_FAULTS: fault });
      conn = new Connection({ server: server.address, token: server.token });
      const doomed = await Volume.fromName(name, { connection: conn });
      await expect(doomed.batchUpload().putFile(Buffer.from('two'), 'two.txt').putFile(randomBytes(5000), 'sub/three.bin').commit()).rejects.toThrow();
      await server.exited;
      conn.close();

      server = await spawnStowage(dataDir);
      conn = new Connection({ server: server.address, token: server.token });
      try {
        const after = await Volume.fromName(name, { connection: conn });
        expect((await after.info()).latestVersion).toBe(1);
        expect((await after.listdir('/', { recursive: true })).map((f) => f.path)).toEqual(['one.txt']);
        // The next commit takes the number the lost one would have had, and a rebuild agrees.
        await after.batchUpload().putFile(Buffer.from('again'), 'again.txt').commit();
        expect((await after.versions()).map((v) => v.version)).toEqual([1, 2]);
        expect(await rebuildIndex({ connection: conn })).toMatchObject({ versions: 2, skipped: [] });
        expect((await after.listdir('/')).map((f) => f.path)).toEqual(['again.txt', 'one.txt']);
        expect((await after.readBytes('again.txt')).toString()).toBe('again');
      } finally {
        conn.close();
        await server.kill('SIGTERM');
      }
    });
  }
});
