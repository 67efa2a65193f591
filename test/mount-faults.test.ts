/**
 * Faults under a real FUSE mount on s3rver (issue 3): S3 unreachable during a
 * read, the cache directory deleted or full under the mount, the disk cache
 * bound while reading 3× its size, and a second full read (after a restart of
 * the mount, so nothing comes from memory or the page cache) that makes no
 * S3 GET. S3 GETs are counted by s3rver. No timing assertions.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { readFile, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Volume } from '../src/client/index.js';
import { removeScratch, scratchDir, startSetup, type Setup } from './support/faults.js';
import { cleanUpMounts, errnoCode, startMountProcess, stopMount, type MountProcess } from './support/mount.js';
import { uniqueName } from './support/processes.js';
import { KiB, MiB } from './support/volume-data.js';

const CHUNK = 1 * MiB;

/** Drops the kernel's page cache, so a read of a file read before reaches the mount again (needs root, as FUSE mounts here do). */
function dropPageCache(): void {
  spawnSync('sync');
  writeFileSync('/proc/sys/vm/drop_caches', '3');
}

/** Sum of the sizes of the chunk files under a cache directory. */
async function cachedBytes(cacheDir: string): Promise<number> {
  let total = 0;
  const root = join(cacheDir, 'chunks');
  for (const shard of await readdir(root).catch(() => [])) {
    for (const name of await readdir(join(root, shard)).catch(() => [])) {
      if (/^[0-9a-f]{64}$/.test(name)) total += (await stat(join(root, shard, name)).catch(() => ({ size: 0 }))).size;
    }
  }
  return total;
}

describe('mount faults (s3rver)', () => {
  let setup: Setup;
  let env: Record<string, string>;
  let work: string;
  const name = uniqueName('mount-faults');
  const files = new Map<string, Buffer>();
  const mounts: MountProcess[] = [];

  beforeAll(async () => {
    work = scratchDir('mount-faults');
    setup = await startSetup('s3');
    const { connection, server } = setup.stowage;
    env = { STOWAGE_SERVER: server.address, STOWAGE_TOKEN: server.token };
    const vol = await Volume.fromName(name, { createIfMissing: true, connection, chunkSize: CHUNK });
    for (const f of ['outage.bin', 'deleted.bin', 'full.bin']) files.set(f, randomBytes(3 * CHUNK + 123));
    files.set('bound.bin', randomBytes(12 * CHUNK));
    for (let i = 0; i < 20; i++) files.set(`small/f${i}.txt`, randomBytes(3 * KiB + i));
    const batch = vol.batchUpload();
    for (const [path, data] of files) batch.putFile(data, path);
    await batch.commit();
  });

  afterAll(async () => {
    cleanUpMounts();
    await setup?.stop();
    cleanUpMounts();
    for (const dir of tmpfsDirs) spawnSync('umount', ['-l', dir]);
    removeScratch();
  });

  const tmpfsDirs: string[] = [];
  const getChunks = async () => (await setup.s3!.stats())['GET chunks'] ?? 0;

  async function mount(label: string, args: string[] = [], cacheDir = join(work, `cache-${label}`)): Promise<MountProcess> {
    const m = await startMountProcess({ volume: name, dir: join(work, `mnt-${label}`), cacheDir, args, env });
    mounts.push(m);
    return m;
  }

  const read = (m: MountProcess, path: string) => readFile(join(m.dir, path));

  it('S3 unreachable: a cold read fails with EIO and a logged reason, the mount stays up, and the read works once S3 is back', { timeout: 90_000 }, async () => {
    const m = await mount('outage');
    await setup.s3!.stop();
    try {
      expect(await errnoCode(read(m, 'outage.bin'))).toBe('EIO');
      expect(m.stderr()).toMatch(/read failed/);
      expect(m.stderr()).toContain('/outage.bin');
      expect(m.stderr()).toMatch(/S3 unreachable: cannot read chunks\/.*ECONNREFUSED/);
      // Metadata is in memory: listing still works while S3 is down.
      expect((await readdir(m.dir)).sort()).toEqual(['bound.bin', 'deleted.bin', 'full.bin', 'outage.bin', 'small']);
      expect(m.child.exitCode).toBeNull();
    } finally {
      await setup.s3!.restart();
    }
    expect((await read(m, 'outage.bin')).equals(files.get('outage.bin')!)).toBe(true);
    expect(await stopMount(m, 'SIGTERM')).toBe(0);
  });

  it('cache directory deleted under the mount: reads fetch again and the cache fills again, no crash', { timeout: 90_000 }, async () => {
    const cacheDir = join(work, 'cache-deleted');
    const m = await mount('deleted', ['--memory-cache-size', '2MiB'], cacheDir);
    expect((await read(m, 'deleted.bin')).equals(files.get('deleted.bin')!)).toBe(true);
    expect(await cachedBytes(cacheDir)).toBeGreaterThanOrEqual(3 * CHUNK);

    await rm(cacheDir, { recursive: true, force: true });
    dropPageCache();
    // Files the mount holds open are checked for removal once a second (disk-cache.ts): past that, each is let go.
    await new Promise((r) => setTimeout(r, 1100));
    await setup.s3!.resetStats();
    expect((await read(m, 'deleted.bin')).equals(files.get('deleted.bin')!)).toBe(true);
    expect(await getChunks()).toBeGreaterThanOrEqual(2);
    expect(await cachedBytes(cacheDir)).toBeGreaterThanOrEqual(2 * CHUNK);
    expect(m.child.exitCode).toBeNull();
    expect(await stopMount(m, 'SIGTERM')).toBe(0);
  });

  it('cache directory on a full file system: reads are served uncached, the reason is logged once, no crash', { timeout: 90_000 }, async () => {
    const cacheDir = join(work, 'cache-full');
    mkdirSync(cacheDir, { recursive: true });
    const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=512k,mode=0700', 'tmpfs', cacheDir], { encoding: 'utf8' });
    expect(mounted.status, mounted.stderr).toBe(0);
    tmpfsDirs.push(cacheDir);
    const m = await mount('full', ['--cache-size', '64MiB', '--memory-cache-size', '2MiB'], cacheDir);
    expect((await read(m, 'full.bin')).equals(files.get('full.bin')!)).toBe(true);
    dropPageCache();
    expect((await read(m, 'full.bin')).equals(files.get('full.bin')!)).toBe(true);
    expect(m.stderr()).toMatch(/chunk cache disk is full/);
    expect(m.stderr().match(/chunk cache disk is full/g)).toHaveLength(1);
    expect(m.child.exitCode).toBeNull();
    expect(await stopMount(m, 'SIGTERM')).toBe(0);
  });

  it('keeps the disk cache under --cache-size while reading 3× that much, with every byte right', { timeout: 90_000 }, async () => {
    const cacheDir = join(work, 'cache-bound');
    const m = await mount('bound', ['--cache-size', '4MiB', '--memory-cache-size', '2MiB'], cacheDir);
    const data = files.get('bound.bin')!;
    expect((await read(m, 'bound.bin')).equals(data)).toBe(true);
    expect(await cachedBytes(cacheDir)).toBeLessThanOrEqual(4 * MiB);
    expect(await cachedBytes(cacheDir)).toBeGreaterThanOrEqual(2 * CHUNK);
    dropPageCache();
    expect((await read(m, 'bound.bin')).equals(data)).toBe(true);
    expect(await cachedBytes(cacheDir)).toBeLessThanOrEqual(4 * MiB);
    expect(await stopMount(m, 'SIGTERM')).toBe(0);
  });

  it('a second full read, by a new mount process on the same cache, makes no S3 GET', { timeout: 90_000 }, async () => {
    const cacheDir = join(work, 'cache-second');
    const paths = [...files.keys()];
    const first = await mount('first', [], cacheDir);
    for (const p of paths) expect((await read(first, p)).equals(files.get(p)!), p).toBe(true);
    expect(await stopMount(first, 'SIGTERM')).toBe(0);

    dropPageCache();
    const second = await mount('second', [], cacheDir);
    await setup.s3!.resetStats();
    for (const p of paths) expect((await read(second, p)).equals(files.get(p)!), p).toBe(true);
    expect(await getChunks()).toBe(0);
    expect(await stopMount(second, 'SIGTERM')).toBe(0);
  });
});
