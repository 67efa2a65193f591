/**
 * The ceiling of FUSE through fuse-native: a read-only file system that
 * serves `big.bin`, `small/…` and (when SHARDS_DIR is given) `shards/…` from
 * memory and does nothing else (no cache, no hashing, no network). Run as a
 * child process by the benchmark:
 *
 *   node dist/bench/mount-read/trivial-fuse.js MOUNTPOINT BIG_FILE SMALL_DIR [SHARDS_DIR]
 *
 * Same metadata timeouts as stowage's mount, no kernel_cache (every read
 * reaches this process, as a cold page cache would). SIGTERM / SIGINT
 * unmount and exit.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import Fuse, { type FuseStat } from 'fuse-native';

const [mnt, bigPath, smallDir, shardsDir] = process.argv.slice(2);
if (!mnt || !bigPath || !smallDir) {
  process.stderr.write('usage: trivial-fuse.js MOUNTPOINT BIG_FILE SMALL_DIR [SHARDS_DIR]\n');
  process.exit(2);
}

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const ENOENT = -2;
const EROFS = -30;
const now = Date.now();

/** path → file bytes, or the names in a directory. */
const files = new Map<string, Buffer>();
const dirs = new Map<string, string[]>();
files.set('/big.bin', readFileSync(bigPath));
dirs.set('/', shardsDir ? ['big.bin', 'shards', 'small'] : ['big.bin', 'small']);
if (shardsDir) {
  const names = readdirSync(shardsDir).sort();
  dirs.set('/shards', names);
  for (const n of names) files.set(`/shards/${n}`, readFileSync(join(shardsDir, n)));
}
const smallNames: string[] = [];
for (const d of readdirSync(smallDir).sort()) {
  smallNames.push(d);
  const names = readdirSync(join(smallDir, d)).sort();
  dirs.set(`/small/${d}`, names);
  for (const n of names) files.set(`/small/${d}/${n}`, readFileSync(join(smallDir, d, n)));
}
dirs.set('/small', smallNames);

const stat = (path: string): FuseStat | undefined => {
  const f = files.get(path);
  if (f) return { mode: S_IFREG | 0o444, uid: 0, gid: 0, size: f.length, nlink: 1, blocks: Math.ceil(f.length / 512), atime: now, mtime: now, ctime: now };
  if (dirs.has(path)) return { mode: S_IFDIR | 0o555, uid: 0, gid: 0, size: 4096, nlink: 2, atime: now, mtime: now, ctime: now };
  return undefined;
};

const fuse = new Fuse(
  mnt,
  {
    getattr: (path, cb) => {
      const s = stat(path);
      if (s) cb(0, s);
      else cb(ENOENT);
    },
    readdir: (path, cb) => {
      const names = dirs.get(path);
      if (!names) return cb(ENOENT);
      const base = path === '/' ? '' : path;
      cb(0, names, names.map((n) => stat(`${base}/${n}`)!));
    },
    open: (path, _flags, cb) => (files.has(path) ? cb(0, 1) : cb(ENOENT)),
    release: (_path, _fd, cb) => cb(0),
    read: (path, _fd, buffer, length, position, cb) => {
      const f = files.get(path);
      if (!f) return cb(ENOENT);
      if (position >= f.length) return cb(0);
      cb(f.copy(buffer, 0, position, Math.min(f.length, position + length)));
    },
    write: (_p, _fd, _b, _l, _pos, cb) => cb(EROFS),
  },
  { entryTimeout: 3600, attrTimeout: 3600, fsname: 'trivial', subtype: 'trivial' },
);

fuse.mount((err) => {
  if (err) {
    process.stderr.write(`trivial-fuse: cannot mount at ${mnt}: ${err.message}\n`);
    process.exit(1);
  }
  process.stdout.write(`mounted at ${mnt}\n`);
});

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    const leave = setTimeout(() => process.exit(0), 2000);
    fuse.unmount(() => {
      clearTimeout(leave);
      process.exit(0);
    });
  });
}
