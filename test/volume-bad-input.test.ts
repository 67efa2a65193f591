/**
 * Bad input to volumes: every refusal is a typed error whose message says what
 * to do, and a refused call leaves the volume exactly as it was. The SDK checks
 * names and paths before sending; the same input sent raw over gRPC proves the
 * server refuses it too. Runs on the local-directory store and on S3 (s3rver).
 */
import { credentials } from '@grpc/grpc-js';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AlreadyExistsError,
  Connection,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  UnauthenticatedError,
  Volume,
} from '../src/client/index.js';
import { sha256 } from '../src/common/hash.js';
import { fromGrpcError } from '../src/common/grpc-errors.js';
import { FileType, VolumeServiceClient, type CommitRequest, type CommitResponse, type FileEntry } from '../src/gen/stowage/v1/volume.js';
import { drain, expectFailure, failureOf, versionKeys, snapshot } from './support/checks.js';
import { removeScratch, scratchDir, startSetup, writeRandomFile, type Setup, type StoreKind } from './support/faults.js';
import { runCli, uniqueName } from './support/processes.js';

const MiB = 1024 * 1024;

afterAll(removeScratch);

const BAD_NAMES: [label: string, name: string][] = [
  ['empty', ''],
  ['65 characters', 'v'.repeat(65)],
  ['a space', 'my volume'],
  ['a slash', 'a/b'],
  ['".."', '..'],
];
const NAME_ADVICE = /invalid volume name .*use 1 to 64 characters from A-Z a-z 0-9 \. _ -/;

/** 17 components of 250 bytes: each under 255, 4266 bytes in all. */
const LONG_PATH = Array.from({ length: 17 }, (_, i) => `${i % 10}`.repeat(250)).join('/');

const BAD_PATHS: [label: string, path: string, says: RegExp][] = [
  ['".." inside', 'dir/../keep.txt', /"\.\." is not allowed in volume paths/],
  ['".." alone', '..', /"\.\." is not allowed in volume paths/],
  ['a NUL byte', 'dir/a\0b.txt', /contains a NUL byte/],
  ['a component over 255 bytes', `dir/${'x'.repeat(256)}`, /256 bytes, over the limit of 255/],
  ['a component over 255 bytes in UTF-8', `dir/${'é'.repeat(128)}`, /256 bytes, over the limit of 255/],
  ['a path over 4096 bytes', LONG_PATH, /4266 bytes is over the limit of 4096/],
];

/** A volume with a packed small file, a nested file and a one-chunk file. */
async function seedVolume(conn: Connection): Promise<Volume> {
  const vol = await Volume.fromName(uniqueName('bad-input'), { createIfMissing: true, connection: conn });
  await vol
    .batchUpload()
    .putFile(Buffer.from('keep me'), 'keep.txt')
    .putFile(Buffer.from('inside'), 'dir/inner.txt')
    .putFile(randomBytes(2 * MiB), 'big.bin')
    .commit();
  return vol;
}

function entryOf(conn: Connection, volume: string, path: string): Promise<FileEntry> {
  return conn
    .unary(conn.volumes.getFile.bind(conn.volumes), { volume, path, version: 0, presign: false })
    .then((r) => r.entry!);
}

function rawCommit(conn: Connection, req: { volume: string; puts?: FileEntry[]; removes?: { path: string; recursive: boolean }[]; copies?: { srcs: string[]; dst: string }[]; force?: boolean }) {
  return conn.clientStream<CommitRequest, CommitResponse>((cb) => conn.volumes.commit(cb), [
    {
      volume: req.volume,
      puts: req.puts ?? [],
      removes: req.removes ?? [],
      copies: (req.copies ?? []).map((c) => ({ ...c, filesOnly: false })),
      force: req.force ?? false,
      commitId: '',
    },
  ]);
}

describe.each<StoreKind>(['local', 's3'])('bad input to volumes (%s store)', (kind) => {
  let setup: Setup;
  let conn: Connection;
  beforeAll(async () => {
    setup = await startSetup(kind);
    conn = setup.stowage.connection;
  });
  afterAll(async () => {
    await setup?.stop();
  });

  it('refuses volume names outside [A-Za-z0-9._-]{1,64}, in the SDK and in the server', async () => {
    const before = (await Volume.list({ connection: conn })).map((v) => v.name);
    const good = await Volume.fromName(uniqueName('names'), { createIfMissing: true, connection: conn });
    const vols = conn.volumes;
    for (const [, name] of BAD_NAMES) {
      await expectFailure(() => Volume.fromName(name, { connection: conn }), InvalidArgumentError, 'INVALID_ARGUMENT', NAME_ADVICE);
      await expectFailure(() => Volume.fromName(name, { createIfMissing: true, connection: conn }), InvalidArgumentError, 'INVALID_ARGUMENT', NAME_ADVICE);
      await expectFailure(() => Volume.rename(good.name, name, { connection: conn }), InvalidArgumentError, 'INVALID_ARGUMENT', NAME_ADVICE);
      await expectFailure(() => Volume.delete(name, { connection: conn }), InvalidArgumentError, 'INVALID_ARGUMENT', NAME_ADVICE);
      // Raw, past the SDK's own check.
      await expectFailure(
        () => conn.unary(vols.createVolume.bind(vols), { name, ephemeral: false, existOk: true }),
        InvalidArgumentError,
        'INVALID_ARGUMENT',
        NAME_ADVICE,
      );
      await expectFailure(() => conn.unary(vols.renameVolume.bind(vols), { name: good.name, newName: name }), InvalidArgumentError, 'INVALID_ARGUMENT', NAME_ADVICE);
    }
    // The limit is exactly 64: the longest valid name works.
    const longest = `${uniqueName('n')}-`.padEnd(64, 'x');
    await Volume.fromName(longest, { createIfMissing: true, connection: conn });
    const after = (await Volume.list({ connection: conn })).map((v) => v.name);
    expect(after.sort()).toEqual([...before, good.name, longest].sort());
    expect((await good.info()).name).toBe(good.name);
  });

  it('refuses bad paths in every SDK call and changes nothing', async () => {
    const vol = await seedVolume(conn);
    const before = await snapshot(vol);
    const versionRecords = await versionKeys(setup.stowage.server.store);
    const local = scratchDir('bad-path-download');
    for (const [label, path, says] of BAD_PATHS) {
      const fail = (fn: () => unknown) =>
        expectFailure(fn, InvalidArgumentError, 'INVALID_ARGUMENT', /invalid path/, says).catch((err: unknown) => {
          throw new Error(`path with ${label}: ${String(err)}`);
        });
      await fail(() => vol.batchUpload().putFile(Buffer.from('new'), path));
      await fail(() => vol.batchUpload().putDirectory(local, path));
      await fail(() => drain(vol.readFile(path)));
      await fail(() => vol.readBytes(path));
      await fail(() => vol.listdir(path));
      await fail(() => vol.stat(path));
      await fail(() => vol.download(path, join(local, 'out')));
      await fail(() => vol.removeFile(path, { recursive: true }));
      await fail(() => vol.copyFiles([path], 'copied'));
      await fail(() => vol.copyFiles(['keep.txt'], path));
    }
    expect(await snapshot(vol)).toEqual(before);
    expect(await versionKeys(setup.stowage.server.store)).toEqual(versionRecords);
    expect(existsSync(join(local, 'out'))).toBe(false);
    expect((await vol.readBytes('keep.txt')).toString()).toBe('keep me');

    // The limits are exact: a 255-byte component and a 4096-byte path are fine.
    const longest = Array.from({ length: 17 }, (_, i) => `${i % 10}`.repeat(240)).join('/');
    expect(Buffer.byteLength(longest)).toBe(4096);
    await vol.batchUpload().putFile(Buffer.from('a'), `ok/${'z'.repeat(255)}`).putFile(Buffer.from('b'), longest).commit();
    expect((await vol.readBytes(longest)).toString()).toBe('b');
  });

  it('refuses a copy whose resulting paths would be over 4096 bytes', async () => {
    const vol = await seedVolume(conn);
    const before = await snapshot(vol);
    // "dir/inner.txt" lands at <dst>/dir/inner.txt: 4085 + 14 bytes, over the limit.
    const dst = [...Array.from({ length: 16 }, () => 'c'.repeat(250)), 'c'.repeat(69)].join('/');
    expect(Buffer.byteLength(dst)).toBe(4085);
    await expectFailure(() => vol.copyFiles(['dir'], `${dst}/`), InvalidArgumentError, 'INVALID_ARGUMENT', /over the limit of 4096/);
    expect(await snapshot(vol)).toEqual(before);
  });

  it('the server refuses bad paths sent raw over gRPC', async () => {
    const vol = await seedVolume(conn);
    const before = await snapshot(vol);
    const versionRecords = await versionKeys(setup.stowage.server.store);
    const keep = await entryOf(conn, vol.name, 'keep.txt');
    const vols = conn.volumes;
    for (const [label, path, says] of BAD_PATHS) {
      const fail = (what: string, fn: () => unknown) =>
        expectFailure(fn, InvalidArgumentError, 'INVALID_ARGUMENT', /invalid path/, says).catch((err: unknown) => {
          throw new Error(`${what} with ${label}: ${String(err)}`);
        });
      // A valid entry (its chunk is stored) whose only fault is the path.
      await fail('put', () => rawCommit(conn, { volume: vol.name, puts: [{ ...keep, path }] }));
      await fail('forced put', () => rawCommit(conn, { volume: vol.name, puts: [{ ...keep, path }], force: true }));
      await fail('remove', () => rawCommit(conn, { volume: vol.name, removes: [{ path, recursive: true }] }));
      await fail('copy from', () => rawCommit(conn, { volume: vol.name, copies: [{ srcs: [path], dst: 'copied' }] }));
      await fail('copy to', () => rawCommit(conn, { volume: vol.name, copies: [{ srcs: ['keep.txt'], dst: path }] }));
      await fail('getFile', () => conn.unary(vols.getFile.bind(vols), { volume: vol.name, path, version: 0, presign: false }));
      await fail('stat', () => conn.unary(vols.stat.bind(vols), { volume: vol.name, path, version: 0 }));
      await fail('listFiles', async () => {
        for await (const _ of conn.stream(vols.listFiles({ volume: vol.name, path, recursive: true, version: 0, pageSize: 0, pageToken: '', withoutExtents: false }))) {
          // the first message or the failure is enough
        }
      });
    }
    expect(await snapshot(vol)).toEqual(before);
    expect(await versionKeys(setup.stowage.server.store)).toEqual(versionRecords);
  });

  it('pages a raw listing of "/dir/" on with its own token, and refuses a file of more chunks than a tree page holds', async () => {
    const vol = await seedVolume(conn);
    await vol.batchUpload().putFile(Buffer.from('two'), 'dir/second.txt').commit();
    const vols = conn.volumes;
    const page = async (pageToken: string): Promise<{ paths: string[]; next: string }> => {
      const paths: string[] = [];
      let next = '';
      for await (const b of conn.stream(vols.listFiles({ volume: vol.name, path: '/dir/', recursive: false, version: 0, pageSize: 1, pageToken, withoutExtents: true }))) {
        paths.push(...b.entries.map((e) => e.path));
        if (b.nextPageToken) next = b.nextPageToken;
      }
      return { paths, next };
    };
    const first = await page('');
    expect(first.paths).toEqual(['dir/inner.txt']);
    expect(await page(first.next)).toEqual({ paths: ['dir/second.txt'], next: '' });

    const keep = await entryOf(conn, vol.name, 'keep.txt');
    const before = await snapshot(vol);
    // keep.txt is packed with the others (a part of a blob: 79 bytes in a page), so 209,000 of them overflow one.
    expect(keep.extents[0]!.blob).not.toBe(keep.extents[0]!.hash);
    const many = Array.from({ length: 209_000 }, () => keep.extents[0]!);
    await expectFailure(
      () => rawCommit(conn, { volume: vol.name, puts: [{ ...keep, path: 'huge.bin', size: keep.size * many.length, extents: many }] }),
      InvalidArgumentError,
      'INVALID_ARGUMENT',
      /huge\.bin" has 209000 chunks, more than one file may have .*larger chunkSize/,
    );
    expect(await snapshot(vol)).toEqual(before);
  });

  it('refuses a put onto an existing file without force, before any chunk moves', async () => {
    const vol = await seedVolume(conn);
    const before = await snapshot(vol);
    const original = await vol.readBytes('big.bin');
    const replacement = randomBytes(3 * MiB);
    await setup.s3?.resetStats();

    await expectFailure(
      () => vol.batchUpload().putFile(replacement, 'big.bin').commit(),
      AlreadyExistsError,
      'ALREADY_EXISTS',
      /"big\.bin" already exists in volume/,
      /overwrite it with: stowage volume put -f, or force: true/,
    );
    // One existing path fails the whole batch: the new file is not added either.
    await expectFailure(
      () => vol.batchUpload().putFile(randomBytes(2 * MiB), 'fresh.bin').putFile(replacement, 'big.bin').commit(),
      AlreadyExistsError,
      'ALREADY_EXISTS',
      /stowage volume put -f/,
    );
    if (setup.s3) {
      const stats = await setup.s3.stats();
      expect(stats['PUT chunks'] ?? 0, JSON.stringify(stats)).toBe(0);
    }
    // The server enforces it too, for a client that skips the check.
    const other = await entryOf(conn, vol.name, 'keep.txt');
    await expectFailure(
      () => rawCommit(conn, { volume: vol.name, puts: [{ ...other, path: 'big.bin' }] }),
      AlreadyExistsError,
      'ALREADY_EXISTS',
      /"big\.bin" already exists/,
      /stowage volume put -f/,
    );
    expect(await snapshot(vol)).toEqual(before);
    expect((await vol.readBytes('big.bin')).equals(original)).toBe(true);

    // With force the same put goes through: the refusal was about force alone.
    const res = await vol.batchUpload({ force: true }).putFile(replacement, 'big.bin').commit();
    expect(res.version).toBe(before.latestVersion + 1);
    expect(sha256(await vol.readBytes('big.bin'))).toBe(sha256(replacement));
  });

  it('missing volumes, files and versions are NOT_FOUND with the command that helps', async () => {
    const missing = uniqueName('missing');
    await expectFailure(
      () => Volume.fromName(missing, { connection: conn }),
      NotFoundError,
      'NOT_FOUND',
      new RegExp(`volume "${missing}" not found \\(create it with: stowage volume create ${missing}\\)`),
    );
    await expectFailure(() => Volume.delete(missing, { connection: conn }), NotFoundError, 'NOT_FOUND', /stowage volume create/);
    await expectFailure(() => Volume.rename(missing, uniqueName(), { connection: conn }), NotFoundError, 'NOT_FOUND', /stowage volume create/);

    const vol = await seedVolume(conn);
    const before = await snapshot(vol);
    const local = scratchDir('missing-download');
    const lsHint = (dir: string) => new RegExp(`stowage volume ls ${vol.name} ${dir.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}`);
    const notFound = (fn: () => unknown, ...says: RegExp[]) => expectFailure(fn, NotFoundError, 'NOT_FOUND', ...says);
    await notFound(() => vol.readBytes('dir/nope.txt'), /"dir\/nope\.txt" not found in volume/, lsHint('dir'));
    await notFound(() => drain(vol.readFile('nope.txt')), lsHint('/'));
    await notFound(() => vol.stat('dir/nope.txt'), lsHint('dir'));
    await notFound(() => vol.listdir('nope/deeper'), lsHint('nope'));
    await notFound(() => vol.download('nope.txt', join(local, 'nope.txt')), lsHint('/'));
    await notFound(() => vol.removeFile('dir/nope.txt'), /cannot remove "dir\/nope\.txt": not found/, lsHint('dir'));
    await notFound(() => vol.copyFiles(['nope.txt'], 'copy.txt'), /cannot copy "nope\.txt": not found/, lsHint('/'));
    await notFound(() => vol.readBytes('keep.txt', { version: 99 }), /has no version 99/, new RegExp(`stowage volume versions ${vol.name}`));
    expect(await snapshot(vol)).toEqual(before);
    expect(existsSync(join(local, 'nope.txt'))).toBe(false);

    // A Volume whose volume was deleted since.
    await Volume.delete(vol.name, { connection: conn });
    await notFound(() => vol.readBytes('keep.txt'), new RegExp(`stowage volume create ${vol.name}`));
    await notFound(() => vol.batchUpload().putFile(Buffer.from('x'), 'x.txt').commit(), /stowage volume create/);
  });

  it('refuses a wrong or missing token and writes nothing', async () => {
    const vol = await seedVolume(conn);
    const before = await snapshot(vol);
    const server = setup.stowage.server.address;
    const advice = /missing or wrong token: set STOWAGE_TOKEN to the contents of the server's <data-dir>\/token/;

    const wrong = new Connection({ server, token: 'wrong' });
    try {
      await expectFailure(() => Volume.list({ connection: wrong }), UnauthenticatedError, 'UNAUTHENTICATED', advice);
      await expectFailure(() => Volume.fromName(vol.name, { connection: wrong }), UnauthenticatedError, 'UNAUTHENTICATED', advice);
      await expectFailure(() => Volume.fromName(uniqueName(), { createIfMissing: true, connection: wrong }), UnauthenticatedError, 'UNAUTHENTICATED', advice);
      await expectFailure(() => Volume.delete(vol.name, { connection: wrong }), UnauthenticatedError, 'UNAUTHENTICATED', advice);
      const keep = await entryOf(conn, vol.name, 'keep.txt');
      await expectFailure(() => rawCommit(wrong, { volume: vol.name, puts: [{ ...keep, path: 'sneaky.txt' }] }), UnauthenticatedError, 'UNAUTHENTICATED', advice);
      await expectFailure(
        () => wrong.clientStream((cb) => wrong.volumes.putBlob(cb), [{ hash: sha256(Buffer.from('z')), size: 1, data: Buffer.from('z') }]),
        UnauthenticatedError,
        'UNAUTHENTICATED',
        advice,
      );
    } finally {
      wrong.close();
    }

    // An empty token is refused before any call...
    await expectFailure(() => new Connection({ server, token: '' }), UnauthenticatedError, 'UNAUTHENTICATED', /no token for stowage server .*set STOWAGE_TOKEN/);
    // ...and a call without the header at all is refused by the server.
    const bare = new VolumeServiceClient(server, credentials.createInsecure());
    try {
      const err = await failureOf(
        () =>
          new Promise((resolve, reject) =>
            bare.listVolumes({ includeEphemeral: true }, (e, res) => (e ? reject(fromGrpcError(e, server)) : resolve(res))),
          ),
      );
      expect(err).toBeInstanceOf(UnauthenticatedError);
      expect((err as Error).message).toMatch(advice);
    } finally {
      bare.close();
    }

    expect(await snapshot(vol)).toEqual(before);
    expect((await Volume.list({ connection: conn })).map((v) => v.name)).toContain(vol.name);
  });

  it('refuses a commit that references chunks the store does not have', async () => {
    const vol = await seedVolume(conn);
    const before = await snapshot(vol);
    const versionRecords = await versionKeys(setup.stowage.server.store);
    const ghost = randomBytes(4096);
    const hash = sha256(ghost);
    const entry: FileEntry = {
      path: 'ghost.bin',
      type: FileType.FILE_TYPE_FILE,
      size: ghost.length,
      mode: 0o644,
      mtimeMs: Date.now(),
      extents: [{ blob: hash, offset: 0, length: ghost.length, hash }],
      id: 0,
      tree: '',
    };
    await expectFailure(
      () => rawCommit(conn, { volume: vol.name, puts: [entry] }),
      FailedPreconditionError,
      'FAILED_PRECONDITION',
      new RegExp(`commit refused: 1 chunk\\(s\\) are not in the store \\(first: ${hash}\\)`),
      /upload them before committing/,
    );
    // A stored (not yet committed) chunk that an extent reaches past the end of is just as missing.
    const short = randomBytes(1000);
    const shortHash = sha256(short);
    await conn.clientStream((cb) => conn.volumes.putBlob(cb), [
      { hash: shortHash, size: short.length, data: Buffer.alloc(0) },
      { hash: '', size: 0, data: short },
    ]);
    const past: FileEntry = { ...entry, path: 'past.bin', size: 1001, extents: [{ blob: shortHash, offset: 0, length: 1001, hash: shortHash }] };
    await expectFailure(() => rawCommit(conn, { volume: vol.name, puts: [past] }), FailedPreconditionError, 'FAILED_PRECONDITION', /upload them before committing/);

    expect(await snapshot(vol)).toEqual(before);
    expect(await versionKeys(setup.stowage.server.store)).toEqual(versionRecords);
    await expectFailure(() => vol.stat('ghost.bin'), NotFoundError, 'NOT_FOUND');

    // Once the chunk is uploaded the same commit goes through.
    await conn.clientStream((cb) => conn.volumes.putBlob(cb), [
      { hash, size: ghost.length, data: Buffer.alloc(0) },
      { hash: '', size: 0, data: ghost },
    ]);
    const res = await rawCommit(conn, { volume: vol.name, puts: [entry] });
    expect(res.version).toBe(before.latestVersion + 1);
    expect((await vol.readBytes('ghost.bin')).equals(ghost)).toBe(true);

    // A chunk that a committed version uses is no longer: an extent past its end is refused too.
    const beyond: FileEntry = { ...entry, path: 'beyond.bin', size: 4097, extents: [{ blob: hash, offset: 0, length: 4097, hash }] };
    await expectFailure(() => rawCommit(conn, { volume: vol.name, puts: [beyond] }), FailedPreconditionError, 'FAILED_PRECONDITION', /upload them before committing/);
    expect((await vol.info()).latestVersion).toBe(res.version);
  });
});

describe('bad input through the CLI (exit codes)', () => {
  let setup: Setup;
  let env: Record<string, string>;
  beforeAll(async () => {
    setup = await startSetup('local');
    env = { STOWAGE_SERVER: setup.stowage.server.address, STOWAGE_TOKEN: setup.stowage.server.token };
  });
  afterAll(async () => {
    await setup?.stop();
  });

  const INVALID = 2;
  const NOT_FOUND = 3;
  const ALREADY_EXISTS = 4;
  const UNAUTHENTICATED = 7;

  it('exits with the code of each error and says what to do; the volume is unchanged', async () => {
    const conn = setup.stowage.connection;
    const vol = await seedVolume(conn);
    const before = await snapshot(vol);
    const local = scratchDir('cli-bad-input');
    const file = join(local, 'upload.bin');
    await writeRandomFile(file, 2 * MiB);
    const out = join(local, 'out');
    const missing = uniqueName('missing');
    const cases: [args: string[], code: number, says: RegExp, extraEnv?: Record<string, string>][] = [
      [['volume', 'create', 'my volume'], INVALID, NAME_ADVICE],
      [['volume', 'create', 'v'.repeat(65)], INVALID, NAME_ADVICE],
      [['volume', 'put', vol.name, file, '../up.bin'], INVALID, /"\.\." is not allowed/],
      [['volume', 'put', vol.name, file, `dir/${'x'.repeat(256)}`], INVALID, /over the limit of 255/],
      [['volume', 'ls', vol.name, 'dir/../..'], INVALID, /"\.\." is not allowed/],
      [['volume', 'rm', vol.name, LONG_PATH], INVALID, /over the limit of 4096/],
      [['volume', 'cp', vol.name, 'keep.txt', '..'], INVALID, /"\.\." is not allowed/],
      [['volume', 'get', vol.name, '../keep.txt', out], INVALID, /"\.\." is not allowed/],
      [['volume', 'put', vol.name, file, 'big.bin'], ALREADY_EXISTS, /"big\.bin" already exists .*stowage volume put -f/],
      [['volume', 'ls', missing], NOT_FOUND, new RegExp(`stowage volume create ${missing}`)],
      [['volume', 'get', vol.name, 'dir/nope.txt', out], NOT_FOUND, new RegExp(`stowage volume ls ${vol.name} dir`)],
      [['volume', 'rm', vol.name, 'nope.txt'], NOT_FOUND, new RegExp(`stowage volume ls ${vol.name} /`)],
      [['volume', 'list'], UNAUTHENTICATED, /set STOWAGE_TOKEN/, { STOWAGE_TOKEN: 'wrong' }],
      [['volume', 'list'], UNAUTHENTICATED, /no token for stowage server .*set STOWAGE_TOKEN/, { STOWAGE_TOKEN: '' }],
    ];
    // A few at a time: each is a node process on a 2-core machine.
    for (let i = 0; i < cases.length; i += 4) {
      await Promise.all(
        cases.slice(i, i + 4).map(async ([args, code, says, extraEnv]) => {
          const res = await runCli(args, { ...env, ...extraEnv });
          const what = `stowage ${args.map((a) => (a.length > 40 ? `${a.slice(0, 20)}…` : a)).join(' ')}`;
          expect(res.code, `${what}: ${res.stderr}`).toBe(code);
          expect(res.stderr, what).toMatch(/^error: /);
          expect(res.stderr, what).toMatch(says);
        }),
      );
    }
    expect(await snapshot(vol)).toEqual(before);
    expect(existsSync(out)).toBe(false);
    const names = (await Volume.list({ connection: conn })).map((v) => v.name);
    expect(names).not.toContain('my volume');
    expect(names).not.toContain(missing);
  });
});
