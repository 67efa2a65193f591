/**
 * The server's data directory: one `stowage serve` at a time (real server
 * processes: a second one exits naming the first one's PID; after SIGKILL of
 * the first a new one starts, no stale lock in the way), and private to its
 * user whatever the umask: 0700 directories and 0600 files after a volume
 * put, a dict put and a queue put, an older directory with looser modes set
 * right at start. Needs `npm run build` (the server runs the built CLI).
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, lstatSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { Connection, Dict, Queue, Volume } from '../src/client/index.js';
import { LOCK_FILE } from '../src/server/data-dir.js';
import { ServeExited, isAlive, spawnServe, type ServeProcess } from './support/bridge.js';
import { escapeRegExp, failureOf } from './support/checks.js';
import { freePort, runCli, startStowage, tempDir, uniqueName } from './support/processes.js';
import { within } from './support/state-servers.js';
import { KiB } from './support/volume-data.js';

/** Every directory and regular file at or below `root` with its permission bits (octal text, for readable failures). */
function modesBelow(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const visit = (path: string) => {
    const st = lstatSync(path);
    if (!st.isDirectory() && !st.isFile()) return;
    out.set(path, (st.mode & 0o7777).toString(8));
    if (st.isDirectory()) for (const name of readdirSync(path)) visit(join(path, name));
  };
  visit(root);
  return out;
}

/** Paths whose mode is not 0700 (directories) or 0600 (files). */
function notPrivate(root: string): string[] {
  return [...modesBelow(root)]
    .filter(([path, mode]) => mode !== (lstatSync(path).isDirectory() ? '700' : '600'))
    .map(([path, mode]) => `${path} ${mode}`);
}

/** Runs `fn` with the process umask set to `mask` (children started meanwhile inherit it). */
async function withUmask<T>(mask: number, fn: () => Promise<T>): Promise<T> {
  const old = process.umask(mask);
  try {
    return await fn();
  } finally {
    process.umask(old);
  }
}

/** A volume put (chunks and a manifest), a dict put and a queue put through `connection`. */
async function writeSomething(connection: Connection): Promise<void> {
  const vol = await Volume.fromName(uniqueName('modes'), { createIfMissing: true, connection, chunkSize: 64 * KiB });
  const batch = vol.batchUpload();
  batch.putFile(randomBytes(200 * KiB), '/big.bin');
  batch.putFile(Buffer.from('small'), '/small.txt');
  await batch.commit();
  const d = await Dict.fromName<string, string>(uniqueName('modes'), { createIfMissing: true, connection });
  await d.put('k', 'v');
  const q = await Queue.fromName<string>(uniqueName('modes'), { createIfMissing: true, connection });
  await q.put('item');
}

const servers: ServeProcess[] = [];
afterAll(async () => {
  for (const s of servers) await s.kill();
});

async function serve(dataDir: string): Promise<ServeProcess> {
  const s = await spawnServe(dataDir, await freePort());
  servers.push(s);
  return s;
}

describe('one stowage serve per data directory', () => {
  it('a second server on the same data directory exits non-zero naming the PID of the first and the directory; the first serves on', async () => {
    const dataDir = join(tempDir('lock'), 'data');
    const first = await serve(dataDir);
    const err = await failureOf(() => serve(dataDir));
    expect(err, String(err)).toBeInstanceOf(ServeExited);
    const { exitCode, stderr } = err as ServeExited;
    expect(exitCode).toBe(5);
    expect(stderr).toMatch(escapeRegExp(`the data directory ${dataDir} is in use by another stowage server (PID ${first.pid}, holding ${join(dataDir, LOCK_FILE)})`));
    expect(stderr).toMatch(/stop that server first, or start this one with another --data-dir/);

    expect(isAlive(first.pid)).toBe(true);
    const connection = new Connection({ server: first.address, token: first.token });
    try {
      const d = await Dict.fromName<string, string>(uniqueName('lock'), { createIfMissing: true, connection });
      await d.put('still', 'serving');
      expect(await d.get('still')).toBe('serving');
    } finally {
      connection.close();
    }
  });

  it('after SIGKILL of the server, a new one starts on the same data directory (the lock died with the process)', async () => {
    const dataDir = join(tempDir('lock-kill'), 'data');
    const first = await serve(dataDir);
    let connection = new Connection({ server: first.address, token: first.token });
    const name = uniqueName('lock');
    try {
      const d = await Dict.fromName<string, string>(name, { createIfMissing: true, connection });
      await d.put('k', 'before the kill');
    } finally {
      connection.close();
    }
    await first.kill('SIGKILL');

    const second = await serve(dataDir);
    expect(readFileSync(join(dataDir, LOCK_FILE), 'utf8').trim()).toBe(String(second.pid));
    connection = new Connection({ server: second.address, token: second.token });
    try {
      const d = await Dict.fromName<string, string>(name, { connection });
      expect(await d.get('k')).toBe('before the kill');
    } finally {
      connection.close();
    }
    // And it holds the lock in turn.
    const third = await failureOf(() => serve(dataDir));
    expect((third as ServeExited).stderr).toMatch(escapeRegExp(`(PID ${second.pid},`));
  });

  it('a server stopped in this process lets the next one start on its data directory', async () => {
    const dataDir = join(tempDir('lock-stop'), 'data');
    const a = await startStowage({ dataDir });
    await a.stop();
    const b = await startStowage({ dataDir });
    await b.stop();
  });
});

describe('the data directory is private to the server user', () => {
  it('a data directory every user shares (sticky bit, as /tmp) is refused (exit 5) and left as it is', async () => {
    const shared = tempDir('sticky');
    chmodSync(shared, 0o1777);
    const r = await within('stowage serve on a shared directory to exit', runCli(['serve', '--data-dir', shared, '--port', '0'], { STOWAGE_LOG_LEVEL: 'warn' }), 30_000);
    expect(r.code, r.stderr).toBe(5);
    expect(r.stderr).toMatch(escapeRegExp(`${shared} is a directory every user shares (it has the sticky bit, as /tmp does); give stowage a directory of its own`));
    expect((lstatSync(shared).mode & 0o7777).toString(8)).toBe('1777');
    expect(readdirSync(shared)).toEqual([]);
  });

  it('stowage serve under umask 022: the data dir is 0700 and each file 0600 after a volume put, a dict put and a queue put', async () => {
    const dataDir = join(tempDir('modes'), 'data');
    const server = await withUmask(0o022, () => serve(dataDir));
    const connection = new Connection({ server: server.address, token: server.token });
    try {
      // The client runs here, under umask 022 too, and writes chunk files into the store itself (file:// URLs).
      await withUmask(0o022, () => writeSomething(connection));
    } finally {
      connection.close();
    }
    const modes = modesBelow(dataDir);
    for (const f of ['token', LOCK_FILE, 'index/data.mdb', 'dict/data.mdb', 'dict/lock.mdb', 'queue/data.mdb', 'bridge/data.mdb']) {
      expect(modes.get(join(dataDir, f)), f).toBe('600');
    }
    expect([...modes.keys()].filter((p) => p.startsWith(join(dataDir, 'store', 'chunks'))).length).toBeGreaterThan(3);
    expect(notPrivate(dataDir)).toEqual([]);
  });

  it('a server in this process under umask 000 (the library, without the CLI) makes the same modes', async () => {
    const dataDir = join(tempDir('modes-lib'), 'data');
    await withUmask(0o000, async () => {
      const s = await startStowage({ dataDir });
      try {
        await writeSomething(s.connection);
      } finally {
        await s.stop();
      }
    });
    expect(notPrivate(dataDir)).toEqual([]);
  });

  it('a data directory left with looser modes is set to 0700/0600 at start, and the server says so', async () => {
    const dataDir = join(tempDir('modes-old'), 'data');
    const s = await startStowage({ dataDir });
    try {
      await writeSomething(s.connection);
    } finally {
      await s.stop();
    }
    // As a server from before modes were set would have left it (umask 022).
    for (const [path] of modesBelow(dataDir)) chmodSync(path, lstatSync(path).isDirectory() ? 0o755 : 0o644);
    mkdirSync(join(dataDir, 'store', 'extra'), { mode: 0o777 });
    chmodSync(join(dataDir, 'store', 'extra'), 0o777);
    expect(notPrivate(dataDir).length).toBeGreaterThan(10);
    // Not stowage's: left as it is.
    writeFileSync(join(dataDir, 'notes.txt'), 'the admin keeps notes here\n', { mode: 0o644 });

    const lines: string[] = [];
    const log = pino(
      { level: 'info' },
      new Writable({
        write(chunk: Buffer, _enc, done) {
          lines.push(chunk.toString());
          done();
        },
      }),
    );
    const again = await startStowage({ dataDir, log });
    await again.stop();
    expect((lstatSync(join(dataDir, 'notes.txt')).mode & 0o777).toString(8)).toBe('644');
    rmSync(join(dataDir, 'notes.txt'));
    expect(notPrivate(dataDir)).toEqual([]);
    const said = lines.map((l) => (JSON.parse(l) as { msg: string }).msg).find((m) => m.includes('set the modes'));
    expect(said, lines.join('')).toMatch(new RegExp(`set the modes of \\d+ files and directories in the data directory ${escapeRegExp(dataDir).source} to 0700 \\(directories\\) and 0600 \\(files\\)`));
  });
});
