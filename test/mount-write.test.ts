/**
 * Writable FUSE mounts (`stowage mount --writable`), for real: a stowage
 * server in this process on the local-directory store (on a port of its own,
 * so that a test can stop it and start it again), `stowage mount` as child
 * processes, writes through the kernel. What is written is checked where it
 * must land: in a new version (through the SDK and through a second,
 * read-only mount), byte for byte. Every mount point is detached and every
 * mount process killed by PID in afterAll. No timing assertions.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import { appendFile, chmod, mkdir, open, readFile, readdir, rename, rmdir, stat, symlink, truncate, unlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Connection, Volume } from '../src/client/index.js';
import { startServer, type RunningServer } from '../src/server/server.js';
import { removeScratch, scratchDir, waitFor } from './support/faults.js';
import { cleanUpMounts, detach, errnoCode, mountDirs, startMountProcess, stopMount, type MountProcess } from './support/mount.js';
import { freePort, runCli, uniqueName } from './support/processes.js';
import { KiB, MiB, sha256 } from './support/volume-data.js';

const CHUNK = 1 * MiB;

describe('writable FUSE mount: staged writes committed as new versions (local store)', () => {
  let work: string;
  let dataDir: string;
  let port: number;
  let server: RunningServer | undefined;
  let conn: Connection;
  let env: Record<string, string>;
  const name = uniqueName('write');
  let vol: Volume;
  let mnt: string;
  let main: MountProcess;
  let stagingDir: string;
  /** Read-only mount of the latest version, made by the round-trip test. */
  let reader: MountProcess | undefined;

  const committed = {
    'keep.txt': Buffer.from('kept as it is\n'),
    'rewrite.txt': Buffer.from('the old contents of rewrite.txt\n'),
    'append.txt': Buffer.from('a committed file nobody may append to\n'),
    'gone.txt': Buffer.from('removed through the mount\n'),
    'old-name.bin': randomBytes(2 * CHUNK + 777),
    'dir/inner.txt': Buffer.from('the only file of dir/\n'),
  };

  async function startServerAgain(): Promise<void> {
    server = await startServer({ dataDir, host: '127.0.0.1', port, only: ['volume'] });
    conn?.close();
    conn = new Connection({ server: server.address, token: server.token });
    vol = await Volume.fromName(name, { createIfMissing: true, connection: conn, chunkSize: CHUNK });
  }

  async function latest(): Promise<number> {
    return (await vol.versions()).at(-1)!.version;
  }

  /** `stowage volume commit DIR --json`, parsed. */
  async function commitJson(dir: string): Promise<{ from: number; version: number; files: number; renamed: number; removed: number; chunksTransferred: number }> {
    const r = await runCli(['volume', 'commit', dir, '--json'], env);
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as { from: number; version: number; files: number; renamed: number; removed: number; chunksTransferred: number };
  }

  beforeAll(async () => {
    work = scratchDir('mount-write');
    dataDir = join(work, 'server');
    mnt = join(work, 'mnt');
    port = await freePort();
    await startServerAgain();
    const runtimeDir = join(work, 'run');
    mkdirSync(runtimeDir);
    env = { STOWAGE_SERVER: server!.address, STOWAGE_TOKEN: server!.token, STOWAGE_RUNTIME_DIR: runtimeDir, STOWAGE_CHUNK_SIZE: String(CHUNK) };
    const batch = vol.batchUpload();
    for (const [path, data] of Object.entries(committed)) batch.putFile(data, path);
    expect((await batch.commit()).version).toBe(1);
    main = await startMountProcess({ volume: name, dir: mnt, cacheDir: join(work, 'cache'), args: ['--writable'], env });
    const m = /^mounted (\S+) version 1 at (\S+) \(writable; staging in (\S+)\)$/.exec(main.line);
    expect(m, main.line).not.toBeNull();
    stagingDir = m![3]!;
    expect(stagingDir.startsWith(join(work, 'cache', 'staging'))).toBe(true);
  });

  afterAll(async () => {
    cleanUpMounts();
    conn?.close();
    await server?.stop();
    for (const dir of mountDirs) detach(dir);
    removeScratch();
  });

  /**
   * Waits for the mount process to have logged `text`: its stderr reaches this
   * process through a pipe, which may deliver it after the call it explains
   * has returned.
   */
  const logged = (text: string): Promise<true> => waitFor(`the mount to log "${text}"`, () => (main.stderr().includes(text) ? true : undefined), 10_000);

  it('round trip: files written through the mount are committed by stowage volume commit and read back from a second mount and the SDK', { timeout: 60_000 }, async () => {
    const small = Buffer.from('written through the mount\n');
    const mid = randomBytes(300 * KiB);
    // Over 8 MiB, written out of order: the tail first, then the rest, then a patch in the middle.
    const big = randomBytes(9 * MiB + 12_345);
    await writeFile(join(mnt, 'a.txt'), small);
    await mkdir(join(mnt, 'sub/deep'), { recursive: true });
    await writeFile(join(mnt, 'sub/deep/mid.bin'), mid);
    const fh = await open(join(mnt, 'big.bin'), 'w');
    try {
      const tail = 5 * MiB;
      await fh.write(big, tail, big.length - tail, tail);
      for (let at = 0; at < tail; at += MiB) await fh.write(big, at, Math.min(MiB, tail - at), at);
      const patch = randomBytes(100 * KiB);
      patch.copy(big, 3 * MiB + 5);
      await fh.write(patch, 0, patch.length, 3 * MiB + 5);
    } finally {
      await fh.close();
    }
    const wrote = { 'a.txt': small, 'sub/deep/mid.bin': mid, 'big.bin': big };

    // Staged, not committed: the mount shows it, the volume does not have it yet.
    expect(await latest()).toBe(1);
    for (const [path, data] of Object.entries(wrote)) expect(sha256(await readFile(join(mnt, path))), path).toBe(sha256(data));
    expect((await stat(join(mnt, 'big.bin'))).size).toBe(big.length);
    expect((await readdir(mnt)).sort()).toEqual(['a.txt', 'append.txt', 'big.bin', 'dir', 'gone.txt', 'keep.txt', 'old-name.bin', 'rewrite.txt', 'sub']);

    const r = await runCli(['volume', 'commit', mnt], env);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toMatch(new RegExp(`^committed ${mnt}: version 1 -> 2 \\(3 files, `));
    expect(main.stderr()).toContain(`committed ${name} at ${mnt} (request): version 1 -> 2 (3 files`);
    expect(await latest()).toBe(2);
    // Nothing is left to commit, and nothing is left in the staging directory.
    const again = await commitJson(mnt);
    expect([again.from, again.version, again.files]).toEqual([2, 2, 0]);
    expect(await readdir(join(stagingDir, 'files'))).toEqual([]);

    for (const [path, data] of Object.entries(wrote)) expect(sha256(await vol.readBytes(path)), `SDK ${path}`).toBe(sha256(data));
    const dir2 = join(work, 'reader');
    reader = await startMountProcess({ volume: name, dir: dir2, cacheDir: join(work, 'cache-reader'), env });
    expect(reader.line).toBe(`mounted ${name} version 2 at ${dir2}`);
    for (const [path, data] of Object.entries({ ...committed, ...wrote })) {
      expect(sha256(await readFile(join(dir2, path))), `second mount ${path}`).toBe(sha256(data));
    }
    // The writing mount serves version 2 itself, with the same bytes.
    for (const [path, data] of Object.entries(wrote)) expect(sha256(await readFile(join(mnt, path))), path).toBe(sha256(data));
  });

  it('replaces a committed file whole (O_TRUNC), and refuses in-place writes into one with EPERM and a logged reason', { timeout: 30_000 }, async () => {
    const from = await latest();
    await writeFile(join(mnt, 'rewrite.txt'), 'replaced whole\n');
    expect(await readFile(join(mnt, 'rewrite.txt'), 'utf8')).toBe('replaced whole\n');

    const file = join(mnt, 'append.txt');
    expect(await errnoCode(appendFile(file, 'more'))).toBe('EPERM');
    expect(await errnoCode(open(file, 'r+'))).toBe('EPERM');
    expect(await errnoCode(truncate(file, 3))).toBe('EPERM');
    expect((await readFile(file)).equals(committed['append.txt'])).toBe(true);
    await logged('/append.txt is a committed file of a write-once volume and cannot be opened for writing without O_TRUNC');

    // A staged file is an ordinary file: r+ writes in place, appends, truncation.
    await writeFile(join(mnt, 'staged.txt'), 'abcdef');
    const fh = await open(join(mnt, 'staged.txt'), 'r+');
    await fh.write('XY', 2);
    await fh.close();
    await appendFile(join(mnt, 'staged.txt'), '-end');
    await truncate(join(mnt, 'staged.txt'), 8);
    expect(await readFile(join(mnt, 'staged.txt'), 'utf8')).toBe('abXYef-e');

    const c = await commitJson(mnt);
    expect([c.from, c.version, c.files]).toEqual([from, from + 1, 2]);
    expect((await vol.readBytes('rewrite.txt')).toString()).toBe('replaced whole\n');
    expect((await vol.readBytes('staged.txt')).toString()).toBe('abXYef-e');
    expect((await vol.readBytes('append.txt')).equals(committed['append.txt'])).toBe(true);
  });

  it('commits unlink, rename, chmod and rmdir in one version (a renamed committed file moves no bytes); directory renames are EXDEV', { timeout: 30_000 }, async () => {
    const from = await latest();
    await unlink(join(mnt, 'gone.txt'));
    await mkdir(join(mnt, 'renamed'));
    await rename(join(mnt, 'old-name.bin'), join(mnt, 'renamed/new-name.bin'));
    await unlink(join(mnt, 'dir/inner.txt'));
    await rmdir(join(mnt, 'dir'));
    await mkdir(join(mnt, 'empty'));
    await chmod(join(mnt, 'append.txt'), 0o600);
    // What a volume cannot store but tools set anyway is accepted and changes nothing.
    await utimes(join(mnt, 'keep.txt'), new Date(0), new Date(0));
    await chmod(join(mnt, 'sub'), 0o700);
    expect(await errnoCode(symlink('keep.txt', join(mnt, 'link')))).toBe('EPERM');
    expect(await errnoCode(rename(join(mnt, 'sub'), join(mnt, 'sub2')))).toBe('EXDEV');
    await logged('/sub is a directory');
    expect(await errnoCode(stat(join(mnt, 'gone.txt')))).toBe('ENOENT');
    expect((await readdir(mnt)).sort()).toEqual(['a.txt', 'append.txt', 'big.bin', 'empty', 'keep.txt', 'renamed', 'rewrite.txt', 'staged.txt', 'sub']);

    const c = await commitJson(mnt);
    // Put again as stored: the renamed file and the chmod-ed one. Removed: gone.txt, dir/inner.txt and the old name.
    expect([c.version, c.files, c.renamed, c.removed, c.chunksTransferred]).toEqual([from + 1, 0, 2, 3, 0]);
    expect((await vol.stat('append.txt')).mode & 0o777).toBe(0o600);
    expect((await stat(join(mnt, 'append.txt'))).mode & 0o777).toBe(0o600);
    const listed = (await vol.listdir('/', { recursive: true })).filter((f) => f.type === 'file').map((f) => f.path).sort();
    expect(listed).toEqual(['a.txt', 'append.txt', 'big.bin', 'keep.txt', 'renamed/new-name.bin', 'rewrite.txt', 'staged.txt', 'sub/deep/mid.bin']);
    expect(sha256(await vol.readBytes('renamed/new-name.bin'))).toBe(sha256(committed['old-name.bin']));
    // A volume stores no empty directory: empty/ lives on in this mount only.
    expect((await stat(join(mnt, 'empty'))).isDirectory()).toBe(true);
    expect(await errnoCode(stat(join(mnt, 'dir')))).toBe('ENOENT');
    expect(sha256(await readFile(join(mnt, 'renamed/new-name.bin')))).toBe(sha256(committed['old-name.bin']));
  });

  it('fsync and fdatasync of a staged file commit before they return', { timeout: 30_000 }, async () => {
    const from = await latest();
    const fh = await open(join(mnt, 'synced.log'), 'w');
    try {
      await fh.write('first line\n');
      await fh.sync();
      expect(await latest()).toBe(from + 1);
      expect((await vol.readBytes('synced.log')).toString()).toBe('first line\n');
      await fh.write('second line\n');
      await fh.datasync();
      expect(await latest()).toBe(from + 2);
      expect((await vol.readBytes('synced.log')).toString()).toBe('first line\nsecond line\n');
    } finally {
      await fh.close();
    }
    expect(main.stderr()).toContain(`(fsync): version ${from} -> ${from + 1}`);
  });

  it('keeps the staged changes when a commit fails (server down), and a later commit succeeds', { timeout: 60_000 }, async () => {
    const from = await latest();
    const pending = randomBytes(CHUNK + 4321);
    await writeFile(join(mnt, 'pending.bin'), pending);
    await server!.stop();
    server = undefined;

    const failed = await runCli(['volume', 'commit', mnt], env);
    expect(failed.code).toBe(6); // UNAVAILABLE
    expect(failed.stderr).toMatch(/^error: /);
    expect(main.stderr()).toMatch(/error: committing .* failed \(request\); the changes stay staged in /);
    // fsync reports the failure too.
    const fh = await open(join(mnt, 'synced-while-down.txt'), 'w');
    try {
      await fh.write('written while the server is down\n');
      expect(await errnoCode(fh.sync())).toBe('EIO');
    } finally {
      await fh.close();
    }
    // Nothing was lost: the mount still reads the staged bytes.
    expect(sha256(await readFile(join(mnt, 'pending.bin')))).toBe(sha256(pending));

    await startServerAgain();
    // The mount's connection comes back on its own, after a back-off.
    const c = await waitFor('a commit after the restart', async () => {
      const r = await runCli(['volume', 'commit', mnt, '--json'], env);
      return r.code === 0 ? (JSON.parse(r.stdout) as { from: number; version: number; files: number }) : undefined;
    });
    expect([c.from, c.version, c.files]).toEqual([from, from + 1, 2]);
    expect(sha256(await vol.readBytes('pending.bin'))).toBe(sha256(pending));
    expect((await vol.readBytes('synced-while-down.txt')).toString()).toBe('written while the server is down\n');
  });

  it('a read-only mount still refuses writes with EROFS, and has nothing to commit', { timeout: 30_000 }, async () => {
    const dir2 = reader!.dir;
    expect(await errnoCode(writeFile(join(dir2, 'new.txt'), 'x'))).toBe('EROFS');
    expect(await errnoCode(writeFile(join(dir2, 'keep.txt'), 'x'))).toBe('EROFS');
    expect(await errnoCode(unlink(join(dir2, 'keep.txt')))).toBe('EROFS');
    expect(await errnoCode(mkdir(join(dir2, 'newdir')))).toBe('EROFS');
    const r = await runCli(['volume', 'commit', dir2], env);
    expect(r.code, r.stderr).toBe(5);
    expect(r.stderr).toContain('mounted read-only');
    expect(await stopMount(reader!, 'SIGTERM')).toBe(0);
  });

  it('commits what is staged when the mount process is stopped (SIGTERM), then deletes its staging directory', { timeout: 30_000 }, async () => {
    const from = await latest();
    await writeFile(join(mnt, 'at-exit.txt'), 'committed on the way out\n');
    await unlink(join(mnt, 'keep.txt'));
    expect(await stopMount(main, 'SIGTERM')).toBe(0);
    expect(main.stderr()).toContain(`(unmount): version ${from} -> ${from + 1}`);
    expect(await latest()).toBe(from + 1);
    expect((await vol.readBytes('at-exit.txt')).toString()).toBe('committed on the way out\n');
    expect((await vol.listdir('/')).map((f) => f.path)).not.toContain('keep.txt');
    expect(existsSync(stagingDir)).toBe(false);
  });

  it('a killed writable mount leaves its staging directory, the next one says so, and a failed last commit keeps it too', { timeout: 60_000 }, async () => {
    const dir3 = join(work, 'killed');
    const m = await startMountProcess({ volume: name, dir: dir3, cacheDir: join(work, 'cache'), args: ['--writable'], env });
    const left = /staging in (\S+)\)$/.exec(m.line)![1]!;
    await writeFile(join(dir3, 'never-committed.txt'), 'lost with the process\n');
    expect(await stopMount(m, 'SIGKILL')).toBe('SIGKILL');
    detach(dir3);
    expect(existsSync(left)).toBe(true);
    const next = await startMountProcess({ volume: name, dir: dir3, cacheDir: join(work, 'cache'), args: ['--writable'], env });
    try {
      await waitFor('the warning about the staging directory left', () => (next.stderr().includes(left) ? true : undefined), 10_000);
      expect(next.stderr()).toContain('ended without committing');
      expect(await errnoCode(stat(join(dir3, 'never-committed.txt')))).toBe('ENOENT');

      // The commit at unmount fails: the process says where the changes are, keeps them, and exits 1.
      const kept = /staging in (\S+)\)$/.exec(next.line)![1]!;
      await writeFile(join(dir3, 'unlucky.txt'), 'the server is gone\n');
      await server!.stop();
      server = undefined;
      expect(await stopMount(next, 'SIGTERM')).toBe(1);
      expect(next.stderr()).toContain(`the last commit failed, so the uncommitted changes are kept in ${kept}`);
      expect(existsSync(kept)).toBe(true);
    } finally {
      await stopMount(next, 'SIGKILL');
      detach(dir3);
    }
  });
});
