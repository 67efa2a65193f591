/**
 * The read-only FUSE mount, for real, on the local-directory store (chunks
 * read through file:// URLs) and on S3 (s3rver, presigned URLs): a stowage
 * server in this process, `stowage mount` as a child process (so that a hung
 * mount can be killed by PID), and reads through the kernel compared byte for
 * byte with what was uploaded. Every mount point is detached in afterAll
 * whatever happened (fusermount -uz), and every mount process is killed by PID.
 */
import { spawn } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { existsSync } from 'node:fs';
import { open, readFile, readdir, stat, statfs, writeFile, mkdir, unlink, rename, truncate, appendFile, chmod } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Volume } from '../src/client/index.js';
import { corruptFile, removeScratch, scratchDir, startSetup, storedBlobFile, type Setup, type StoreKind } from './support/faults.js';
import { children, cleanUpMounts, detach, errnoCode, mountDirs, mountedPaths, startMountProcess, stopMount, type MountProcess } from './support/mount.js';
import { runCli, uniqueName } from './support/processes.js';
import { KiB, MiB, sha256, writeRandomTree } from './support/volume-data.js';

const CHUNK = 1 * MiB;
const NFC_NAME = 'unicode/caf\u00e9.txt';

describe.each<StoreKind>(['local', 's3'])('read-only FUSE mount of a volume version (%s store)', (kind) => {
  let setup: Setup;
  let work: string;
  let env: Record<string, string>;
  const name = uniqueName('mount');
  /** The bytes of every file of version 1, by path. */
  const want = new Map<string, Buffer>();
  const damaged = randomBytes(CHUNK + 300 * KiB);
  let vol: Volume;
  let mnt: string;
  let cacheDir: string;
  let main: MountProcess;

  function startMount(
    dir: string,
    args: string[] = [],
    opts: { cacheDir?: string; env?: Record<string, string> } = {},
  ): Promise<MountProcess> {
    return startMountProcess({ volume: name, dir, cacheDir: opts.cacheDir ?? cacheDir, args, env: { ...env, ...opts.env } });
  }

  beforeAll(async () => {
    work = scratchDir(`mount-${kind}`);
    cacheDir = join(work, 'cache');
    mnt = join(work, 'mnt');
    setup = await startSetup(kind);
    const { connection, server } = setup.stowage;
    env = { STOWAGE_SERVER: server.address, STOWAGE_TOKEN: server.token };
    vol = await Volume.fromName(name, { createIfMissing: true, connection, chunkSize: CHUNK });

    want.set('empty.bin', Buffer.alloc(0));
    want.set('one.bin', randomBytes(1));
    want.set('big.bin', randomBytes(3 * CHUNK + 12_345));
    // Read only by the concurrent-readers test, so that its chunks start cold.
    want.set('concurrent.bin', randomBytes(2 * CHUNK + 777));
    // Small enough to be packed with others: a slice of a pack blob.
    want.set('mid.bin', randomBytes(700 * KiB));
    // Stored in NFC (one code point for é).
    want.set(NFC_NAME, Buffer.from('café in NFC\n'));
    const batch = vol.batchUpload();
    for (const [path, data] of want) batch.putFile(data, path);
    batch.putFile(damaged, 'damaged.bin');
    const treeDir = join(work, 'tree-src');
    for (const [rel, data] of writeRandomTree(treeDir, 200, 0, 3000)) want.set(`tree/${rel}`, data);
    batch.putDirectory(treeDir, 'tree');
    expect((await batch.commit()).version).toBe(1);
    // The second chunk of damaged.bin is damaged in the store before anything reads it.
    const entry = (
      await connection.unary(connection.volumes.getFile.bind(connection.volumes), { volume: name, path: 'damaged.bin', version: 1, presign: false })
    ).entry!;
    expect(entry.extents).toHaveLength(2);
    await corruptFile(await storedBlobFile(setup, entry.extents[1]!.blob), 100);
    expect((await vol.batchUpload().putFile(Buffer.from('only in v2\n'), 'v2-only.txt').commit()).version).toBe(2);

    main = await startMount(mnt, ['--version', '1']);
  });

  afterAll(async () => {
    cleanUpMounts();
    await setup?.stop();
    for (const dir of mountDirs) detach(dir);
    removeScratch();
  });

  it('mounts the version asked for and says so in one line', { timeout: 30_000 }, async () => {
    expect(main.line).toBe(`mounted ${name} version 1 at ${mnt}`);
    expect(mountedPaths()).toContain(mnt);
    expect(await errnoCode(stat(join(mnt, 'v2-only.txt')))).toBe('ENOENT');
    expect(await errnoCode(stat(join(mnt, 'no/such/file')))).toBe('ENOENT');
    const st = await stat(join(mnt, 'big.bin'));
    expect(st.isFile()).toBe(true);
    expect(st.size).toBe(want.get('big.bin')!.length);
    expect((await stat(join(mnt, 'tree'))).isDirectory()).toBe(true);
    const fsStat = await statfs(mnt);
    expect(fsStat.bfree).toBe(0);
  });

  it('reads every file whole with the bytes that were uploaded', { timeout: 60_000 }, async () => {
    const wrong: string[] = [];
    for (const [path, data] of want) {
      if (path === 'concurrent.bin') continue;
      const got = await readFile(join(mnt, path));
      if (got.length !== data.length || sha256(got) !== sha256(data)) wrong.push(path);
    }
    expect(wrong).toEqual([]);
    // The bytes came straight from the store (file:// or presigned URLs), not through a fallback.
    expect(main.stderr()).not.toContain('direct transfer');
  });

  it('answers reads at random offsets byte for byte, across chunk boundaries and at the end', { timeout: 60_000 }, async () => {
    for (const path of ['big.bin', 'mid.bin', 'tree/d000/f00000.bin']) {
      const data = want.get(path)!;
      const fh = await open(join(mnt, path), 'r');
      try {
        const reads: [number, number][] = [
          [0, 1],
          [data.length - 1, 10],
          [data.length, 10],
          [data.length + 5 * MiB, 10],
        ];
        for (let i = 0; i < 120; i++) {
          const len = randomInt(1, 300 * KiB);
          // A third of the reads straddle a chunk boundary.
          const boundary = CHUNK * randomInt(1, Math.max(2, Math.ceil(data.length / CHUNK)));
          const pos = i % 3 === 0 && boundary < data.length ? Math.max(0, boundary - randomInt(1, 5000)) : randomInt(0, Math.max(1, data.length));
          reads.push([pos, len]);
        }
        for (const [pos, len] of reads) {
          const buf = Buffer.alloc(len);
          let got = 0;
          // A read may return fewer bytes than asked; the rest follow at the next offset.
          for (;;) {
            const { bytesRead } = await fh.read(buf, got, len - got, pos + got);
            if (bytesRead === 0 || got + bytesRead === len) {
              got += bytesRead;
              break;
            }
            got += bytesRead;
          }
          const expected = data.subarray(Math.min(pos, data.length), Math.min(pos + len, data.length));
          expect(got, `${path} @${pos}+${len}`).toBe(expected.length);
          expect(buf.subarray(0, got).equals(expected), `${path} @${pos}+${len}`).toBe(true);
        }
      } finally {
        await fh.close();
      }
    }
  });

  it('serves 8 processes reading one cold file at once, all correctly, loading each chunk once', { timeout: 90_000 }, async () => {
    const path = join(mnt, 'concurrent.bin');
    await setup.s3?.resetStats();
    const script =
      "const {createHash}=require('node:crypto');const fs=require('node:fs');" +
      'process.stdout.write(createHash("sha256").update(fs.readFileSync(process.argv[1])).digest("hex"))';
    const hashes = await Promise.all(
      Array.from({ length: 8 }, () => {
        const child = spawn(process.execPath, ['-e', script, path], { stdio: ['ignore', 'pipe', 'pipe'] });
        children.add(child);
        let out = '';
        let err = '';
        child.stdout.on('data', (d: Buffer) => (out += d.toString()));
        child.stderr.on('data', (d: Buffer) => (err += d.toString()));
        return new Promise<string>((resolve) =>
          child.once('close', (code) => {
            children.delete(child);
            resolve(code === 0 ? out : `exit ${code}: ${err}`);
          }),
        );
      }),
    );
    expect(hashes).toEqual(Array(8).fill(sha256(want.get('concurrent.bin')!)));
    // The chunk cache merged the readers' loads: each of the file's 3 chunks left the store once.
    if (setup.s3) expect((await setup.s3.stats())['GET chunks']).toBe(3);
  });

  it('lists what listdir lists, with the same types', { timeout: 60_000 }, async () => {
    const subdir = [...want.keys()].find((p) => p.startsWith('tree/d001/'))!.split('/').slice(0, 2).join('/');
    for (const dir of ['', 'tree', subdir]) {
      const listed = (await vol.listdir(dir || '/', { version: 1 }))
        .map((e) => `${e.type} ${e.path.split('/').pop()}`)
        .sort();
      const seen = (await readdir(join(mnt, dir), { withFileTypes: true }))
        .map((d) => `${d.isDirectory() ? 'directory' : 'file'} ${d.name}`)
        .sort();
      expect(seen, `/${dir}`).toEqual(listed);
    }
    const everything = (await vol.listdir('/', { recursive: true, version: 1 })).map((e) => e.path).sort();
    const walked = (await readdir(mnt, { recursive: true })).sort();
    expect(walked).toEqual(everything);
    // Inode numbers (use_ino) are the entries' ids in the version: the root is 1.
    const { connection } = setup.stowage;
    const ids = new Map<string, number>();
    const call = connection.volumes.listFiles({ volume: name, path: '', recursive: true, version: 1, pageSize: 0, pageToken: '', withoutExtents: true });
    for await (const batch of connection.stream(call)) for (const e of batch.entries) ids.set(e.path, e.id);
    expect(ids.size).toBe(everything.length);
    expect((await stat(mnt)).ino).toBe(1);
    for (const p of ['one.bin', 'tree', everything[everything.length - 1]!]) {
      expect((await stat(join(mnt, p))).ino, p).toBe(ids.get(p));
    }
  });

  it('finds a name spelled in another Unicode form than the stored NFC', { timeout: 30_000 }, async () => {
    const nfd = NFC_NAME.normalize('NFD');
    expect(nfd).not.toBe(NFC_NAME);
    expect((await readFile(join(mnt, nfd))).equals(want.get(NFC_NAME)!)).toBe(true);
    expect((await stat(join(mnt, nfd))).ino).toBe((await stat(join(mnt, NFC_NAME))).ino);
    // Listed as stored.
    expect(await readdir(join(mnt, 'unicode'))).toEqual([NFC_NAME.split('/')[1]]);
  });

  it('refuses every kind of write with EROFS', { timeout: 30_000 }, async () => {
    const file = join(mnt, 'one.bin');
    expect(await errnoCode(writeFile(join(mnt, 'new.bin'), 'x'))).toBe('EROFS');
    expect(await errnoCode(writeFile(file, 'x'))).toBe('EROFS');
    expect(await errnoCode(open(file, 'r+'))).toBe('EROFS');
    expect(await errnoCode(appendFile(file, 'x'))).toBe('EROFS');
    expect(await errnoCode(truncate(file, 0))).toBe('EROFS');
    expect(await errnoCode(chmod(file, 0o777))).toBe('EROFS');
    expect(await errnoCode(unlink(file))).toBe('EROFS');
    expect(await errnoCode(rename(file, join(mnt, 'moved.bin')))).toBe('EROFS');
    expect(await errnoCode(mkdir(join(mnt, 'newdir')))).toBe('EROFS');
    expect((await readFile(file)).equals(want.get('one.bin')!)).toBe(true);
  });

  it('fails a read of a damaged chunk with EIO and logs why, serving the intact chunk', { timeout: 30_000 }, async () => {
    const path = join(mnt, 'damaged.bin');
    const fh = await open(path, 'r');
    try {
      const buf = Buffer.alloc(4096);
      const { bytesRead } = await fh.read(buf, 0, 4096, 0);
      expect(bytesRead).toBe(4096);
      expect(buf.equals(damaged.subarray(0, 4096))).toBe(true);
      expect(await errnoCode(fh.read(Buffer.alloc(4096), 0, 4096, CHUNK + 10))).toBe('EIO');
    } finally {
      await fh.close();
    }
    expect(await errnoCode(readFile(path))).toBe('EIO');
    expect(main.stderr()).toMatch(/read failed/);
    expect(main.stderr()).toContain('/damaged.bin');
    // Other files are not affected.
    expect((await readFile(join(mnt, 'one.bin'))).equals(want.get('one.bin')!)).toBe(true);
  });

  it('recovers the mount point a killed mount process left, with the same inode numbers', { timeout: 60_000 }, async () => {
    const paths = ['big.bin', 'tree', 'tree/d000/f00000.bin', 'one.bin'];
    const inodes = await Promise.all(paths.map(async (p) => (await stat(join(mnt, p))).ino));
    expect(await stopMount(main, 'SIGKILL')).toBe('SIGKILL');
    // stat may still be answered from the kernel's attribute cache; statfs asks the (dead) process.
    expect(await errnoCode(statfs(mnt))).toBe('ENOTCONN');

    main = await startMount(mnt, ['--version', '1']);
    expect(main.line).toBe(`mounted ${name} version 1 at ${mnt}`);
    expect(await Promise.all(paths.map(async (p) => (await stat(join(mnt, p))).ino))).toEqual(inodes);
    expect(sha256(await readFile(join(mnt, 'big.bin')))).toBe(sha256(want.get('big.bin')!));
  });

  it('unmounts cleanly on SIGINT', { timeout: 30_000 }, async () => {
    expect(await stopMount(main, 'SIGINT')).toBe(0);
    expect(main.stderr()).toContain(`unmounted ${mnt}`);
    expect(mountedPaths()).not.toContain(mnt);
    expect(existsSync(join(mnt, 'big.bin'))).toBe(false);
  });

  it('mounts the latest version by default; stowage unmount ends the mount process', { timeout: 60_000 }, async () => {
    const dir = join(work, 'latest');
    const m = await startMount(dir);
    try {
      expect(m.line).toBe(`mounted ${name} version 2 at ${dir}`);
      expect(await readFile(join(dir, 'v2-only.txt'), 'utf8')).toBe('only in v2\n');

      // A live mount point is not taken over.
      const again = await runCli(['mount', name, dir, '--cache-dir', cacheDir], env);
      expect(again.code, again.stderr).toBe(5);
      expect(again.stderr).toContain('already a mount point');

      const un = await runCli(['unmount', dir], env);
      expect(un.code, un.stderr).toBe(0);
      expect(await m.exited).toBe(0);
      expect(mountedPaths()).not.toContain(dir);
      expect((await runCli(['unmount', dir], env)).code).toBe(5);
    } finally {
      await stopMount(m, 'SIGKILL');
    }
  });

  it('reads through the server stream when direct transfer is off (STOWAGE_TRANSFER=proxy)', { timeout: 60_000 }, async () => {
    const dir = join(work, 'proxy');
    const m = await startMount(dir, ['--version', '1'], { cacheDir: join(work, 'cache-proxy'), env: { STOWAGE_TRANSFER: 'proxy' } });
    try {
      for (const path of ['big.bin', 'mid.bin', 'tree/d000/f00000.bin']) {
        expect(sha256(await readFile(join(dir, path))), path).toBe(sha256(want.get(path)!));
      }
    } finally {
      expect(await stopMount(m, 'SIGTERM')).toBe(0);
    }
  });

  it('fails without mounting anything for a missing volume or version', { timeout: 30_000 }, async () => {
    const dir = join(work, 'never');
    mountDirs.add(dir);
    const noVolume = await runCli(['mount', uniqueName('missing'), dir, '--cache-dir', cacheDir], env);
    expect(noVolume.code, noVolume.stderr).toBe(3);
    const noVersion = await runCli(['mount', name, dir, '--version', '9', '--cache-dir', cacheDir], env);
    expect(noVersion.code, noVersion.stderr).toBe(3);
    const badSize = await runCli(['mount', name, dir, '--cache-size', 'lots', '--cache-dir', cacheDir], env);
    expect(badSize.code, badSize.stderr).toBe(2);
    expect(mountedPaths()).not.toContain(dir);
  });
});
