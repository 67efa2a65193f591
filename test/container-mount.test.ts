/**
 * `stowage mount` inside a container of the stowage image (/dev/fuse and
 * SYS_ADMIN, host network), against a stowage server in this process on
 * 127.0.0.1: files of a volume read through the container's mount, byte for
 * byte (SHA-256 inside the container against the bytes uploaded), and the
 * mount is read-only there too. Skips, saying why, without Docker or the image
 * (scripts/docker.sh, scripts/image.sh).
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Volume } from '../src/client/index.js';
import { skipWithoutContainers, startMountContainer, type Container } from './support/containers.js';
import { startStowage, uniqueName, type Stowage } from './support/processes.js';
import { MiB, sha256 } from './support/volume-data.js';

const CHUNK = 1 * MiB;

describe.skipIf(skipWithoutContainers('the mount inside a container'))('a mount inside a container', () => {
  let stowage: Stowage | undefined;
  let mount: Container | undefined;
  const name = uniqueName('container-mount');
  const files = new Map<string, Buffer>([
    ['x.bin', randomBytes(3 * CHUNK + 12_345)],
    ['dir/small.txt', randomBytes(777)],
  ]);

  beforeAll(async () => {
    stowage = await startStowage();
    const vol = await Volume.fromName(name, { createIfMissing: true, connection: stowage.connection, chunkSize: CHUNK });
    const batch = vol.batchUpload();
    for (const [path, data] of files) batch.putFile(data, path);
    expect((await batch.commit()).version).toBe(1);
    mount = await startMountContainer(stowage.server.address, stowage.server.token, name, '/data');
  });
  afterAll(async () => {
    try {
      await mount?.stop();
    } finally {
      await stowage?.stop();
    }
  });

  it('reads every file byte for byte through the mount in the container', async () => {
    for (const [path, data] of files) {
      const r = await mount!.exec(['sha256sum', `/data/${path}`]);
      expect(r, r.output).toMatchObject({ exitCode: 0 });
      expect(r.output.split(/\s+/)[0]).toBe(sha256(data));
    }
    const sizes = await mount!.exec(['stat', '-c', '%n %s', '/data/x.bin', '/data/dir/small.txt']);
    expect(sizes.output.trim().split('\n')).toEqual([...files].map(([path, data]) => `/data/${path} ${data.length}`));
  });

  it('is a FUSE mount there, and writing into it fails with EROFS', async () => {
    const mounts = await mount!.exec(['cat', '/proc/mounts']);
    expect(mounts.output).toMatch(/^stowage:\S+ \/data fuse\.stowage /m);
    const write = await mount!.exec(['sh', '-c', 'echo new > /data/new.txt']);
    expect(write.exitCode).not.toBe(0);
    expect(write.output).toMatch(/Read-only file system/);
  });
});
