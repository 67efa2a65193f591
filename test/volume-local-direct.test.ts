/**
 * On the embedded default, a client on the server's host moves chunk bytes
 * itself through file:// URLs: the server's blob stream is not used, unless
 * the client asks for it (proxy) — and both paths give the same bytes.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { Volume } from '../src/client/index.js';
import { FileType, type CommitRequest, type CommitResponse } from '../src/gen/stowage/v1/volume.js';
import { startStowage, uniqueName, type Stowage } from './support/processes.js';

describe('same-host transfers on the local-directory store', () => {
  let stowage: Stowage;
  beforeAll(async () => {
    stowage = await startStowage();
  });
  afterAll(async () => {
    await stowage?.stop();
  });

  it('reads and writes chunk files directly, and through the server only in proxy mode', async () => {
    const catalog = stowage.server.catalog;
    const putBlob = vi.spyOn(catalog.blobs, 'putBlob');
    const readBlob = vi.spyOn(catalog.blobs, 'readBlob');
    const data = randomBytes(5 * 1024 * 1024 + 3);
    const small = randomBytes(3000);
    const name = uniqueName();

    const direct = await Volume.fromName(name, { createIfMissing: true, connection: stowage.connection, chunkSize: 1 << 20 });
    const put = await direct.batchUpload().putFile(data, 'big.bin').putFile(small, 'small.txt').commit();
    expect(put.chunksTransferred).toBe(7); // 6 chunks and 1 pack, written by the client itself
    expect((await direct.readBytes('big.bin')).equals(data)).toBe(true);
    expect((await direct.readBytes('small.txt')).equals(small)).toBe(true);
    expect(putBlob).not.toHaveBeenCalled();
    expect(readBlob).not.toHaveBeenCalled();

    const proxy = await Volume.fromName(name, { connection: stowage.connection, transfer: 'proxy', chunkSize: 1 << 20 });
    const other = randomBytes(2 * 1024 * 1024);
    await proxy.batchUpload().putFile(other, 'other.bin').commit();
    expect(putBlob).toHaveBeenCalledTimes(2);
    expect((await proxy.readBytes('big.bin')).equals(data)).toBe(true);
    expect(readBlob).toHaveBeenCalledTimes(6);
    expect((await direct.readBytes('other.bin')).equals(other)).toBe(true);
    expect(readBlob).toHaveBeenCalledTimes(6);
  });

  it('checks what a client wrote into the store itself before any version uses it: forged bytes are deleted and refused', async () => {
    const conn = stowage.connection;
    const vols = conn.volumes;
    const name = uniqueName('forged');
    await conn.unary(vols.createVolume.bind(vols), { name, ephemeral: false, existOk: false });
    const honest = randomBytes(100_000);
    const hash = createHash('sha256').update(honest).digest('hex');
    const plan = await conn.unary(vols.planUpload.bind(vols), { volume: name, blobs: [hash], contents: [], presign: true });
    expect(plan.missingBlobs).toEqual([hash]);
    const url = plan.putUrls[hash]!;
    // The URL names a file of incoming/, never the chunk's own key.
    expect(url).toMatch(new RegExp(`/store/incoming/${hash.slice(0, 2)}/${hash}$`));
    const forged = fileURLToPath(url);
    mkdirSync(dirname(forged), { recursive: true });
    writeFileSync(forged, randomBytes(100_000));
    const entry = { path: 'x.bin', type: FileType.FILE_TYPE_FILE, size: honest.length, mode: 0o644, mtimeMs: 1, extents: [{ blob: hash, offset: 0, length: honest.length, hash }], id: 0, tree: '' };
    const commit = () => conn.clientStream<CommitRequest, CommitResponse>((cb) => vols.commit(cb), [{ volume: name, puts: [entry], removes: [], copies: [], force: false, commitId: '' }]);
    await expect(commit()).rejects.toThrow(/do not match their hash .*deleted: upload them again/);
    expect(existsSync(forged)).toBe(false);
    expect(existsSync(join(stowage.dataDir, 'store', 'chunks', hash.slice(0, 2), hash))).toBe(false);
    // An honest upload of the same bytes afterwards sends them (nothing is deduplicated against the forgery) and reads back.
    const vol = await Volume.fromName(name, { connection: conn });
    const put = await vol.batchUpload().putFile(honest, 'x.bin').commit();
    expect(put.chunksTransferred).toBe(1);
    expect((await vol.readBytes('x.bin')).equals(honest)).toBe(true);
    expect(existsSync(join(stowage.dataDir, 'store', 'chunks', hash.slice(0, 2), hash))).toBe(true);
  });
});
