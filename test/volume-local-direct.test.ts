/**
 * On the embedded default, a client on the server's host moves chunk bytes
 * itself through file:// URLs: the server's blob stream is not used, unless
 * the client asks for it (proxy) — and both paths give the same bytes.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { Volume } from '../src/client/index.js';
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
});
