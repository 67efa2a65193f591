/**
 * Several volume servers over one bucket (s3rver) with their heads in one
 * Redis (volume-server/shared.ts): what one acknowledges every other serves at
 * once, names mean one volume everywhere, concurrent commits through
 * different servers all land in order, a server SIGKILLed under 8 clients'
 * commit loops loses no acknowledged commit and shows no client a version
 * going backwards, a Redis that stops answering fails writes with UNAVAILABLE
 * naming it while reads go on, and a commit retried with its id lands once.
 * All servers are child processes sharing one admin token.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AlreadyExistsError,
  Connection,
  InvalidArgumentError,
  NotFoundError,
  PermissionDeniedError,
  UnauthenticatedError,
  UnavailableError,
  Volume,
  createToken,
  revokeToken,
} from '../src/client/index.js';
import { sha256 } from '../src/common/hash.js';
import { createLogger } from '../src/common/logger.js';
import { FileType, type CommitRequest, type CommitResponse, type FileEntry } from '../src/gen/stowage/v1/volume.js';
import { VolumeCatalog } from '../src/volume-server/catalog.js';
import { LmdbIndex } from '../src/volume-server/index/lmdb.js';
import { RedisSharedVolumes } from '../src/volume-server/shared.js';
import type { BlobStore } from '../src/volume-server/store/interface.js';
import { LocalBlobStore } from '../src/volume-server/store/local.js';
import { parseVersionRecord, versionKey } from '../src/volume-server/versions.js';
import { expectFailure } from './support/checks.js';
import { removeScratch, scratchDir, waitFor } from './support/faults.js';
import { runCli, spawnStowage, startS3rver, uniqueName, type ChildServer, type S3Server } from './support/processes.js';
import { startRedis, type RedisServer } from './support/redis.js';

const TOKEN = `stw_${randomBytes(24).toString('base64url')}`;
const S3_ENV = { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER' };
const log = createLogger('test');

let s3: S3Server;
let redis: RedisServer;
let prefix: string;
const servers: ChildServer[] = [];
const connections: Connection[] = [];

async function startServer(extra: string[] = []): Promise<ChildServer> {
  const dataDir = scratchDir('server');
  writeFileSync(join(dataDir, 'token'), `${TOKEN}\n`, { mode: 0o600 });
  const args = ['--s3-endpoint', s3.endpoint, '--s3-bucket', s3.bucket, '--s3-prefix', prefix, '--s3-region', 'us-east-1', '--redis-url', redis.url, ...extra];
  const server = await spawnStowage(dataDir, args, S3_ENV);
  servers.push(server);
  return server;
}

function connect(server: string): Connection {
  const c = new Connection({ server, token: TOKEN });
  connections.push(c);
  return c;
}

function rawCommit(conn: Connection, volume: string, commitId: string, puts: FileEntry[]): Promise<CommitResponse> {
  return conn.clientStream<CommitRequest, CommitResponse>((cb) => conn.volumes.commit(cb), [
    { volume, puts, removes: [], copies: [], force: false, commitId },
  ]);
}

beforeAll(async () => {
  s3 = await startS3rver({ dir: scratchDir('s3rver') });
  redis = await startRedis(scratchDir('redis'));
  prefix = uniqueName('shared');
  for (let i = 0; i < 3; i++) await startServer();
}, 60_000);

afterAll(async () => {
  for (const c of connections) c.close();
  for (const s of servers) await s.kill();
  await redis?.stop();
  await s3?.stop();
  removeScratch();
}, 60_000);

describe('volume servers sharing one bucket and one Redis', () => {
  it('a commit acknowledged by one server is served at once by the others, byte for byte', async () => {
    const [a, b, c] = servers.map((s) => connect(s.address));
    const name = uniqueName('seen');
    const onA = await Volume.fromName(name, { createIfMissing: true, connection: a });
    const data = randomBytes(300_000);
    for (let i = 1; i <= 3; i++) {
      const put = await onA.batchUpload().putFile(data.subarray(0, 100_000 * i), `f${i}.bin`).commit();
      expect(put.version).toBe(i);
      // No wait: the next call on another server already sees it.
      const onB = await Volume.fromName(name, { connection: b! });
      expect((await onB.info()).latestVersion).toBe(i);
      expect(sha256(await onB.readBytes(`f${i}.bin`))).toBe(sha256(data.subarray(0, 100_000 * i)));
      const onC = await Volume.fromName(name, { connection: c! });
      expect((await onC.versions()).map((v) => v.version)).toEqual(Array.from({ length: i }, (_, k) => k + 1));
    }
  });

  it('a name means one volume on every server: create, rename and delete through different servers', async () => {
    const [a, b, c] = servers.map((s) => connect(s.address));
    const name = uniqueName('name');
    const renamed = uniqueName('renamed');
    await Volume.fromName(name, { createIfMissing: true, connection: a });
    await expectFailure(() => b!.unary(b!.volumes.createVolume.bind(b!.volumes), { name, ephemeral: false, existOk: false }), AlreadyExistsError, 'ALREADY_EXISTS', /already exists/);
    // createIfMissing on another server finds the same volume.
    const again = await b!.unary(b!.volumes.createVolume.bind(b!.volumes), { name, ephemeral: false, existOk: true });
    const first = await a!.unary(a!.volumes.getVolume.bind(a!.volumes), { name });
    expect(again.id).toBe(first.id);

    await Volume.rename(name, renamed, { connection: b });
    await expectFailure(() => Volume.fromName(name, { connection: a }), NotFoundError, 'NOT_FOUND', /not found/);
    expect((await a!.unary(a!.volumes.getVolume.bind(a!.volumes), { name: renamed })).id).toBe(first.id);
    expect((await Volume.list({ connection: c })).map((v) => v.name)).toContain(renamed);

    await Volume.delete(renamed, { connection: c });
    await expectFailure(() => Volume.fromName(renamed, { connection: a }), NotFoundError, 'NOT_FOUND', /not found/);
    expect((await Volume.list({ connection: b })).map((v) => v.name)).not.toContain(renamed);
    // The name is free again, everywhere.
    const reborn = await Volume.fromName(renamed, { createIfMissing: true, connection: a });
    expect((await reborn.info()).id).not.toBe(first.id);
  });

  it('a commit retried with its id lands once, through any server', async () => {
    const [a, b] = servers.map((s) => connect(s.address));
    const name = uniqueName('retry');
    await Volume.fromName(name, { createIfMissing: true, connection: a });
    const content = Buffer.from('landed once');
    const vol = await Volume.fromName(name, { connection: a });
    await vol.batchUpload().putFile(content, 'seed.txt').commit();
    expect((await vol.stat('seed.txt')).size).toBe(content.length);
    // A put of an existing file's extents under a new path, sent twice with one id.
    const seed = await a!.unary(a!.volumes.getFile.bind(a!.volumes), { volume: name, path: 'seed.txt', version: 0, presign: false });
    const put: FileEntry = { ...seed.entry!, path: 'copy.txt' };
    const id = randomUUID();
    const one = await rawCommit(a!, name, id, [put]);
    const two = await rawCommit(b!, name, id, [put]);
    expect(two.version).toBe(one.version);
    expect(await (await Volume.fromName(name, { connection: b })).versions()).toHaveLength(2);
    // Without the id the same put is a second commit, which finds the file there.
    await expectFailure(() => rawCommit(b!, name, '', [put]), AlreadyExistsError, 'ALREADY_EXISTS', /copy\.txt/);
    await expectFailure(() => rawCommit(b!, name, 'not an id!', [put]), InvalidArgumentError, 'INVALID_ARGUMENT', /invalid commit id/);
  });

  it('commits from 8 clients through different servers all land, each once, in one order seen by all', async () => {
    const list = servers.map((s) => s.address).join(',');
    const name = uniqueName('race');
    await Volume.fromName(name, { createIfMissing: true, connection: connect(servers[0]!.address) });
    const perClient = 4;
    const landed = await Promise.all(
      Array.from({ length: 8 }, async (_, i) => {
        const vol = await Volume.fromName(name, { connection: connect(list) });
        const versions: number[] = [];
        for (let j = 0; j < perClient; j++) versions.push((await vol.batchUpload().putFile(Buffer.from(`${i}/${j}`), `c${i}/f${j}.txt`).commit()).version);
        return versions;
      }),
    );
    const all = landed.flat().sort((x, y) => x - y);
    expect(all).toEqual(Array.from({ length: 8 * perClient }, (_, k) => k + 1));
    for (const s of servers) {
      const vol = await Volume.fromName(name, { connection: connect(s.address) });
      expect((await vol.info()).latestVersion).toBe(8 * perClient);
      expect((await vol.listdir('/', { recursive: true })).filter((f) => f.type === 'file')).toHaveLength(8 * perClient);
    }
  }, 120_000);

  it('one of three servers SIGKILLed during 8 clients\' commit loops: every acknowledged commit is on every server, and no client sees a version go back', async () => {
    const victim = await startServer();
    const live = servers.filter((s) => s !== victim && servers.indexOf(s) < 3).slice(0, 2);
    const list = [live[0]!.address, victim.address, live[1]!.address].join(',');
    const names = [uniqueName('kill-a'), uniqueName('kill-b')];
    for (const n of names) await Volume.fromName(n, { createIfMissing: true, connection: connect(live[0]!.address) });
    let killed = false;
    let acked = 0;
    const loops = Array.from({ length: 8 }, async (_, i) => {
      const vol = await Volume.fromName(names[i % 2]!, { connection: connect(list) });
      const mine: { path: string; version: number; data: string }[] = [];
      let seen = 0;
      for (let j = 0; (!killed || j < 12) && j < 40; j++) {
        const data = `${i}/${j}/${randomUUID()}`;
        const path = `c${i}/f${j}.txt`;
        const { version } = await vol.batchUpload().putFile(Buffer.from(data), path).commit();
        acked++;
        expect(version).toBeGreaterThan(seen);
        seen = version;
        const latest = (await vol.info()).latestVersion;
        expect(latest).toBeGreaterThanOrEqual(seen);
        seen = latest;
        mine.push({ path, version, data });
      }
      return { name: vol.name, mine };
    });
    for (const l of loops) l.catch(() => undefined); // awaited below; a failure before then is not unhandled
    await waitFor('the clients to have 16 commits acknowledged', () => (acked >= 16 ? true : undefined), 60_000);
    await victim.kill('SIGKILL');
    killed = true;
    const results = await Promise.all(loops);
    for (const s of live) {
      const conn = connect(s.address);
      for (const { name, mine } of results) {
        const vol = await Volume.fromName(name, { connection: conn });
        for (const m of mine) expect((await vol.readBytes(m.path)).toString()).toBe(m.data);
      }
    }
    // Each commit landed once: the versions of a volume are its acknowledged commits, no more.
    for (const n of names) {
      const count = results.filter((r) => r.name === n).reduce((k, r) => k + r.mine.length, 0);
      expect((await Volume.fromName(n, { connection: connect(live[1]!.address) }).then((v) => v.info())).latestVersion).toBe(count);
    }
  }, 180_000);

  it('Redis not answering: commits fail with UNAVAILABLE naming it, committed data is still read, and commits work again when it answers', async () => {
    const [a, b] = servers.slice(0, 2).map((s) => connect(s.address));
    const name = uniqueName('redis-down');
    const onA = await Volume.fromName(name, { createIfMissing: true, connection: a });
    const data = randomBytes(200_000);
    await onA.batchUpload().putFile(data, 'kept.bin').commit();
    const onB = await Volume.fromName(name, { connection: b });
    expect(sha256(await onB.readBytes('kept.bin'))).toBe(sha256(data));
    process.kill(redis.pid, 'SIGSTOP');
    try {
      // Sent once (the SDK would retry it for about 12 s): the server waits up to 3 s for Redis.
      const seed = await a!.unary(a!.volumes.getFile.bind(a!.volumes), { volume: name, path: 'kept.bin', version: 0, presign: false });
      await expectFailure(
        () => rawCommit(a!, name, randomUUID(), [{ ...seed.entry!, path: 'new.txt' }]),
        UnavailableError,
        'UNAVAILABLE',
        new RegExp(`redis at redis://127\\.0\\.0\\.1:${redis.port}, which holds the volumes' heads, is unavailable`),
      );
      expect(sha256(await onA.readBytes('kept.bin'))).toBe(sha256(data));
      expect(sha256(await onB.readBytes('kept.bin'))).toBe(sha256(data));
      expect((await onB.info()).latestVersion).toBe(1);
    } finally {
      process.kill(redis.pid, 'SIGCONT');
    }
    const put = await onA.batchUpload().putFile(Buffer.from('new'), 'new.txt').commit();
    expect(put.version).toBe(2);
    expect((await onB.readBytes('new.txt')).toString()).toBe('new');
  }, 120_000);

  it('a scoped token made on one server works on every server, and its revocation on another reaches them all', async () => {
    const [a, b, c] = servers.slice(0, 3).map((s) => connect(s.address));
    const name = uniqueName('scoped');
    await (await Volume.fromName(name, { createIfMissing: true, connection: a })).batchUpload().putFile(Buffer.from('x'), 'x.txt').commit();
    const { token, info } = await createToken({ scopes: [`volume:${name}:read`], ttlMs: 3600_000, connection: a });
    const onB = new Connection({ server: servers[1]!.address, token });
    const onC = new Connection({ server: servers[2]!.address, token });
    connections.push(onB, onC);
    // Known on the others when Redis tells them: within milliseconds, or at their next reload (5 s).
    await waitFor('the token to work on server B', async () => ((await Volume.fromName(name, { connection: onB }).then((v) => v.readBytes('x.txt'), () => undefined))?.toString() === 'x' ? true : undefined), 10_000);
    expect((await (await Volume.fromName(name, { connection: onC })).readBytes('x.txt')).toString()).toBe('x');
    await expectFailure(() => Volume.fromName(uniqueName('other'), { createIfMissing: true, connection: onB }), PermissionDeniedError, 'PERMISSION_DENIED', /volume:/);
    await revokeToken(info.id, { connection: c });
    for (const conn of [onB, onC]) {
      await waitFor('the revocation to reach every server', () => Volume.fromName(name, { connection: conn }).then(() => undefined, (err: unknown) => (err instanceof UnauthenticatedError ? err : undefined)), 10_000);
    }
    await expectFailure(() => Volume.fromName(name, { connection: onB }), UnauthenticatedError, 'UNAUTHENTICATED', /revoked/);
    void b;
  });

  it('a head whose committer died before storing its version record is stored by the next server to build on it', async () => {
    const dir = scratchDir('store');
    const shared = [await RedisSharedVolumes.connect(redis.url, uniqueName('in-process')), await RedisSharedVolumes.connect(redis.url, uniqueName('unused'))];
    const heads = shared[0]!;
    let failRecords = true;
    const plain = new LocalBlobStore(dir);
    // A's store loses every version record it writes: as if A died right after moving the head.
    const dying: BlobStore = Object.assign(Object.create(plain) as BlobStore, {
      put: (key: string, data: Uint8Array) => (failRecords && key.startsWith('versions/') ? Promise.reject(new UnavailableError('died')) : plain.put(key, data)),
    });
    const a = new VolumeCatalog(dying, new LmdbIndex(join(scratchDir('index-a'), 'index'), log), log, { shared: heads });
    const b = new VolumeCatalog(plain, new LmdbIndex(join(scratchDir('index-b'), 'index'), log), log, { shared: heads });
    try {
      await a.init();
      await b.init();
      const name = uniqueName('repair');
      const { id } = await a.createVolume(name, false, false);
      const one = async function* () {
        yield [{ path: 'x.txt', type: FileType.FILE_TYPE_FILE, size: 0, mode: 0o644, mtimeMs: 1, extents: [], id: 0, tree: '' }] as FileEntry[];
      };
      await expectFailure(() => a.commit({ volume: name, removes: [], copies: [], force: false, commitId: 'c1' }, one()), UnavailableError, 'UNAVAILABLE', /died/);
      expect(await plain.head(versionKey(id, 1))).toBeUndefined();
      // The head moved: B sees version 1, and a retry of that commit through B lands nothing new.
      expect((await b.getVolume(name)).latestVersion).toBe(1);
      expect((await b.commit({ volume: name, removes: [], copies: [], force: false, commitId: 'c1' }, one())).version).toBe(1);
      expect(await plain.head(versionKey(id, 1))).toBeGreaterThan(0);
      failRecords = false;
      const two = async function* () {
        yield [{ path: 'y.txt', type: FileType.FILE_TYPE_FILE, size: 0, mode: 0o644, mtimeMs: 1, extents: [], id: 0, tree: '' }] as FileEntry[];
      };
      expect((await b.commit({ volume: name, removes: [], copies: [], force: false }, two())).version).toBe(2);
      expect(parseVersionRecord(versionKey(id, 1), await plain.get(versionKey(id, 1))).commitId).toBe('c1');
    } finally {
      for (const c of [a, b]) {
        await c.close();
        await c.index.close();
      }
      for (const s of shared) await s.close();
    }
  });

  it('a server list that is not HOST:PORT,HOST:PORT is refused before any call, naming the bad entry; one of unknown names fails UNAVAILABLE', async () => {
    for (const [list, bad] of [
      [`${servers[0]!.address},nope`, 'nope'],
      [`${servers[0]!.address},host:99999`, 'host:99999'],
      [`${servers[0]!.address},`, ''],
    ] as const) {
      expect(() => new Connection({ server: list, token: TOKEN })).toThrow(new RegExp(`server "${bad}" in ".*" is not HOST:PORT`));
    }
    const nowhere = connect('no-such-host.invalid:7420,also-not.invalid:7420');
    await expectFailure(() => Volume.list({ connection: nowhere }), UnavailableError, 'UNAVAILABLE', /could be looked up|unreachable/);
  });

  it('refuses --heads redis without a Redis or without a bucket, and an unknown --heads', async () => {
    const dataDir = scratchDir('refused');
    const noRedis = await runCli(['serve', '--data-dir', dataDir, '--port', '0', '--heads', 'redis'], {});
    expect(noRedis.code).not.toBe(0);
    expect(noRedis.stderr).toMatch(/--heads redis needs --redis-url/);
    const bogus = await runCli(['serve', '--data-dir', dataDir, '--port', '0', '--heads', 'etcd'], {});
    expect(bogus.code).not.toBe(0);
    expect(bogus.stderr).toMatch(/--heads "etcd": choose from local, redis/);
    const localStore = await runCli(['serve', '--data-dir', dataDir, '--port', '0', '--heads', 'redis', '--redis-url', redis.url], {});
    expect(localStore.code).not.toBe(0);
    expect(localStore.stderr).toMatch(/heads in Redis are for servers sharing one bucket: give --s3-bucket too/);
  });
});
