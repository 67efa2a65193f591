/** `stowage volume …`: a thin layer over the SDK, following `modal volume`. */
import type { Command } from 'commander';
import { existsSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, join, resolve, sep } from 'node:path';
import { createInterface } from 'node:readline/promises';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { AlreadyExistsError, InvalidArgumentError, NotFoundError, Volume, type FileInfo, type VolumeInfo } from '../client/index.js';
import { defaultConnection } from '../client/index.js';
import { DiskChunkCache } from '../fuse-mount/cache/disk-cache.js';
import { commitMount, reloadMount } from '../fuse-mount/mount-state.js';
import { warmupVolume, type WarmupResult } from '../fuse-mount/read/warmup.js';
import { CACHE_MODE_FLAGS, CACHE_MODE_HELP, DEFAULT_CACHE_SIZE, FETCH_THREADS_FLAGS, FETCH_THREADS_HELP, cacheModes, defaultCacheDir, parseFetchThreads, parseSize } from './mount.js';
import { quote } from '../common/quote.js';
import { checkName } from '../common/validate.js';
import { bytes, printJson, progressBar, transferSummary } from './output.js';
import { registerAdmin } from './volume-admin.js';
import { ALLOW_MISSING_FLAGS, ALLOW_MISSING_HELP, allowMissing, exitOnClosedStdout, writeLine } from './values.js';

interface JsonFlag {
  json?: boolean;
}

const version = (v: string | undefined): number | undefined => {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`--version ${quote(v)} is not a version number (1, 2, …)`);
  return n;
};

function volumeRow(v: VolumeInfo): string {
  return `${v.name.padEnd(24)} ${String(v.latestVersion).padStart(7)} ${String(v.fileCount).padStart(8)} ${bytes(v.totalBytes).padStart(10)}  ${new Date(v.createdAtMs).toISOString()}`;
}

function fileRow(f: FileInfo): string {
  const name = f.type === 'directory' ? `${f.path}/` : f.path;
  return `${f.type === 'directory' ? 'dir ' : 'file'} ${(f.type === 'directory' ? '-' : bytes(f.size)).padStart(10)}  ${f.mtime.toISOString()}  ${name}`;
}

const count = (n: number): string => n.toLocaleString('en-US');

/** "warmed 1,001 files (65.9 MiB) of weights version 3 into ~/.cache/stowage: 9 chunks fetched (65.9 MiB), 0 already cached" */
function warmupSummary(r: WarmupResult, cacheDir: string): string {
  const home = homedir();
  const dir = cacheDir.startsWith(home + sep) ? `~${cacheDir.slice(home.length)}` : cacheDir;
  const notKept = r.chunksNotKept > 0 ? `; ${count(r.chunksNotKept)} did not stay in the cache (raise --cache-size)` : '';
  return (
    `warmed ${count(r.files)} file${r.files === 1 ? '' : 's'} (${bytes(r.bytes)}) of ${r.volume} version ${r.version} into ${dir}: ` +
    `${count(r.chunksFetched)} chunk${r.chunksFetched === 1 ? '' : 's'} fetched (${bytes(r.bytesFetched)}), ${count(r.chunksCached)} already cached${notKept}`
  );
}

/** Whether `path` names a directory in the volume's latest version. */
async function isDirectory(v: Volume, path: string): Promise<boolean> {
  try {
    return (await v.stat(path)).type === 'directory';
  } catch (err) {
    if (err instanceof NotFoundError) return false;
    throw err;
  }
}

export function register(program: Command): void {
  const vol = program.command('volume').description('write-once file trees for datasets and model weights');

  vol
    .command('create <name>')
    .description('create a volume')
    .action(async (name: string) => {
      const conn = defaultConnection();
      await conn.unary(conn.volumes.createVolume.bind(conn.volumes), { name: checkName('volume', name), ephemeral: false, existOk: false });
      console.log(`created volume ${name}`);
    });

  vol
    .command('list')
    .description('list volumes')
    .option('--json', 'print JSON')
    .action(async (flags: JsonFlag) => {
      const vols = await Volume.list();
      if (flags.json) return printJson(vols);
      console.log(`${'NAME'.padEnd(24)} ${'VERSION'.padStart(7)} ${'FILES'.padStart(8)} ${'SIZE'.padStart(10)}  CREATED`);
      for (const v of vols) console.log(volumeRow(v));
    });

  vol
    .command('ls <volume> [path]')
    .description('list files in a volume (default: its root)')
    .option('-r, --recursive', 'list everything below the path')
    .option('--version <n>', 'list this version instead of the latest')
    .option('--json', 'print JSON')
    .action(async (name: string, path: string | undefined, flags: JsonFlag & { recursive?: boolean; version?: string }) => {
      exitOnClosedStdout();
      const v = await Volume.fromName(name);
      const entries = v.iterdir(path ?? '/', { recursive: flags.recursive, version: version(flags.version) });
      // Streamed as the server sends it: a directory of a million entries never sits in memory.
      if (flags.json) {
        let first = true;
        process.stdout.write('[');
        for await (const e of entries) {
          process.stdout.write(`${first ? '\n' : ',\n'}  ${JSON.stringify(e)}`);
          first = false;
        }
        process.stdout.write(first ? ']\n' : '\n]\n');
        return;
      }
      for await (const e of entries) await writeLine(fileRow(e));
    });

  vol
    .command('put <volume> <local> [remote]')
    .description('upload a file or directory (remote ending in / means into that directory); - reads stdin')
    .option('-f, --force', 'overwrite files that exist')
    .option('--json', 'print the summary as JSON')
    .action(async (name: string, local: string, remote: string | undefined, flags: JsonFlag & { force?: boolean }) => {
      const v = await Volume.fromName(name);
      const bar = progressBar('put', !flags.json);
      const batch = v.batchUpload({ force: flags.force, onProgress: bar.update });
      let target = remote ?? '/';
      if (local === '-') {
        if (!remote || remote.endsWith('/')) throw new InvalidArgumentError('put from stdin (-) needs a remote file path');
        batch.putFile(process.stdin, target);
      } else {
        if (!existsSync(local)) throw new NotFoundError(`local path ${local} not found`);
        if (statSync(local).isDirectory()) {
          batch.putDirectory(local, target);
        } else {
          if (!target.endsWith('/') && (await isDirectory(v, target))) target = `${target}/`;
          if (target.endsWith('/')) target = `${target}${basename(local)}`;
          batch.putFile(local, target);
        }
      }
      let result;
      try {
        result = await batch.commit();
      } finally {
        bar.stop();
      }
      if (flags.json) return printJson(result);
      console.log(transferSummary('uploaded', result, ` to ${name} as version ${result.version}`));
    });

  vol
    .command('get <volume> <remote> [local]')
    .description('download a file or directory (recursively); local - writes a file to stdout')
    .option('-f, --force', 'overwrite local files that exist')
    .option('--version <n>', 'read this version instead of the latest')
    .option('--json', 'print the summary as JSON')
    .action(async (name: string, remote: string, local: string | undefined, flags: JsonFlag & { force?: boolean; version?: string }) => {
      const v = await Volume.fromName(name);
      const at = version(flags.version);
      const st = await v.stat(remote, { version: at });
      if (local === '-') {
        if (st.type !== 'file') throw new InvalidArgumentError(`"${st.path}" is a directory: give a local directory instead of -`);
        await pipeline(Readable.from(v.readFile(remote, { version: at })), process.stdout);
        return;
      }
      let dest = local ?? '.';
      const destIsDir = existsSync(dest) && statSync(dest).isDirectory();
      if (destIsDir || dest.endsWith('/')) dest = join(dest, basename(st.path) || '.');
      if (st.type === 'file' && existsSync(dest) && !flags.force) {
        throw new AlreadyExistsError(`local file ${dest} exists (overwrite it with: stowage volume get -f)`);
      }
      const bar = progressBar('get', !flags.json);
      let result;
      try {
        result = await v.download(remote, dest, { version: at, onProgress: bar.update });
      } finally {
        bar.stop();
      }
      if (flags.json) return printJson({ ...result, local: dest });
      console.log(transferSummary('downloaded', result, ` to ${dest} from version ${result.version}`));
    });

  vol
    .command('warmup <volume> [paths...]')
    .description("fetch files (directories recursively; default: the whole volume) into this host's chunk cache, so that a mount reads them warm")
    .option('--version <n>', 'warm this version instead of the latest')
    .option('--cache-dir <dir>', 'chunk cache directory, as for stowage mount (default: STOWAGE_CACHE_DIR or ~/.cache/stowage)')
    .option('--cache-size <size>', 'bound on the chunk cache on disk, as for stowage mount', DEFAULT_CACHE_SIZE)
    .option(CACHE_MODE_FLAGS, CACHE_MODE_HELP, 'private')
    .option(FETCH_THREADS_FLAGS, FETCH_THREADS_HELP)
    .option('--json', 'print the summary as JSON')
    .action(async (name: string, paths: string[], flags: JsonFlag & { version?: string; cacheDir?: string; cacheSize: string; cacheMode: string; fetchThreads?: string }) => {
      const at = version(flags.version);
      const maxBytes = parseSize('--cache-size', flags.cacheSize);
      const modes = cacheModes(flags.cacheMode);
      const fetchThreads = parseFetchThreads(flags.fetchThreads, false);
      const cacheDir = resolve(flags.cacheDir ?? defaultCacheDir());
      const cache = await DiskChunkCache.open({ dir: cacheDir, maxBytes, modes, fetchThreads });
      const bar = progressBar('warmup', !flags.json);
      let result;
      try {
        result = await warmupVolume({ connection: defaultConnection(), volume: name, paths, version: at, cache, onProgress: bar.update });
      } finally {
        bar.stop();
        await cache.close();
      }
      if (flags.json) return printJson({ ...result, cacheDir });
      console.log(warmupSummary(result, cacheDir));
    });

  vol
    .command('reload <dir>')
    .description('move the stowage mount at DIR to the newest version of its volume without unmounting (files open now keep their version)')
    .action(async (dir: string) => {
      const { from, to } = await reloadMount(dir);
      console.log(`reloaded ${dir}: version ${from} -> ${to}`);
    });

  vol
    .command('commit <dir>')
    .description('commit what the writable mount at DIR has staged as one new version, and wait for it (the mount then serves it)')
    .option('--json', 'print JSON')
    .action(async (dir: string, flags: JsonFlag) => {
      const r = await commitMount(dir);
      if (flags.json) return printJson(r);
      console.log(
        r.version === r.from
          ? `nothing to commit in ${dir} (version ${r.version})`
          : `committed ${dir}: version ${r.from} -> ${r.version} (${r.files} file${r.files === 1 ? '' : 's'}, ${bytes(r.bytes)}; ${r.renamed} renamed, ${r.removed} removed)`,
      );
    });

  vol
    .command('rm <volume> <path>')
    .description('remove a file (or a directory with -r) as a new version')
    .option('-r, --recursive', 'remove a directory and everything in it')
    .action(async (name: string, path: string, flags: { recursive?: boolean }) => {
      const v = await Volume.fromName(name);
      const n = await v.removeFile(path, { recursive: flags.recursive });
      console.log(`removed ${path} from ${name} (version ${n})`);
    });

  vol
    .command('cp <volume> <paths...>')
    .description('copy files (directories with -r) inside a volume: cp VOLUME SRC... DST (no data is moved)')
    .option('-r, --recursive', 'copy directories and everything in them')
    .option('-f, --force', 'overwrite files that exist')
    .action(async (name: string, paths: string[], flags: { force?: boolean; recursive?: boolean }) => {
      if (paths.length < 2) throw new InvalidArgumentError('cp needs at least one source and a destination');
      const v = await Volume.fromName(name);
      const dst = paths.pop()!;
      // The server refuses a directory source without -r within the commit, so nothing is half copied.
      const n = await v.copyFiles(paths, dst, { force: flags.force, recursive: flags.recursive ?? false });
      console.log(`copied ${paths.join(', ')} to ${dst} in ${name} (version ${n})`);
    });

  vol
    .command('delete <volume>')
    .description('delete a volume and all its versions')
    .option('-y, --yes', 'do not ask for confirmation')
    .option(ALLOW_MISSING_FLAGS, ALLOW_MISSING_HELP)
    .action(async (name: string, flags: { yes?: boolean; allowMissing?: boolean }) => {
      await allowMissing(flags.allowMissing, `volume ${name}`, async () => {
        await Volume.fromName(name);
        if (!flags.yes) {
          if (!process.stdin.isTTY) throw new InvalidArgumentError(`deleting volume "${name}" needs --yes when not run from a terminal`);
          const rl = createInterface({ input: process.stdin, output: process.stderr });
          const answer = await rl.question(`delete volume "${name}" and all its versions? type its name to confirm: `);
          rl.close();
          if (answer.trim() !== name) throw new InvalidArgumentError('not confirmed; nothing was deleted');
        }
        await Volume.delete(name);
        console.log(`deleted volume ${name}`);
      });
    });

  vol
    .command('rename <volume> <new-name>')
    .description('rename a volume')
    .action(async (name: string, newName: string) => {
      await Volume.rename(name, newName);
      console.log(`renamed volume ${name} to ${newName}`);
    });

  vol
    .command('versions <volume>')
    .description('list the versions of a volume')
    .option('--json', 'print JSON')
    .action(async (name: string, flags: JsonFlag) => {
      const versions = await (await Volume.fromName(name)).versions();
      if (flags.json) return printJson(versions);
      console.log(`${'VERSION'.padStart(7)} ${'FILES'.padStart(8)} ${'SIZE'.padStart(10)}  CREATED`);
      for (const x of versions) {
        console.log(`${String(x.version).padStart(7)} ${String(x.fileCount).padStart(8)} ${bytes(x.totalBytes).padStart(10)}  ${new Date(x.createdAtMs).toISOString()}`);
      }
    });

  registerAdmin(vol);
}
