/**
 * Faults under volumes: S3 going away (and coming back), the server killed in
 * the middle of an upload, and chunks damaged in the store. Each one ends in a
 * typed error that says what is wrong, and never in a half-written version or
 * in damaged bytes handed to the caller.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  Connection,
  IntegrityError,
  NotFoundError,
  UnavailableError,
  Volume,
  type CommitResult,
  type TransferMode,
} from '../src/client/index.js';
import { sha256 } from '../src/common/hash.js';
import type { FileEntry } from '../src/gen/stowage/v1/volume.js';
import { drain, escapeRegExp, expectFailure, versionKeys, readUntilFailure, snapshot } from './support/checks.js';
import {
  corruptFile,
  filesBelow,
  removeScratch,
  scratchDir,
  sha256Of,
  startCli,
  startSetup,
  storedBlobFile,
  waitFor,
  withDeadline,
  writeRandomFile,
  type RunningCli,
  type Setup,
  type StoreKind,
} from './support/faults.js';
import {
  runCli,
  spawnStowage,
  startS3rver,
  startStowage,
  uniqueName,
  type ChildServer,
  type S3Server,
  type Stowage,
} from './support/processes.js';

const MiB = 1024 * 1024;

afterAll(removeScratch);

describe('S3 unreachable while the server runs', () => {
  let s3: S3Server;
  let stowage: Stowage;
  beforeAll(async () => {
    s3 = await startS3rver({ dir: scratchDir('s3rver') });
    stowage = await startStowage({ dataDir: scratchDir('stowage'), s3: s3.storeOptions() });
  });
  afterAll(async () => {
    await stowage?.stop();
    await s3?.stop();
  });

  it('uploads, reads and commits fail with UNAVAILABLE naming the endpoint, the server keeps answering, and all work once S3 is back', async () => {
    const connection = stowage.connection;
    const vol = await Volume.fromName(uniqueName('s3-down'), { createIfMissing: true, connection });
    const big = randomBytes(3 * MiB);
    await vol.batchUpload().putFile(big, 'big.bin').putFile(Buffer.from('small'), 'small.txt').commit();
    const before = await snapshot(vol);
    const versionRecords = await versionKeys(stowage.server.store);
    const fresh = randomBytes(2 * MiB);
    const newName = uniqueName('born-while-down');
    const local = scratchDir('s3-down-download');
    // Volumes that move bytes through presigned URLs, and through the server.
    const direct = await Volume.fromName(vol.name, { connection, transfer: 'direct' });
    const proxied = await Volume.fromName(vol.name, { connection, transfer: 'proxy' });

    await s3.stop();
    try {
      const endpoint = escapeRegExp(s3.endpoint);
      const unavailable = (fn: () => unknown, ...says: RegExp[]) =>
        expectFailure(fn, UnavailableError, 'UNAVAILABLE', endpoint, ...says);
      await unavailable(() => vol.batchUpload().putFile(fresh, 'new.bin').commit(), /S3 unreachable/);
      await unavailable(() => vol.batchUpload().putFile(Buffer.from('tiny'), 'tiny.txt').commit(), /S3 unreachable/);
      await unavailable(() => proxied.readBytes('big.bin'), /S3 unreachable/);
      await unavailable(() => drain(vol.readFile('small.txt')));
      await unavailable(() => direct.readBytes('big.bin'), /set STOWAGE_TRANSFER=proxy/);
      await unavailable(() => vol.download('big.bin', join(local, 'big.bin')));
      // A commit that moves no chunk still writes its version record to the store first.
      await unavailable(() => vol.removeFile('small.txt'), /S3 unreachable/);
      await unavailable(() => Volume.fromName(newName, { createIfMissing: true, connection }), /S3 unreachable/);

      // The stowage server is up and answers from its index.
      const names = (await Volume.list({ connection })).map((v) => v.name);
      expect(names).toContain(vol.name);
      expect(names).not.toContain(newName);
      expect(await snapshot(vol)).toEqual(before);
      expect(existsSync(join(local, 'big.bin'))).toBe(false);
    } finally {
      await s3.restart();
    }

    // The same operations, now that S3 is back.
    expect((await proxied.readBytes('big.bin')).equals(big)).toBe(true);
    expect((await direct.readBytes('big.bin')).equals(big)).toBe(true);
    expect((await vol.readBytes('small.txt')).toString()).toBe('small');
    await vol.download('big.bin', join(local, 'big.bin'));
    expect(await sha256Of(vol.readFile('big.bin'))).toBe(sha256(big));
    const put = await vol.batchUpload().putFile(fresh, 'new.bin').putFile(Buffer.from('tiny'), 'tiny.txt').commit();
    expect(put.version).toBe(before.latestVersion + 1);
    expect((await vol.readBytes('new.bin')).equals(fresh)).toBe(true);
    expect(await vol.removeFile('small.txt')).toBe(before.latestVersion + 2);
    await Volume.fromName(newName, { createIfMissing: true, connection });
    expect((await Volume.list({ connection })).map((v) => v.name)).toContain(newName);
    // Nothing from the failed attempts: exactly the two new versions.
    expect((await versionKeys(stowage.server.store)).length).toBe(versionRecords.length + 2);
  });
});

describe('S3 unreachable when the server starts', () => {
  it('starts with an empty index anyway, and rebuilds the index by itself once S3 is back', async () => {
    const s3 = await startS3rver({ dir: scratchDir('s3rver') });
    const prefix = uniqueName('prefix');
    let second: Stowage | undefined;
    try {
      // A volume that lives only in S3, written by an earlier server.
      const first = await startStowage({ dataDir: scratchDir('stowage'), s3: s3.storeOptions(prefix) });
      const name = uniqueName('survivor');
      const content = randomBytes(2 * MiB);
      try {
        const vol = await Volume.fromName(name, { createIfMissing: true, connection: first.connection });
        await vol.batchUpload().putFile(content, 'data.bin').commit();
      } finally {
        await first.stop();
      }

      await s3.stop();
      const dataDir = scratchDir('s3-down-at-start');
      second = await startStowage({ dataDir, s3: s3.storeOptions(prefix) });
      let connection = second.connection;
      expect(await Volume.list({ connection })).toEqual([]);
      await expectFailure(
        () => Volume.fromName(uniqueName(), { createIfMissing: true, connection }),
        UnavailableError,
        'UNAVAILABLE',
        escapeRegExp(s3.endpoint),
      );

      // Until then the volume is unknown, and the error says why it may be.
      await expectFailure(() => Volume.fromName(name, { connection }), NotFoundError, 'NOT_FOUND', /not yet rebuilt from s3:\/\//);

      // The same server retries the rebuild: no restart needed.
      await s3.restart();
      const deadline = Date.now() + 60_000;
      while ((await Volume.list({ connection })).length === 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 250));
      }
      expect((await Volume.list({ connection })).map((v) => v.name)).toEqual([name]);
      expect((await (await Volume.fromName(name, { connection })).readBytes('data.bin')).equals(content)).toBe(true);

      // A later start over the same index and store sees the same.
      await second.stop();
      second = await startStowage({ dataDir, s3: s3.storeOptions(prefix) });
      connection = second.connection;
      expect((await Volume.list({ connection })).map((v) => v.name)).toEqual([name]);
      const vol = await Volume.fromName(name, { connection });
      expect((await vol.readBytes('data.bin')).equals(content)).toBe(true);
    } finally {
      await second?.stop();
      await s3.stop();
    }
  });
});

describe('the server killed with SIGKILL in the middle of an upload', () => {
  const CHUNKS = 128;

  it('keeps the last complete version, and the same put then finishes sending only the missing chunks', async () => {
    const dataDir = scratchDir('sigkill');
    const local = scratchDir('sigkill-files');
    const chunksDir = join(dataDir, 'store', 'chunks');
    let server: ChildServer = await spawnStowage(dataDir);
    let connection = new Connection({ server: server.address, token: server.token });
    let cli: RunningCli | undefined;
    try {
      const name = uniqueName('killed');
      const vol = await Volume.fromName(name, { createIfMissing: true, connection, chunkSize: MiB });
      const earlier = randomBytes(3 * MiB);
      await vol.batchUpload().putFile(earlier, 'earlier.bin').putFile(Buffer.from('notes'), 'notes.txt').commit();
      const before = await snapshot(vol);
      const baseline = (await filesBelow(chunksDir)).length;
      const bigPath = join(local, 'big.bin');
      const bigHash = await writeRandomFile(bigPath, CHUNKS * MiB);
      const args = ['volume', 'put', name, bigPath, 'big.bin', '--json'];
      const env = (s: ChildServer) => ({ STOWAGE_SERVER: s.address, STOWAGE_TOKEN: s.token, STOWAGE_CHUNK_SIZE: String(MiB) });

      const running = startCli(args, env(server));
      cli = running;
      await waitFor('the first chunks of big.bin in the store', async () => {
        if (running.exited()) throw new Error(`put ended before the kill: ${JSON.stringify(await running.result)}`);
        return (await filesBelow(chunksDir)).length >= baseline + 8 ? true : undefined;
      });
      await server.kill('SIGKILL');
      const interrupted = await withDeadline('the interrupted put', running.result, 60_000);
      expect(interrupted.code, interrupted.stderr).toBe(6);
      expect(interrupted.stderr).toMatch(/stowage server at .* is unreachable .*start it with: stowage serve/);
      const stored = (await filesBelow(chunksDir)).length - baseline;
      expect(stored).toBeGreaterThanOrEqual(8);
      expect(stored).toBeLessThan(CHUNKS);

      connection.close();
      server = await spawnStowage(dataDir);
      connection = new Connection({ server: server.address, token: server.token });
      const after = await Volume.fromName(name, { connection });
      expect(await snapshot(after)).toEqual(before);
      expect((await after.readBytes('earlier.bin')).equals(earlier)).toBe(true);
      await expectFailure(() => after.stat('big.bin'), NotFoundError, 'NOT_FOUND', /stowage volume ls/);

      const again = await runCli(args, env(server));
      expect(again.code, again.stderr).toBe(0);
      const summary = JSON.parse(again.stdout) as CommitResult;
      expect(summary.version).toBe(before.latestVersion + 1);
      expect(summary.chunks).toBe(CHUNKS);
      // Exactly the chunks the killed run had not stored yet.
      expect(summary.chunksTransferred).toBe(CHUNKS - stored);
      expect(await sha256Of(after.readFile('big.bin'))).toBe(bigHash);
      expect((await after.readBytes('earlier.bin')).equals(earlier)).toBe(true);
    } finally {
      await cli?.kill();
      connection.close();
      await server.kill('SIGKILL');
    }
  });
});

describe.each<StoreKind>(['local', 's3'])('a chunk damaged in the store (%s store)', (kind) => {
  let setup: Setup;
  beforeAll(async () => {
    setup = await startSetup(kind);
  });
  afterAll(async () => {
    await setup?.stop();
  });

  it('reads fail with INTEGRITY naming the file, hand out no damaged byte, and other files still read', async () => {
    const connection = setup.stowage.connection;
    const name = uniqueName('damaged');
    // 2 MiB chunks: one.bin is one chunk, multi.bin three, a.txt and b.txt share a pack.
    const vol = await Volume.fromName(name, { createIfMissing: true, connection, chunkSize: 2 * MiB });
    const files = {
      'one.bin': randomBytes(1.5 * MiB),
      'multi.bin': randomBytes(5 * MiB),
      'a.txt': randomBytes(10_000),
      'b.txt': randomBytes(10_000),
      'good.bin': randomBytes(1.5 * MiB),
    };
    const batch = vol.batchUpload();
    for (const [path, data] of Object.entries(files)) batch.putFile(data, path);
    await batch.commit();
    const entry = async (path: string): Promise<FileEntry> =>
      (await connection.unary(connection.volumes.getFile.bind(connection.volumes), { volume: name, path, version: 0, presign: false })).entry!;
    const one = await entry('one.bin');
    const multi = await entry('multi.bin');
    const a = await entry('a.txt');
    const b = await entry('b.txt');
    expect(one.extents).toHaveLength(1);
    expect(multi.extents).toHaveLength(3);
    expect(a.extents[0]!.blob).toBe(b.extents[0]!.blob);

    await corruptFile(await storedBlobFile(setup, one.extents[0]!.blob), 1000);
    await corruptFile(await storedBlobFile(setup, multi.extents[1]!.blob), 5);
    await corruptFile(await storedBlobFile(setup, a.extents[0]!.blob), a.extents[0]!.offset + 10);

    const modes: TransferMode[] = ['direct', 'proxy'];
    for (const transfer of modes) {
      const v = await Volume.fromName(name, { connection, transfer });
      const damaged = (path: string) =>
        new RegExp(`integrity check failed for .*${path.replace('.', '\\.')}.*does not match its hash.*the stored copy is damaged: put the same file again`);
      const integrity = (fn: () => unknown, path: string) =>
        expectFailure(fn, IntegrityError, 'INTEGRITY', damaged(path)).catch((err: unknown) => {
          throw new Error(`${path} over ${transfer}: ${String(err)}`);
        });

      // A one-chunk file yields nothing before it fails.
      const oneRead = await readUntilFailure(v.readFile('one.bin'));
      expect(oneRead.yielded).toHaveLength(0);
      await integrity(() => Promise.reject(oneRead.error), 'one.bin');
      expect(String(oneRead.error)).toMatch(new RegExp(`"one\\.bin" in volume "${name}"`));
      await integrity(() => v.readBytes('one.bin'), 'one.bin');
      await integrity(() => v.readBytes('one.bin', { offset: 10, length: 10 }), 'one.bin');

      // A three-chunk file with its middle chunk damaged: only the intact first chunk comes out.
      const multiRead = await readUntilFailure(v.readFile('multi.bin'));
      await integrity(() => Promise.reject(multiRead.error), 'multi.bin');
      expect(Buffer.concat(multiRead.yielded).equals(files['multi.bin'].subarray(0, 2 * MiB))).toBe(true);
      await integrity(() => v.readBytes('multi.bin', { offset: 3 * MiB, length: 100 }), 'multi.bin');

      // Packed together: a.txt's bytes are damaged, b.txt's are not.
      await integrity(() => v.readBytes('a.txt'), 'a.txt');
      expect((await v.readBytes('b.txt')).equals(files['b.txt'])).toBe(true);

      const out = scratchDir(`damaged-download-${transfer}`);
      await integrity(() => v.download('one.bin', join(out, 'one.bin')), 'one.bin');
      await integrity(() => v.download('multi.bin', join(out, 'multi.bin')), 'multi.bin');
      await integrity(() => v.download('a.txt', join(out, 'a.txt')), 'a.txt');
      expect(readdirSync(out)).toEqual([]);

      // Undamaged files and ranges read and download as they were.
      expect((await v.readBytes('good.bin')).equals(files['good.bin'])).toBe(true);
      expect((await v.readBytes('multi.bin', { offset: 4 * MiB })).equals(files['multi.bin'].subarray(4 * MiB))).toBe(true);
      await v.download('good.bin', join(out, 'good.bin'));
      await v.download('b.txt', join(out, 'b.txt'));
      expect(readdirSync(out).sort()).toEqual(['b.txt', 'good.bin']);
    }

    if (kind === 'local') {
      // The CLI's exit code for damaged data.
      const out = join(scratchDir('damaged-cli'), 'one.bin');
      const res = await runCli(['volume', 'get', name, 'one.bin', out], {
        STOWAGE_SERVER: setup.stowage.server.address,
        STOWAGE_TOKEN: setup.stowage.server.token,
      });
      expect(res.code, res.stderr).toBe(8);
      expect(res.stderr).toMatch(/integrity check failed for "one\.bin" in volume/);
      expect(existsSync(out)).toBe(false);
    }

    // Putting the same files again stores good copies: whole chunks are
    // replaced in place (so the old version reads again too), packed files
    // land in a new pack.
    const before = (await vol.info()).latestVersion;
    const repair = vol.batchUpload({ force: true });
    for (const path of ['one.bin', 'multi.bin', 'a.txt']) repair.putFile(files[path as keyof typeof files], path);
    const repaired = await repair.commit();
    expect(repaired.chunksTransferred).toBe(3);
    for (const path of ['one.bin', 'multi.bin', 'a.txt', 'b.txt', 'good.bin']) {
      expect((await vol.readBytes(path)).equals(files[path as keyof typeof files]), path).toBe(true);
    }
    expect((await vol.readBytes('one.bin', { version: before })).equals(files['one.bin'])).toBe(true);
    expect((await vol.readBytes('multi.bin', { version: before })).equals(files['multi.bin'])).toBe(true);
  });
});

describe.each<StoreKind>(['local', 's3'])('repairing a file with more than one bad chunk (%s store)', (kind) => {
  let setup: Setup;
  beforeAll(async () => {
    setup = await startSetup(kind);
  });
  afterAll(async () => {
    await setup?.stop();
  });

  it('one put -f of the original data repairs a chunk deleted from the store and a damaged one, and the error said so', async () => {
    const connection = setup.stowage.connection;
    const name = uniqueName('repair');
    const vol = await Volume.fromName(name, { createIfMissing: true, connection, chunkSize: 1 * MiB });
    const local = join(scratchDir('repair'), 'four.bin');
    await writeRandomFile(local, 4 * MiB);
    const env = { STOWAGE_SERVER: setup.stowage.server.address, STOWAGE_TOKEN: setup.stowage.server.token, STOWAGE_CHUNK_SIZE: String(1 * MiB) };
    expect((await runCli(['volume', 'put', name, local, 'four.bin'], env)).code).toBe(0);
    const entry = (await connection.unary(connection.volumes.getFile.bind(connection.volumes), { volume: name, path: 'four.bin', version: 0, presign: false })).entry!;
    expect(entry.extents).toHaveLength(4);
    // The second chunk is gone from the store; the fourth has other bytes.
    const gone = await storedBlobFile(setup, entry.extents[1]!.blob);
    const { rm } = await import('node:fs/promises');
    await rm(gone);
    await corruptFile(await storedBlobFile(setup, entry.extents[3]!.blob), 100);

    const err = await expectFailure(() => vol.readBytes('four.bin'), IntegrityError, 'INTEGRITY', /is missing from the store/);
    expect(err.message).toMatch(/the server found 2 chunks of it damaged or missing; one put of the file repairs them all/);
    const cli = await runCli(['volume', 'get', name, 'four.bin', join(scratchDir('repair-get'), 'out.bin')], env);
    expect(cli.code).toBe(8);
    expect(cli.stderr).toMatch(/put the same file again \(stowage volume put -f\)/);

    // The fix the message gives, once: both chunks are sent again and the file reads.
    const put = await runCli(['volume', 'put', '-f', '--json', name, local, 'four.bin'], env);
    expect(put.code, put.stderr).toBe(0);
    expect((JSON.parse(put.stdout) as CommitResult).chunksTransferred).toBe(2);
    expect(sha256(await vol.readBytes('four.bin'))).toBe(await sha256Of((await import('node:fs')).createReadStream(local)));
    // The version before the repair shares the chunks: it reads again too.
    expect(sha256(await vol.readBytes('four.bin', { version: 1 }))).toBe(sha256(await vol.readBytes('four.bin')));
  });
});
