/**
 * Unicode normalisation of volume paths: every path is NFC (normalizePath, on
 * the server, in the SDK and in the CLI), so the NFC and NFD spellings of a
 * name ("café": é as one code point, or e + U+0301) are one file. Against a
 * real server in this process; the CLI as a child process.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AlreadyExistsError, Volume } from '../src/client/index.js';
import { FileType, type CommitRequest, type CommitResponse } from '../src/gen/stowage/v1/volume.js';
import { expectFailure } from './support/checks.js';
import { runCli, runCliBytes, startStowage, tempDir, uniqueName, type Stowage } from './support/processes.js';

const NFC = { dir: 'caf\u00e9', file: 'men\u00fc.txt' };
const NFD = { dir: 'cafe\u0301', file: 'menu\u0308.txt' };

describe('NFC and NFD spellings of a path name one file', () => {
  let stowage: Stowage;
  let env: Record<string, string>;
  beforeAll(async () => {
    stowage = await startStowage();
    env = { STOWAGE_SERVER: stowage.server.address, STOWAGE_TOKEN: stowage.server.token };
  });
  afterAll(async () => {
    await stowage?.stop();
  });

  it('a file put under the NFD spelling is read, stat-ed and listed under the NFC one, and a put of the NFC spelling finds it', async () => {
    expect(NFC.dir).not.toBe(NFD.dir);
    expect(NFC.dir).toBe(NFD.dir.normalize('NFC'));
    const vol = await Volume.fromName(uniqueName('nfd'), { createIfMissing: true, connection: stowage.connection });
    const data = Buffer.from('soupe du jour\n');
    await vol.batchUpload().putFile(data, `${NFD.dir}/${NFD.file}`).commit();

    const nfcPath = `${NFC.dir}/${NFC.file}`;
    expect((await vol.readBytes(nfcPath)).equals(data)).toBe(true);
    expect((await vol.stat(nfcPath)).path).toBe(nfcPath);
    expect((await vol.listdir('/')).map((e) => e.path)).toEqual([NFC.dir]);
    expect((await vol.listdir(NFD.dir)).map((e) => e.path)).toEqual([nfcPath]);
    expect((await vol.listdir('/', { recursive: true })).map((e) => e.path)).toEqual([NFC.dir, nfcPath]);

    await expectFailure(
      () => vol.batchUpload().putFile(Buffer.from('other\n'), nfcPath).commit(),
      AlreadyExistsError,
      'ALREADY_EXISTS',
      new RegExp(`"${nfcPath}" already exists`),
    );
    // With force it replaces the one file, not a second one beside it.
    await vol.batchUpload({ force: true }).putFile(Buffer.from('other\n'), nfcPath).commit();
    expect((await vol.listdir('/', { recursive: true })).map((e) => e.path)).toEqual([NFC.dir, nfcPath]);
    expect((await vol.readBytes(`${NFD.dir}/${NFD.file}`)).toString()).toBe('other\n');
  });

  it('a file put under the NFC spelling is found under the NFD one, by the SDK, the CLI and a raw commit', async () => {
    const name = uniqueName('nfc');
    const vol = await Volume.fromName(name, { createIfMissing: true, connection: stowage.connection });
    const data = Buffer.from('naïve\n');
    await vol.batchUpload().putFile(data, `${NFC.dir}/${NFC.file}`).commit();
    const nfdPath = `${NFD.dir}/${NFD.file}`;
    expect((await vol.readBytes(nfdPath)).equals(data)).toBe(true);
    expect((await vol.stat(nfdPath)).path).toBe(`${NFC.dir}/${NFC.file}`);

    // The CLI: reads under the NFD name, lists the NFC one, refuses a put of the NFD spelling without -f.
    const got = await runCliBytes(['volume', 'get', name, nfdPath, '-'], env);
    expect(got.code, got.stderr).toBe(0);
    expect(got.stdout.equals(data)).toBe(true);
    const ls = await runCli(['volume', 'ls', name, NFD.dir, '--json'], env);
    expect(ls.code, ls.stderr).toBe(0);
    expect((JSON.parse(ls.stdout) as { path: string }[]).map((e) => e.path)).toEqual([`${NFC.dir}/${NFC.file}`]);
    const local = join(tempDir('unicode'), 'x.txt');
    writeFileSync(local, 'again\n');
    const put = await runCli(['volume', 'put', name, local, nfdPath], env);
    expect(put.code).toBe(4);
    expect(put.stderr).toMatch(/already exists in volume/);

    // The server normalises too: a raw commit (no SDK in between) of the NFD spelling clashes with the NFC file.
    const vols = stowage.connection.volumes;
    const raw = { path: nfdPath, type: FileType.FILE_TYPE_FILE, size: 0, mode: 0o644, mtimeMs: 1, extents: [], id: 0, tree: '' };
    const commit = (puts: (typeof raw)[]) =>
      stowage.connection.clientStream<CommitRequest, CommitResponse>((cb) => vols.commit(cb), [{ volume: name, puts, removes: [], copies: [], force: false, commitId: '' }]);
    await expectFailure(
      () => commit([raw]),
      AlreadyExistsError,
      'ALREADY_EXISTS',
    );
    const newNfd = `${NFD.dir}/ne\u0301e.txt`;
    const newNfc = `${NFC.dir}/n\u00e9e.txt`;
    await commit([{ ...raw, path: newNfd }]);
    const stored: string[] = [];
    for await (const batch of stowage.connection.stream(vols.listFiles({ volume: name, path: NFD.dir, recursive: true, version: 0, pageSize: 0, pageToken: '', withoutExtents: false }))) {
      stored.push(...batch.entries.map((e) => e.path));
    }
    expect(stored.sort()).toEqual([`${NFC.dir}/${NFC.file}`, newNfc].sort());
  });
});
