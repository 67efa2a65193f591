/**
 * The volume contract, run once on the embedded local-directory store and once
 * on S3 (s3rver): what goes in comes out byte for byte, at every version, and
 * the store alone is enough to rebuild the server's index.
 */
import { randomBytes } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  AlreadyExistsError,
  Connection,
  DEFAULT_CHUNK_SIZE,
  FailedPreconditionError,
  NotFoundError,
  Volume,
  type FileInfo,
  type VolumeInfo,
} from '../src/client/index.js';
import type { ServeOptions } from '../src/server/server.js';
import { removeDir, startS3rver, startStowage, tempDir, uniqueName, type S3Server, type Stowage } from './support/processes.js';
import { KiB, MiB, hashFile, readTree, sha256, treeDifferences, writeRandomFile, writeRandomTree } from './support/volume-data.js';

const CHUNK = 256 * KiB;

const pathsAndTypes = (entries: FileInfo[]) => entries.map((e) => `${e.type === 'directory' ? 'dir' : 'file'} ${e.path}`).sort();
const byName = (vols: VolumeInfo[]) => [...vols].sort((a, b) => a.name.localeCompare(b.name));

describe.each([
  { backend: 'local directory', useS3: false },
  { backend: 'S3 (s3rver)', useS3: true },
])('volumes on the $backend store', ({ useS3 }) => {
  let s3: S3Server | undefined;
  let stowage: Stowage;
  let work: string;
  const created: string[] = [];
  const extraDataDirs: string[] = [];

  /** Options for a server over a store of its own: a new S3 prefix, or (local) a new data dir. */
  const freshStore = (): Pick<ServeOptions, 's3'> => (s3 ? { s3: s3.storeOptions() } : {});
  const putStats = async () => (s3 ? (await s3.stats())['PUT chunks'] ?? 0 : undefined);

  async function volume(opts: { chunkSize?: number; connection?: Connection } = {}): Promise<Volume> {
    const name = uniqueName();
    created.push(name);
    return Volume.fromName(name, { createIfMissing: true, connection: stowage.connection, ...opts });
  }

  async function startExtra(opts: Omit<ServeOptions, 'port' | 'host'>): Promise<Stowage> {
    const s = await startStowage(opts);
    extraDataDirs.push(s.dataDir);
    return s;
  }

  beforeAll(async () => {
    work = tempDir('roundtrip');
    if (useS3) s3 = await startS3rver();
    stowage = await startStowage(freshStore());
  });
  afterEach(async () => {
    for (const name of created.splice(0)) await Volume.delete(name, { connection: stowage.connection }).catch(() => undefined);
  });
  afterAll(async () => {
    await stowage?.stop();
    await s3?.stop();
    for (const dir of [work, stowage?.dataDir, s3?.dir, ...extraDataDirs]) if (dir) removeDir(dir);
  });

  it('round-trips files of 0, 1, chunkSize-1, chunkSize and chunkSize+1 bytes from Buffers and local files', async () => {
    const vol = await volume({ chunkSize: CHUNK });
    const want = new Map<string, Buffer>();
    const batch = vol.batchUpload();
    for (const size of [0, 1, CHUNK - 1, CHUNK, CHUNK + 1]) {
      const fromBuffer = randomBytes(size);
      const fromFile = randomBytes(size);
      const local = join(work, `local-${size}.bin`);
      writeFileSync(local, fromFile);
      batch.putFile(fromBuffer, `buffer/${size}.bin`).putFile(local, `local/${size}.bin`);
      want.set(`buffer/${size}.bin`, fromBuffer).set(`local/${size}.bin`, fromFile);
    }
    const up = await batch.commit();
    expect(up).toMatchObject({ files: 10, bytes: [...want.values()].reduce((n, b) => n + b.length, 0), version: 1 });

    for (const [path, data] of want) {
      expect((await vol.stat(path)).size, path).toBe(data.length);
      expect(sha256(await vol.readBytes(path)), path).toBe(sha256(data));
      const local = join(work, 'out', path);
      await vol.download(path, local);
      expect(await hashFile(local), path).toBe(sha256(data));
    }
  });

  it('round-trips a 100 MiB file of random data with the default chunk size', async () => {
    const vol = await volume();
    const src = join(work, 'big.src');
    const dst = join(work, 'big.dst');
    const hash = await writeRandomFile(src, 100 * MiB);
    try {
      const chunks = Math.ceil((100 * MiB) / DEFAULT_CHUNK_SIZE);
      const up = await vol.batchUpload().putFile(src, 'models/big.bin').commit();
      expect(up).toMatchObject({ files: 1, bytes: 100 * MiB, chunks, chunksTransferred: chunks });
      const down = await vol.download('/models/big.bin', dst);
      expect(down).toMatchObject({ files: 1, bytes: 100 * MiB, version: up.version });
      expect(await hashFile(dst)).toBe(hash);
    } finally {
      rmSync(src, { force: true });
      rmSync(dst, { force: true });
    }
  });

  it('downloads a multi-chunk file the same on the calling thread and on fetch threads; a bad fetchThreads is refused', async () => {
    const vol = await volume({ chunkSize: CHUNK });
    const data = randomBytes(9 * CHUNK + 123);
    await vol.batchUpload().putFile(data, 'threads.bin').commit();
    for (const fetchThreads of [0, 1, 3]) {
      const reader = await Volume.fromName(vol.name, { connection: stowage.connection, fetchThreads, parallel: 4 });
      const local = join(work, `threads-${fetchThreads}.bin`);
      const down = await reader.download('/threads.bin', local);
      expect(down).toMatchObject({ files: 1, bytes: data.length });
      expect(await hashFile(local), `fetchThreads ${fetchThreads}`).toBe(sha256(data));
    }
    for (const fetchThreads of [-1, 1.5, 65]) {
      await expect(Volume.fromName(vol.name, { connection: stowage.connection, fetchThreads })).rejects.toThrow(/fetchThreads .* must be a whole number from 0 to 64/);
    }
  });

  it('reads byte ranges that cross chunk boundaries', async () => {
    const vol = await volume({ chunkSize: CHUNK });
    const big = randomBytes(3 * CHUNK + 17);
    // Three small files share one pack: a range of the middle one must not leak into its neighbours.
    const small = [randomBytes(1000), randomBytes(3000), randomBytes(500)];
    await vol
      .batchUpload()
      .putFile(big, 'big.bin')
      .putFile(small[0]!, 'a.bin')
      .putFile(small[1]!, 'b.bin')
      .putFile(small[2]!, 'c.bin')
      .commit();
    const cases: [string, Buffer, number, number | undefined][] = [
      ['big.bin', big, CHUNK - 10, 20],
      ['big.bin', big, CHUNK - 1, CHUNK + 2],
      ['big.bin', big, CHUNK, CHUNK],
      ['big.bin', big, 1, 3 * CHUNK + 15],
      ['big.bin', big, 2 * CHUNK + 5, undefined],
      ['big.bin', big, big.length - 5, 100],
      ['big.bin', big, big.length, 10],
      ['big.bin', big, 7, 0],
      ['b.bin', small[1]!, 0, 3000],
      ['b.bin', small[1]!, 10, 100],
      ['b.bin', small[1]!, 2990, 50],
    ];
    for (const [path, data, offset, length] of cases) {
      const got = await vol.readBytes(path, { offset, length });
      const want = data.subarray(offset, length === undefined ? undefined : offset + length);
      expect(got.length, `${path} offset ${offset} length ${length}`).toBe(want.length);
      expect(got.equals(want), `${path} offset ${offset} length ${length}`).toBe(true);
    }
  });

  it('round-trips 10,000 small files, packed into few chunks', async () => {
    const vol = await volume();
    const local = join(work, 'tree');
    const files = writeRandomTree(local, 10_000, 300, 4 * KiB);
    await s3?.resetStats();
    const up = await vol.batchUpload().putDirectory(local, '/dir').commit();
    const uploadPuts = await putStats();
    expect(up).toMatchObject({ files: 10_000, bytes: [...files.values()].reduce((n, b) => n + b.length, 0) });
    expect(up.chunksTransferred).toBeGreaterThan(0);
    expect(up.chunksTransferred).toBeLessThan(100);

    await s3?.resetStats();
    const out = join(work, 'tree-out');
    const down = await vol.download('/dir', out);
    expect(down.files).toBe(10_000);
    expect(down.chunksTransferred).toBeLessThan(100);
    expect(treeDifferences(files, readTree(out))).toEqual([]);
    if (s3) {
      expect(uploadPuts).toBe(up.chunksTransferred);
      const gets = (await s3.stats())['GET chunks'] ?? 0;
      expect(gets).toBeGreaterThan(0);
      expect(gets).toBeLessThan(100);
    }
  });

  it('uploads no chunk for bytes the store has already, in the same or another volume', async () => {
    const big = randomBytes(2 * CHUNK + 5);
    const small = randomBytes(2000);
    const put = (vol: Volume, force: boolean) =>
      vol.batchUpload({ force }).putFile(big, 'big.bin').putFile(small, 'small.bin').commit();

    const a = await volume({ chunkSize: CHUNK });
    const first = await put(a, false);
    expect(first).toMatchObject({ chunks: 4, chunksTransferred: 4 }); // 3 chunks and 1 pack

    await s3?.resetStats();
    const again = await put(a, true);
    expect(again).toMatchObject({ chunks: 4, chunksTransferred: 0, bytesTransferred: 0, version: first.version + 1 });
    expect(await putStats()).toBe(s3 ? 0 : undefined);

    const b = await volume({ chunkSize: CHUNK });
    await s3?.resetStats();
    expect(await put(b, false)).toMatchObject({ chunksTransferred: 0, bytesTransferred: 0, version: 1 });
    expect(await putStats()).toBe(s3 ? 0 : undefined);
    expect(sha256(await b.readBytes('big.bin'))).toBe(sha256(big));
    expect((await b.readBytes('small.bin')).equals(small)).toBe(true);
  });

  it('keeps both files when two clients commit to one volume at once', async () => {
    const name = (await volume()).name;
    const conns = [0, 1].map(() => new Connection({ server: stowage.server.address, token: stowage.server.token }));
    try {
      const [a, b] = await Promise.all(conns.map((connection) => Volume.fromName(name, { connection, chunkSize: CHUNK })));
      const fromA = randomBytes(5000);
      const fromB = randomBytes(CHUNK + 100);
      const results = await Promise.all([
        a!.batchUpload().putFile(fromA, 'from-a.bin').commit(),
        b!.batchUpload().putFile(fromB, 'from-b.bin').commit(),
      ]);
      expect(results.map((r) => r.version).sort()).toEqual([1, 2]);
      expect(pathsAndTypes(await a!.listdir('/'))).toEqual(['file from-a.bin', 'file from-b.bin']);
      expect((await b!.readBytes('from-a.bin')).equals(fromA)).toBe(true);
      expect((await a!.readBytes('from-b.bin')).equals(fromB)).toBe(true);
      const versions = await a!.versions();
      expect(versions.map((v) => [v.version, v.fileCount])).toEqual([
        [1, 1],
        [2, 2],
      ]);
    } finally {
      for (const c of conns) c.close();
    }
  });

  it('keeps every version readable', async () => {
    const vol = await volume();
    const v1 = await vol.batchUpload().putFile(Buffer.from('first'), 'notes.txt').commit();
    await expect(vol.batchUpload().putFile(Buffer.from('second'), 'notes.txt').commit()).rejects.toBeInstanceOf(
      AlreadyExistsError,
    );
    const v2 = await vol
      .batchUpload({ force: true })
      .putFile(Buffer.from('second'), 'notes.txt')
      .putFile(Buffer.from('new'), 'added.txt')
      .commit();
    expect([v1.version, v2.version]).toEqual([1, 2]);
    expect((await vol.readBytes('notes.txt')).toString()).toBe('second');
    expect((await vol.readBytes('notes.txt', { version: 1 })).toString()).toBe('first');
    expect((await vol.readBytes('notes.txt', { version: 2, offset: 1, length: 3 })).toString()).toBe('eco');
    await expect(vol.readBytes('added.txt', { version: 1 })).rejects.toBeInstanceOf(NotFoundError);
    await expect(vol.readBytes('notes.txt', { version: 3 })).rejects.toBeInstanceOf(NotFoundError);
    expect(pathsAndTypes(await vol.listdir('/', { version: 1 }))).toEqual(['file notes.txt']);
    expect((await vol.stat('notes.txt', { version: 1 })).size).toBe(5);
    expect((await vol.versions()).map((v) => [v.version, v.fileCount, v.totalBytes])).toEqual([
      [1, 1, 5],
      [2, 2, 9],
    ]);
    expect((await vol.info()).latestVersion).toBe(2);
  });

  it('lists directories with and without recursion, and stats files and directories', async () => {
    const vol = await volume();
    await vol
      .batchUpload()
      .putFile(Buffer.from('a'), 'a.txt')
      .putFile(Buffer.from('bb'), 'data/b.txt')
      .putFile(Buffer.from('ccc'), 'data/sub/c.txt', { mode: 0o600 })
      .commit();
    expect(pathsAndTypes(await vol.listdir('/'))).toEqual(['dir data', 'file a.txt']);
    expect(pathsAndTypes(await vol.listdir('/', { recursive: true }))).toEqual([
      'dir data',
      'dir data/sub',
      'file a.txt',
      'file data/b.txt',
      'file data/sub/c.txt',
    ]);
    expect(pathsAndTypes(await vol.listdir('data'))).toEqual(['dir data/sub', 'file data/b.txt']);
    expect(pathsAndTypes(await vol.listdir('/data/', { recursive: true }))).toEqual([
      'dir data/sub',
      'file data/b.txt',
      'file data/sub/c.txt',
    ]);
    await expect(vol.listdir('nothing-here')).rejects.toBeInstanceOf(NotFoundError);
    expect(await vol.stat('data/sub/c.txt')).toMatchObject({ path: 'data/sub/c.txt', type: 'file', size: 3, mode: 0o600 });
    expect(await vol.stat('/data/sub/')).toMatchObject({ path: 'data/sub', type: 'directory' });
    await expect(vol.stat('data/nope')).rejects.toBeInstanceOf(NotFoundError);
    await expect(vol.readBytes('data')).rejects.toBeInstanceOf(FailedPreconditionError);
  });

  it('removes files, and directories only when recursive', async () => {
    const vol = await volume();
    await vol
      .batchUpload()
      .putFile(Buffer.from('a'), 'a.txt')
      .putFile(Buffer.from('bb'), 'data/b.txt')
      .putFile(Buffer.from('ccc'), 'data/sub/c.txt')
      .commit();
    expect(await vol.removeFile('a.txt')).toBe(2);
    await expect(vol.removeFile('data')).rejects.toBeInstanceOf(FailedPreconditionError);
    await expect(vol.removeFile('missing.txt')).rejects.toBeInstanceOf(NotFoundError);
    expect(await vol.removeFile('data/sub', { recursive: true })).toBe(3);
    expect(pathsAndTypes(await vol.listdir('/', { recursive: true }))).toEqual(['dir data', 'file data/b.txt']);
    expect((await vol.readBytes('data/sub/c.txt', { version: 1 })).toString()).toBe('ccc');
    expect(await vol.removeFile('/', { recursive: true })).toBe(4);
    expect(await vol.listdir('/')).toEqual([]);
    expect((await vol.versions()).map((v) => v.fileCount)).toEqual([3, 2, 1, 0]);
  });

  it('copies a file to a new name, and several sources into a directory, without uploading', async () => {
    const vol = await volume({ chunkSize: CHUNK });
    const big = randomBytes(CHUNK * 2 + 1);
    await vol
      .batchUpload()
      .putFile(Buffer.from('alpha'), 'a.txt')
      .putFile(big, 'b.bin')
      .putFile(Buffer.from('gamma'), 'dir/c.txt')
      .commit();
    await s3?.resetStats();
    expect(await vol.copyFiles(['a.txt'], 'renamed.txt')).toBe(2);
    expect(await vol.copyFiles(['a.txt', 'b.bin', 'dir'], 'into')).toBe(3);
    expect(await putStats()).toBe(s3 ? 0 : undefined);
    expect((await vol.readBytes('renamed.txt')).toString()).toBe('alpha');
    expect(pathsAndTypes(await vol.listdir('into', { recursive: true }))).toEqual([
      'dir into/dir',
      'file into/a.txt',
      'file into/b.bin',
      'file into/dir/c.txt',
    ]);
    expect(sha256(await vol.readBytes('into/b.bin'))).toBe(sha256(big));
    expect((await vol.readBytes('into/dir/c.txt')).toString()).toBe('gamma');
    await expect(vol.copyFiles(['dir/c.txt'], 'a.txt')).rejects.toBeInstanceOf(AlreadyExistsError);
    await expect(vol.copyFiles(['nope.txt'], 'x.txt')).rejects.toBeInstanceOf(NotFoundError);
    expect(await vol.copyFiles(['dir/c.txt'], 'a.txt', { force: true })).toBe(4);
    expect((await vol.readBytes('a.txt')).toString()).toBe('gamma');
    expect((await vol.readBytes('a.txt', { version: 3 })).toString()).toBe('alpha');
  });

  it('rebuilds the index from the store alone after the index is lost', async () => {
    const store = freshStore();
    let server = await startExtra(store);
    const dataDir = server.dataDir;
    const big = randomBytes(2 * CHUNK + 3);
    const small = randomBytes(700);
    try {
      const connection = server.connection;
      const open = (name: string, createIfMissing = false) => Volume.fromName(name, { createIfMissing, connection, chunkSize: CHUNK });
      const vol = await open(uniqueName(), true);
      await vol.batchUpload().putFile(big, 'big.bin').putFile(small, 'dir/small.bin').commit();
      await vol.batchUpload({ force: true }).putFile(Buffer.from('v2'), 'dir/small.bin').commit();
      const renamed = await open(uniqueName(), true);
      await renamed.batchUpload().putFile(Buffer.from('moved'), 'm.txt').commit();
      const newName = uniqueName('renamed');
      await Volume.rename(renamed.name, newName, { connection });
      const gone = await open(uniqueName(), true);
      await gone.batchUpload().putFile(Buffer.from('gone'), 'g.txt').commit();
      await Volume.delete(gone.name, { connection });
      const volumesBefore = byName(await Volume.list({ connection }));
      const versionsBefore = await vol.versions();
      expect(volumesBefore.map((v) => v.name)).toEqual([vol.name, newName].sort());

      await server.stop();
      rmSync(join(dataDir, 'index'), { recursive: true, force: true });
      server = await startStowage({ ...store, dataDir });

      const after = server.connection;
      expect(byName(await Volume.list({ connection: after }))).toEqual(volumesBefore);
      const vol2 = await Volume.fromName(vol.name, { connection: after, chunkSize: CHUNK });
      expect(await vol2.versions()).toEqual(versionsBefore);
      expect(sha256(await vol2.readBytes('big.bin'))).toBe(sha256(big));
      expect((await vol2.readBytes('dir/small.bin')).toString()).toBe('v2');
      expect((await vol2.readBytes('dir/small.bin', { version: 1 })).equals(small)).toBe(true);
      expect((await (await Volume.fromName(newName, { connection: after })).readBytes('m.txt')).toString()).toBe('moved');
      await expect(Volume.fromName(gone.name, { connection: after })).rejects.toBeInstanceOf(NotFoundError);
      // What dedup relies on was rebuilt too.
      const copy = await Volume.fromName(uniqueName(), { createIfMissing: true, connection: after, chunkSize: CHUNK });
      const again = await copy.batchUpload().putFile(big, 'big.bin').putFile(small, 'small.bin').commit();
      expect(again.chunksTransferred).toBe(0);
    } finally {
      await server.stop();
    }
  });

  it('adds what another server committed to the same store when asked to rebuild its index (RebuildIndex)', async () => {
    const first = await startExtra(freshStore());
    const second = await startExtra({ store: first.server.store });
    try {
      const name = uniqueName();
      const vol = await Volume.fromName(name, { createIfMissing: true, connection: first.connection });
      const data = randomBytes(3000);
      await vol.batchUpload().putFile(data, 'x.bin').commit();
      await vol.batchUpload().putFile(Buffer.from('y'), 'y.txt').commit();
      await expect(Volume.fromName(name, { connection: second.connection })).rejects.toBeInstanceOf(NotFoundError);

      const conn = second.connection;
      expect(await conn.unary(conn.volumes.rebuildIndex.bind(conn.volumes), {})).toMatchObject({ volumes: 1, versions: 2, skipped: [] });
      const seen = await Volume.fromName(name, { connection: conn });
      expect(await seen.versions()).toEqual(await vol.versions());
      expect((await seen.readBytes('x.bin')).equals(data)).toBe(true);
      expect((await seen.readBytes('x.bin', { version: 1 })).equals(data)).toBe(true);
    } finally {
      await second.stop();
      await first.stop();
    }
  });

  it('keeps an ephemeral volume out of the list and deletes it on close', async () => {
    const connection = stowage.connection;
    const listAll = async () =>
      (await connection.unary(connection.volumes.listVolumes.bind(connection.volumes), { includeEphemeral: true })).volumes;
    const eph = await Volume.ephemeral({ connection });
    try {
      await eph.batchUpload().putFile(Buffer.from('scratch'), 'tmp.txt').commit();
      expect((await eph.readBytes('tmp.txt')).toString()).toBe('scratch');
      expect((await Volume.list({ connection })).map((v) => v.name)).not.toContain(eph.name);
      expect((await listAll()).find((v) => v.name === eph.name)).toMatchObject({ ephemeral: true, latestVersion: 1 });
    } finally {
      await eph.close();
    }
    await expect(Volume.fromName(eph.name, { connection })).rejects.toBeInstanceOf(NotFoundError);
    expect((await listAll()).map((v) => v.name)).not.toContain(eph.name);
  });
});
