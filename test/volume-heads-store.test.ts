/**
 * Shared heads in the store itself (`--heads s3`, volume-server/store-heads.ts):
 * refused on an S3 that does not enforce conditional writes (s3rver), and,
 * on a store that does (the local directory's exclusive create), two
 * catalogues with indexes of their own over one store behave as servers
 * sharing a bucket: one name space, commits through either land once each in
 * one order, each sees the other's at its next call, and a commit retried
 * with its id lands once. Scoped tokens kept in the same store reach the
 * other server at its next reload.
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AlreadyExistsError, FailedPreconditionError, NotFoundError } from '../src/common/errors.js';
import { createLogger } from '../src/common/logger.js';
import { FileType, type FileEntry } from '../src/gen/stowage/v1/volume.js';
import { VolumeCatalog } from '../src/volume-server/catalog.js';
import { LmdbIndex } from '../src/volume-server/index/lmdb.js';
import { S3BlobStore } from '../src/volume-server/store/s3.js';
import { LocalBlobStore } from '../src/volume-server/store/local.js';
import { StoreSharedHeads } from '../src/volume-server/store-heads.js';
import { TokenStore } from '../src/common/tokens.js';
import { StoreTokenRecords } from '../src/server/store-tokens.js';
import { expectFailure } from './support/checks.js';
import { removeScratch, scratchDir, waitFor } from './support/faults.js';
import { runCli, startS3rver, uniqueName, type S3Server } from './support/processes.js';

const log = createLogger('test');
let s3: S3Server;
const catalogs: VolumeCatalog[] = [];

function empty(path: string): FileEntry {
  return { path, type: FileType.FILE_TYPE_FILE, size: 0, mode: 0o644, mtimeMs: 1, extents: [], id: 0, tree: '' };
}

async function* once(entries: FileEntry[]): AsyncGenerator<FileEntry[]> {
  yield entries;
}

async function commit(c: VolumeCatalog, volume: string, paths: string[], commitId?: string) {
  return c.commit({ volume, removes: [], copies: [], force: false, commitId }, once(paths.map(empty)));
}

/** 'ok', or why the token is refused. */
function tryAuth(tokens: TokenStore, bearer: string): string {
  try {
    tokens.authenticate(bearer);
    return 'ok';
  } catch (err) {
    return (err as Error).message;
  }
}

async function catalogOn(store: LocalBlobStore): Promise<VolumeCatalog> {
  const shared = await StoreSharedHeads.open(store);
  const c = new VolumeCatalog(store, new LmdbIndex(join(scratchDir('index'), 'index'), log), log, { shared });
  await c.init();
  catalogs.push(c);
  return c;
}

beforeAll(async () => {
  s3 = await startS3rver({ dir: scratchDir('s3rver') });
}, 30_000);

afterAll(async () => {
  for (const c of catalogs) {
    await c.close();
    await c.index.close();
  }
  await s3?.stop();
  removeScratch();
});

describe('volume heads in the store, by conditional writes', () => {
  it('is refused on an S3 that does not enforce If-None-Match (s3rver), at start and with a message saying so', async () => {
    const store = new S3BlobStore(s3.storeOptions());
    await expectFailure(() => StoreSharedHeads.open(store), FailedPreconditionError, 'FAILED_PRECONDITION', /does not enforce them/, /--redis-url/);
    const r = await runCli(
      ['serve', '--data-dir', scratchDir('refused'), '--port', '0', '--heads', 's3', '--s3-endpoint', s3.endpoint, '--s3-bucket', s3.bucket, '--s3-prefix', uniqueName('p'), '--s3-region', 'us-east-1'],
      { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER' },
    );
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/--heads s3 needs a store that enforces conditional writes, and s3:\/\/.* does not enforce them/);
  });

  it('two catalogues over one store that enforces them: one name space, every commit lands once, each sees the other at once', async () => {
    const store = new LocalBlobStore(scratchDir('store'));
    const a = await catalogOn(store);
    const b = await catalogOn(store);
    const name = uniqueName('heads');
    await a.createVolume(name, false, false);
    await expectFailure(() => b.createVolume(name, false, false), AlreadyExistsError, 'ALREADY_EXISTS', /already exists/);
    expect((await b.createVolume(name, false, true)).id).toBe((await a.getVolume(name)).id);

    expect((await commit(a, name, ['one.txt'])).version).toBe(1);
    expect((await b.getVolume(name)).latestVersion).toBe(1);
    expect((await b.stat(name, 'one.txt', 0)).version).toBe(1);

    // Racing commits through both: each lands once, versions 2..21 in one order.
    const landed = await Promise.all(Array.from({ length: 20 }, (_, i) => commit(i % 2 ? a : b, name, [`race/${i}.txt`]).then((r) => r.version)));
    expect(landed.sort((x, y) => x - y)).toEqual(Array.from({ length: 20 }, (_, i) => i + 2));
    for (const c of [a, b]) {
      expect((await c.getVolume(name)).latestVersion).toBe(21);
      expect((await c.listVersions(name)).map((v) => v.version)).toEqual(Array.from({ length: 21 }, (_, i) => i + 1));
    }

    // A retry with the commit's id, through the other one, lands nothing new.
    const id = randomUUID();
    const first = await commit(a, name, ['retried.txt'], id);
    expect((await commit(b, name, ['retried.txt'], id)).version).toBe(first.version);
    expect((await a.getVolume(name)).latestVersion).toBe(first.version);

    const renamed = uniqueName('renamed');
    await b.renameVolume(name, renamed);
    await expectFailure(() => a.getVolume(name), NotFoundError, 'NOT_FOUND', /not found/);
    expect((await a.getVolume(renamed)).latestVersion).toBe(first.version);
    expect((await a.listVolumes(false)).map((v) => v.name)).toContain(renamed);
    await a.deleteVolume(renamed);
    await expectFailure(() => b.getVolume(renamed), NotFoundError, 'NOT_FOUND', /not found/);
  }, 60_000);

  it('scoped tokens in the store: one made through one server works on the other after its reload, and so does a revocation', async () => {
    const store = new LocalBlobStore(scratchDir('store'));
    const admin = `stw_${randomUUID()}`;
    const [a, b] = [new TokenStore(scratchDir('data-a'), admin), new TokenStore(scratchDir('data-b'), admin)];
    try {
      // A reload that fails is retried at the next one (as the server only logs it).
      for (const t of [a, b]) await t.share(new StoreTokenRecords(store), () => undefined, 100);
      const { token, info } = await a.create(['volume:data*:read'], 3600_000);
      const bearer = `Bearer ${token}`;
      expect(a.authenticate(bearer).id).toBe(info.id);
      await waitFor('B to know the token', () => (tryAuth(b, bearer) === 'ok' ? true : undefined), 5_000);
      await b.revoke(info.id);
      expect(tryAuth(b, bearer)).toMatch(/revoked/);
      await waitFor('A to know of the revocation', () => (/revoked/.test(tryAuth(a, bearer)) ? true : undefined), 5_000);
      // A second token with the id of one that exists cannot be made: the create is conditional.
      expect(await new StoreTokenRecords(store).add({ ...(await new StoreTokenRecords(store).get(info.id))!, revokedAtMs: 0 })).toBe(false);
    } finally {
      await a.close();
      await b.close();
    }
  });
});
