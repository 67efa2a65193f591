/**
 * Reloading a running mount to the newest version of its volume (`stowage
 * volume reload DIR`, and SIGHUP sent directly), for real: a stowage server in
 * this process on the local-directory store, `stowage mount` as a child
 * process, reads through the kernel. A file open before the reload keeps
 * reading the version it opened, to its end, even while a fresh open of the
 * same path reads the new one; added files appear, removed ones are gone,
 * including paths the kernel had cached (positive and negative lookups).
 * Every mount point is detached and every mount process killed by PID in
 * afterAll. No timing assertions.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { open, readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Volume } from '../src/client/index.js';
import { DiskChunkCache } from '../src/fuse-mount/cache/disk-cache.js';
import { ENOENT } from '../src/fuse-mount/errno.js';
import { VolumeFilesystem } from '../src/fuse-mount/filesystem.js';
import { KernelView, type ReloadPlan } from '../src/fuse-mount/kernel-view.js';
import type { VersionChanges } from '../src/fuse-mount/version-diff.js';
import { removeScratch, scratchDir, startSetup, waitFor, type Setup } from './support/faults.js';
import { cleanUpMounts, detach, errnoCode, mountDirs, startMountProcess, stopMount, type MountProcess } from './support/mount.js';
import { runCli, startStowage, uniqueName, type Stowage } from './support/processes.js';
import { KiB, MiB, sha256 } from './support/volume-data.js';

const CHUNK = 1 * MiB;

describe('inode numbers across reloads (no FUSE)', () => {
  // The filesystem layer over a real server (in this process, local store), without the kernel.
  let stowage: Stowage;
  let fs: VolumeFilesystem;
  let vol: Volume;

  beforeAll(async () => {
    stowage = await startStowage();
    const { connection } = stowage;
    vol = await Volume.fromName(uniqueName('inodes'), { createIfMissing: true, connection });
    const v1 = vol.batchUpload();
    for (const [path, text] of [['a', '1'], ['b', '2'], ['d/c', '3'], ['keep/x', '4']]) v1.putFile(Buffer.from(text!), path!);
    await v1.commit();
    const disk = await DiskChunkCache.open({ dir: join(scratchDir('inodes-cache'), 'cache'), maxBytes: 64 * MiB });
    fs = await VolumeFilesystem.load({ connection, volume: vol.name, cache: disk });
  });

  afterAll(async () => {
    await fs?.close();
    await stowage?.stop();
  });

  const ino = async (path: string): Promise<number> => (await fs.getattr(path)).ino;

  it('keeps the number of an unchanged path, gives changed and added paths new ones, and never reuses one', async () => {
    // The entries' ids, as the commit gave them: every path its own, the root 1.
    const paths = ['/a', '/b', '/d', '/d/c', '/keep', '/keep/x'];
    const v1 = await Promise.all(paths.map(ino));
    expect(await ino('/')).toBe(1);
    expect(new Set([1, ...v1]).size).toBe(paths.length + 1);
    // Looked up and found missing (the kernel would remember that).
    await expect(fs.getattr('/e')).rejects.toMatchObject({ errno: ENOENT });

    // b changes, d/c goes (and d with it: a directory without files), e arrives.
    const to = (await vol.batchUpload({ force: true }).putFile(Buffer.from('9'), 'b').putFile(Buffer.from('5'), 'e').removeFile('d/c').commit()).version;
    const plan = await fs.reload();
    fs.endReload();
    expect(plan).toMatchObject({ from: 1, to, added: 1, changed: 1, removed: 2 });
    // What the kernel was shown is dealt with: the changed and removed files it knows unlinked, the rest looked up again.
    expect(plan.unlink).toEqual(['/b', '/d/c']);
    expect(plan.revalidate).toEqual(['/d', '/e']);
    expect(await ino('/a')).toBe(v1[0]);
    expect(await ino('/keep/x')).toBe(v1[5]);
    expect(await ino('/keep')).toBe(v1[4]);
    const b2 = await ino('/b');
    const e = await ino('/e');
    expect(v1).not.toContain(b2);
    expect(v1).not.toContain(e);
    await expect(fs.getattr('/d')).rejects.toMatchObject({ errno: ENOENT });

    // d/c comes back with its old bytes: a new number all the same (the old one named another node of this mount).
    await vol.batchUpload().putFile(Buffer.from('3'), 'd/c').commit();
    const again = await fs.reload();
    fs.endReload();
    expect(again).toMatchObject({ added: 2, changed: 0, removed: 0 });
    const c3 = await ino('/d/c');
    expect([...v1, b2, e]).not.toContain(c3);
    expect(await ino('/b')).toBe(b2);
  });

  it('once every path counts as known, a reload lists and retires the files below a removed directory', async () => {
    await vol.batchUpload().putFile(Buffer.from('1'), 'gone/a').putFile(Buffer.from('2'), 'gone/b/c').commit();
    await fs.reload();
    fs.endReload();
    // More lookups than the mount remembers one by one.
    for (let i = 0; i <= 1 << 17; i++) await fs.getattr(`/missing-${i}`).catch(() => undefined);
    await vol.removeFile('gone', { recursive: true });
    const plan = await fs.reload();
    fs.endReload();
    expect(plan.removed).toBe(4);
    expect(plan.unlink).toEqual(['/gone/a', '/gone/b/c']);
    expect(plan.revalidate).toContain('/gone');
  });
});

describe('what a reload tells the kernel (no FUSE)', () => {
  const changes = (over: Partial<VersionChanges>): VersionChanges => ({
    added: 0,
    changed: 0,
    removed: 0,
    files: [],
    removedDirs: [],
    removedTrees: new Map(),
    addedPaths: [],
    changedDirs: [],
    ...over,
  });
  const emptyPlan = (): ReloadPlan => ({ from: 1, to: 2, added: 0, changed: 0, removed: 0, unlink: [], revalidate: [] });

  it('retires the changed files the kernel looked up, and those below a removed directory; redoes the lookups that may be stale', () => {
    const k = new KernelView();
    for (const [path, isFile] of [['/x', true], ['/d', false], ['/d/c', true], ['/d/e/f', true], ['/staged', true], ['/new', false], ['/kept', false]] as const) {
      k.remember(path, isFile);
    }
    const plan = emptyPlan();
    const c = changes({
      files: [{ path: '/x', node: undefined }, { path: '/unseen', node: undefined }, { path: '/staged', node: undefined }],
      removedDirs: ['/d'],
      addedPaths: ['/new', '/never-looked-up'],
      changedDirs: ['/kept'],
    });
    k.plan(c, (path) => path === '/staged', plan);
    expect(plan.unlink).toEqual(['/d/c', '/d/e/f', '/x']);
    expect(plan.revalidate).toEqual(['/d', '/kept', '/new']);
    expect(k.isRevalidating('/new')).toBe(true);
    // Allowed once each, until the reload ends.
    expect(k.unlink('/x')).toBe(true);
    expect(k.unlink('/x')).toBe(false);
    k.endReload();
    expect(k.unlink('/d/c')).toBe(false);
    expect(k.isRevalidating('/new')).toBe(false);
  });

  it('counts every path as known past its bound, but not while a reload compares versions', () => {
    const k = new KernelView();
    k.hold();
    for (let i = 0; i <= 1 << 17; i++) k.remember(`/p${i}`, true);
    expect(k.knowsAll).toBe(false);
    k.release();
    expect(k.knowsAll).toBe(true);
    const plan = emptyPlan();
    k.plan(changes({ files: [{ path: '/anything', node: undefined }], addedPaths: ['/a'] }), () => false, plan);
    expect(plan.unlink).toEqual(['/anything']);
    expect(plan.revalidate).toEqual(['/a']);
  });
});

describe('reloading a read-only FUSE mount to the newest version (local store)', () => {
  let setup: Setup;
  let work: string;
  let env: Record<string, string>;
  const name = uniqueName('reload');
  let vol: Volume;
  let mnt: string;
  let main: MountProcess;

  const v1Big = randomBytes(3 * CHUNK + 12_345);
  // The same size as v1's: only a new kernel inode keeps the two apart, not a size change.
  const v2Big = randomBytes(v1Big.length);
  const same = Buffer.from('unchanged in every version\n');

  beforeAll(async () => {
    work = scratchDir('mount-reload');
    mnt = join(work, 'mnt');
    setup = await startSetup('local');
    const { connection, server } = setup.stowage;
    const runtimeDir = join(work, 'run');
    mkdirSync(runtimeDir);
    env = { STOWAGE_SERVER: server.address, STOWAGE_TOKEN: server.token, STOWAGE_RUNTIME_DIR: runtimeDir };
    vol = await Volume.fromName(name, { createIfMissing: true, connection, chunkSize: CHUNK });
    const batch = vol.batchUpload();
    batch.putFile(v1Big, 'big.bin');
    batch.putFile(same, 'same.txt');
    batch.putFile(Buffer.from('removed in v2\n'), 'gone.txt');
    batch.putFile(Buffer.from('in a directory removed later\n'), 'olddir/x.txt');
    batch.putFile(Buffer.from('kept\n'), 'dir/keep.txt');
    expect((await batch.commit()).version).toBe(1);
    main = await startMountProcess({ volume: name, dir: mnt, cacheDir: join(work, 'cache'), env });
  });

  afterAll(async () => {
    cleanUpMounts();
    await setup?.stop();
    for (const dir of mountDirs) detach(dir);
    removeScratch();
  });

  it('moves to the new version: open files keep theirs, new opens and lookups see the new one', { timeout: 120_000 }, async () => {
    expect(main.line).toBe(`mounted ${name} version 1 at ${mnt}`);
    // The kernel caches all of these, positive and negative, for an hour.
    const sameIno = (await stat(join(mnt, 'same.txt'))).ino;
    const bigIno = (await stat(join(mnt, 'big.bin'))).ino;
    expect((await stat(join(mnt, 'gone.txt'))).isFile()).toBe(true);
    expect((await stat(join(mnt, 'olddir/x.txt'))).isFile()).toBe(true);
    expect(await errnoCode(stat(join(mnt, 'new.txt')))).toBe('ENOENT');
    expect(await errnoCode(stat(join(mnt, 'newdir')))).toBe('ENOENT');
    expect((await readdir(mnt)).sort()).toEqual(['big.bin', 'dir', 'gone.txt', 'olddir', 'same.txt']);

    const old = await open(join(mnt, 'big.bin'), 'r');
    try {
      const head = Buffer.alloc(200 * KiB);
      expect((await old.read(head, 0, head.length, 0)).bytesRead).toBe(head.length);
      expect(head.equals(v1Big.subarray(0, head.length))).toBe(true);

      const v2 = vol.batchUpload({ force: true });
      v2.putFile(v2Big, 'big.bin');
      v2.putFile(Buffer.from('new in v2\n'), 'new.txt');
      v2.putFile(Buffer.from('in a new directory\n'), 'newdir/y.txt');
      expect((await v2.commit()).version).toBe(2);
      await vol.removeFile('gone.txt');
      const latest = await vol.removeFile('olddir', { recursive: true });

      const r = await runCli(['volume', 'reload', mnt], env);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout.trim()).toBe(`reloaded ${mnt}: version 1 -> ${latest}`);
      expect(main.stderr()).toContain(`reloaded ${name} at ${mnt}: version 1 -> ${latest}`);

      // A fresh open reads the new bytes, while the old descriptor is still open and half read.
      expect(sha256(await readFile(join(mnt, 'big.bin')))).toBe(sha256(v2Big));
      const st = await stat(join(mnt, 'big.bin'));
      expect(st.ino).not.toBe(bigIno);

      // The old file, still open, is in no listing.
      expect((await readdir(mnt)).sort()).toEqual(['big.bin', 'dir', 'new.txt', 'newdir', 'same.txt']);

      // The old descriptor reads version 1 to its end, then EOF, and again from the start.
      const rest = Buffer.alloc(v1Big.length);
      let got = head.length;
      for (;;) {
        const { bytesRead } = await old.read(rest, got, Math.min(300 * KiB, rest.length - got), got);
        if (bytesRead === 0) break;
        got += bytesRead;
        if (got === rest.length) break;
      }
      expect(got).toBe(v1Big.length);
      expect(rest.subarray(head.length).equals(v1Big.subarray(head.length))).toBe(true);
      expect((await old.read(Buffer.alloc(10), 0, 10, v1Big.length)).bytesRead).toBe(0);
      const again = Buffer.alloc(64 * KiB);
      await old.read(again, 0, again.length, CHUNK - 1000);
      expect(again.equals(v1Big.subarray(CHUNK - 1000, CHUNK - 1000 + again.length))).toBe(true);
      expect((await old.stat()).size).toBe(v1Big.length);

      // And the old descriptor's reads did not leak into the path's new pages.
      expect(sha256(await readFile(join(mnt, 'big.bin')))).toBe(sha256(v2Big));
    } finally {
      await old.close();
    }
    expect(sha256(await readFile(join(mnt, 'big.bin')))).toBe(sha256(v2Big));

    // Added files are listed and readable, though new.txt had been looked up (and found missing) before.
    expect((await readdir(mnt)).sort()).toEqual(['big.bin', 'dir', 'new.txt', 'newdir', 'same.txt']);
    expect(await readFile(join(mnt, 'new.txt'), 'utf8')).toBe('new in v2\n');
    expect(await readFile(join(mnt, 'newdir/y.txt'), 'utf8')).toBe('in a new directory\n');
    // Removed ones are gone, though the kernel had them cached.
    expect(await errnoCode(stat(join(mnt, 'gone.txt')))).toBe('ENOENT');
    expect(await errnoCode(readFile(join(mnt, 'gone.txt')))).toBe('ENOENT');
    expect(await errnoCode(stat(join(mnt, 'olddir')))).toBe('ENOENT');
    expect(await errnoCode(stat(join(mnt, 'olddir/x.txt')))).toBe('ENOENT');
    // An unchanged file keeps its inode number and bytes.
    expect((await stat(join(mnt, 'same.txt'))).ino).toBe(sameIno);
    expect((await readFile(join(mnt, 'same.txt'))).equals(same)).toBe(true);
    expect(await readFile(join(mnt, 'dir/keep.txt'), 'utf8')).toBe('kept\n');
    // Every cached path was dealt with as planned.
    expect(main.stderr()).not.toContain('reload: ');
    // Still read-only.
    expect(await errnoCode(open(join(mnt, 'same.txt'), 'w'))).toBe('EROFS');
  });

  it('reloads on SIGHUP sent directly to the mount process, and says so when nothing changed', { timeout: 60_000 }, async () => {
    expect(await errnoCode(stat(join(mnt, 'sig.txt')))).toBe('ENOENT');
    const from = (await vol.versions()).at(-1)!.version;
    const batch = vol.batchUpload({ force: true });
    batch.putFile(Buffer.from('changed by the SIGHUP version\n'), 'same.txt');
    batch.putFile(Buffer.from('sig\n'), 'sig.txt');
    const to = (await batch.commit()).version;

    process.kill(main.child.pid!, 'SIGHUP');
    await waitFor('the reload on SIGHUP', () => (main.stderr().includes(`version ${from} -> ${to}`) ? true : undefined));
    expect(await readFile(join(mnt, 'same.txt'), 'utf8')).toBe('changed by the SIGHUP version\n');
    expect(await readFile(join(mnt, 'sig.txt'), 'utf8')).toBe('sig\n');

    const r = await runCli(['volume', 'reload', mnt], env);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe(`reloaded ${mnt}: version ${to} -> ${to}`);
    expect(await readFile(join(mnt, 'sig.txt'), 'utf8')).toBe('sig\n');
  });

  it('refuses to reload a directory that is not a stowage mount (exit 5)', { timeout: 30_000 }, async () => {
    const plain = join(work, 'plain');
    mkdirSync(plain);
    const r = await runCli(['volume', 'reload', plain], env);
    expect(r.code, r.stderr).toBe(5);
    expect(r.stderr).toContain('not a stowage mount');
    expect((await runCli(['volume', 'reload', join(work, 'no-such-dir')], env)).code).toBe(5);
  });

  it('unmounts cleanly afterwards; the mount point is then no longer reloadable', { timeout: 30_000 }, async () => {
    expect(await stopMount(main, 'SIGTERM')).toBe(0);
    expect((await runCli(['volume', 'reload', mnt], env)).code).toBe(5);
  });
});
