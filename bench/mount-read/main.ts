/**
 * mount-read: how fast files are read through stowage's FUSE mount, cold
 * (empty chunk cache) and warm, next to s3fs and `rclone mount` on the same
 * bytes on the same s3rver, with ceilings measured in the same run: parallel
 * ranged GETs straight from s3rver, the local file (page cache dropped and
 * kept), a trivial in-memory fuse-native file system, and the mount's own
 * cache files read plainly. Besides the sequential big file, the small files
 * and the stream, it runs the access patterns of data loaders (loaders.ts:
 * a weights load by 4 readers, random reads over shards) and a sweep of the
 * mount's --fetch-threads (sweep.ts).
 *
 *   npm run bench:mount-read -- [--quick] [--size-mib 1024] [--small-files 10000]
 *                               [--stream-mib 4096] [--shards-mib 2048] [--random-max-reads 2048] [--readers 8]
 *                               [--cases big,small,weights,random,stream]
 *                               [--fetch-threads 1,2,4|none] [--json-only]
 *
 * Everything runs in one temp directory under $TMPDIR/stowage-bench/, removed
 * at the end; s3rver, every mount and every mount process are stopped by PID
 * and every mount point is detached (fusermount -uz), also when the run fails
 * or is interrupted (SIGINT/SIGTERM).
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeBigFile, writeSmallFiles, type BigFile, type SmallFiles } from '../volume-transfer/dataset.js';
import { ROOT, cleanUpOnSignal, machineInfo, packageVersion, parseFlags, startS3rver, startStowage, wholeFlag, type S3rver, type StowageServer } from '../volume-transfer/setup.js';
import { BIG_NAME, PLAIN_PREFIX, SHARDS_NAME, SMALL_NAME, putOneFile, putPlain, putVolume, writeShards, type Shards } from './data.js';
import { Harness } from './harness.js';
import { readCacheDir } from './loader-readers.js';
import { loaderCompare, loaderTables } from './loader-report.js';
import { Loaders, RANDOM_MAX_READS, RANDOM_READERS } from './loaders.js';
import {
  RCLONE_MOUNT_FLAGS,
  S3FS_OPTIONS,
  detachAll,
  mountRclone,
  mountS3fs,
  mountStowage,
  mountTrivial,
  stowageHasFetchThreads,
} from './mounts.js';
import { GET_RANGE, GETS_IN_FLIGHT, Presigner, READ_SIZE, parallelGetsBig, parallelGetsSmall, readBig, readSmall } from './readers.js';
import {
  CACHE_DIR,
  GETS,
  LOCAL,
  LOCAL_DROPPED,
  OURS_COLD,
  OURS_WARM,
  OURS_WARM_PC,
  RCLONE_FULL,
  RCLONE_FULL_WARM,
  RCLONE_OFF,
  S3FS,
  STREAM,
  TRIVIAL,
  compare,
  tables,
} from './report.js';
import { fetchThreadsSweep, parseThreadList, type SweepRow } from './sweep.js';

const SMALL_FILE_SIZE = 4096;
const VOLUME = 'bench-mount';
const STREAM_VOLUME = 'bench-stream';
/** The chunk cache of the cold/warm mounts: large enough for the whole data set. */
const MAIN_CACHE_SIZE = '8GiB';
/** The random-read data set is this many shards of --shards-mib / 8 each. */
const SHARD_COUNT = 8;
/** The trivial FUSE holds the shards in memory only up to this (the machine is shared); above it, its random rows are skipped. */
const TRIVIAL_SHARDS_MAX_MIB = 1024;
const CASES = ['big', 'small', 'weights', 'random', 'stream'] as const;
type Case = (typeof CASES)[number];

const USAGE =
  'usage: node dist/bench/mount-read/main.js [--quick] [--size-mib 1024] [--small-files 10000] [--stream-mib 4096] [--shards-mib 2048] [--random-max-reads 2048] ' +
  `[--readers 8] [--cases ${CASES.join(',')}] [--fetch-threads 1,2,4|none] [--json-only]`;
const flags = parseFlags(
  {
    quick: { type: 'boolean', default: false },
    'size-mib': { type: 'string' },
    'small-files': { type: 'string' },
    'stream-mib': { type: 'string' },
    'shards-mib': { type: 'string' },
    'random-max-reads': { type: 'string', default: String(RANDOM_MAX_READS) },
    readers: { type: 'string', default: '8' },
    cases: { type: 'string', default: CASES.join(',') },
    'fetch-threads': { type: 'string', default: '1,2,4' },
    'json-only': { type: 'boolean', default: false },
  },
  USAGE,
);
const quick = flags.quick;
const sizeMiB = whole('size-mib', flags['size-mib'] ?? (quick ? '256' : '1024'), 4);
const smallCount = whole('small-files', flags['small-files'] ?? (quick ? '2000' : '10000'), 1);
/** 0: no streaming case. The mount streaming it gets a quarter of this as --cache-size. */
const streamMiB = whole('stream-mib', flags['stream-mib'] ?? (quick ? '1024' : '4096'), 0);
/** 0: no random-read cases. */
const shardsMiB = whole('shards-mib', flags['shards-mib'] ?? (quick ? '512' : '2048'), 0);
const randomMaxReads = whole('random-max-reads', flags['random-max-reads'], RANDOM_READERS);
const readers = whole('readers', flags.readers, 1);
const jsonOnly = flags['json-only'];
const cases = new Set<Case>(
  flags.cases
    .split(',')
    .map((c) => c.trim())
    .filter((c) => c !== '')
    .map((c) => {
      if (!(CASES as readonly string[]).includes(c)) usageError(`--cases: ${JSON.stringify(c)} is not one of ${CASES.join(', ')}`);
      return c as Case;
    }),
);
if (streamMiB === 0) cases.delete('stream');
const shardMiB = Math.floor(shardsMiB / SHARD_COUNT);
if (shardMiB === 0) cases.delete('random');
const fetchThreads = (() => {
  try {
    return parseThreadList(flags['fetch-threads']);
  } catch (err) {
    return usageError((err as Error).message);
  }
})();
const say = (msg: string) => {
  if (!jsonOnly) process.stderr.write(`${msg}\n`);
};

function whole(name: string, v: string | undefined, min: number): number {
  return wholeFlag(name, v, min, USAGE);
}

function usageError(msg: string): never {
  process.stderr.write(`${msg}\n${USAGE}\n`);
  process.exit(2);
}

const tmp = (() => {
  const base = join(tmpdir(), 'stowage-bench');
  mkdirSync(base, { recursive: true });
  return mkdtempSync(join(base, 'mount-read-'));
})();
let s3: S3rver | undefined;
let server: StowageServer | undefined;
let presigner: Presigner | undefined;
let harness: Harness | undefined;

let cleaning: Promise<void> | undefined;
/** Unmounts and stops everything this run started (once), then removes the temp directory. */
function cleanUp(): Promise<void> {
  cleaning ??= (async () => {
    detachAll();
    await Promise.all([...(harness?.mounts ?? [])].map((m) => m.stop().catch(() => undefined)));
    detachAll();
    presigner?.close();
    await server?.stop().catch(() => undefined);
    await s3?.stop().catch(() => undefined);
    rmSync(tmp, { recursive: true, force: true });
  })();
  return cleaning;
}

const signals = cleanUpOnSignal(cleanUp, say, `unmounting, stopping s3rver and the mounts, removing ${tmp}`);

async function main(): Promise<void> {
  const started = performance.now();
  const machine = machineInfo();
  const s3fsVersion = spawnSync('s3fs', ['--version'], { encoding: 'utf8' }).stdout?.split('\n')[0]?.trim() || 'not found';
  if (s3fsVersion === 'not found') throw new Error('s3fs is not installed (apt-get install -y s3fs)');
  if (machine.rclone === 'not found') throw new Error('rclone is not installed (apt-get install -y rclone)');
  const has = (c: Case) => cases.has(c);

  say(
    `data: ${sizeMiB} MiB file and ${smallCount} files of 4 KiB in ${tmp}${has('stream') ? `; stream ${streamMiB} MiB` : ''}` +
      `${has('random') ? `; ${SHARD_COUNT} shards of ${shardMiB} MiB` : ''}; cases ${[...cases].join(', ')}`,
  );
  const dataDir = join(tmp, 'data');
  mkdirSync(dataDir);
  const big = await writeBigFile(join(dataDir, BIG_NAME), sizeMiB * 2 ** 20);
  const small = await writeSmallFiles(join(dataDir, SMALL_NAME), smallCount, SMALL_FILE_SIZE);
  const shards: Shards | undefined = has('random') ? await writeShards(join(dataDir, SHARDS_NAME), SHARD_COUNT, shardMiB * 2 ** 20) : undefined;
  const trivialShards = shards !== undefined && shardMiB * SHARD_COUNT <= TRIVIAL_SHARDS_MAX_MIB;

  s3 = await startS3rver(join(tmp, 's3rver'));
  server = await startStowage(join(tmp, 'stowage'), s3);
  say(`s3rver pid ${s3.pid} at ${s3.endpoint}; stowage server at ${server.server.address}`);
  let t = performance.now();
  const version = await putVolume(server.connection, VOLUME, big, small, shards);
  say(`  volume ${VOLUME} v${version} uploaded in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  t = performance.now();
  await putPlain(s3.endpoint, big, small, shards);
  say(`  plain objects under ${PLAIN_PREFIX}/ uploaded in ${((performance.now() - t) / 1000).toFixed(1)} s`);

  presigner = new Presigner(s3.endpoint);
  const bigUrl = await presigner.url(`${PLAIN_PREFIX}/${BIG_NAME}`);
  const smallUrls = has('small') ? await Promise.all(small.files.map((f) => presigner!.url(`${PLAIN_PREFIX}/${SMALL_NAME}/${f}`))) : [];
  const shardUrls = await Promise.all((shards?.names ?? []).map((n) => presigner!.url(`${PLAIN_PREFIX}/${n}`)));

  const h = new Harness(s3, say);
  harness = h;
  const loaders = new Loaders(h, { big, dataDir, shards, maxReads: randomMaxReads, weights: has('weights'), bigUrl, shardUrls });
  const endpoint = s3.endpoint;
  const bigRead = (dir: string) => () => readBig(join(dir, BIG_NAME), big.path, big.size);
  const smallRead = (dir: string) => () => readSmall(join(dir, SMALL_NAME), small.dir, smallCount, readers);
  const both = async (contender: string, dir: string, drop: boolean, mountPid?: number) => {
    if (has('big')) await h.run(contender, 'big', { drop, mountPid }, bigRead(dir));
    if (has('small')) await h.run(contender, 'small', { drop, mountPid }, smallRead(dir));
  };

  // Ceilings. The local "kept" rows come right after the "dropped" ones of the same bytes.
  say('ceilings');
  if (has('big')) {
    await h.run(LOCAL_DROPPED, 'big', { drop: true }, bigRead(dataDir));
    await h.run(LOCAL, 'big', { drop: false }, bigRead(dataDir));
  }
  if (has('small')) {
    await smallRead(dataDir)(); // into the page cache, untimed
    await h.run(LOCAL, 'small', { drop: false }, smallRead(dataDir));
  }
  await loaders.onOneMount(
    [
      { contender: LOCAL_DROPPED, drop: true },
      { contender: LOCAL, drop: false },
    ],
    dataDir,
  );
  if (has('big')) await h.run(GETS, 'big', { drop: true }, () => parallelGetsBig(bigUrl, big.size));
  if (has('small')) await h.run(GETS, 'small', { drop: true }, () => parallelGetsSmall(smallUrls, SMALL_FILE_SIZE, readers));
  await loaders.parallelGets(GETS);
  await h.withMount(
    () => mountTrivial(join(tmp, 'mnt-trivial'), { bigFile: big.path, smallDir: small.dir, shardsDir: trivialShards ? shards!.dir : undefined }),
    async (m) => {
      await both(TRIVIAL, m.dir, true, m.pid);
      await loaders.onOneMount([{ contender: TRIVIAL, drop: true }], m.dir, { mountPid: m.pid, random: trivialShards });
      h.peakRss[TRIVIAL] = m.peakRss();
    },
  );

  const conn = server.server;
  const stowage = (dir: string, cacheDir: string, cacheSize = MAIN_CACHE_SIZE) => () =>
    mountStowage(join(tmp, dir), { volume: VOLUME, cacheDir: join(tmp, cacheDir), cacheSize, server: conn.address, token: conn.token });
  say('stowage mount');
  if (has('big') || has('small')) {
    await h.withMount(stowage('mnt-stowage', 'cache-main'), async (m) => {
      // Each "page cache kept" read comes right after the dropped one of the
      // same data, so that no drop in between empties the page cache again.
      if (has('big')) {
        await h.run(OURS_COLD, 'big', { drop: true, mountPid: m.pid }, bigRead(m.dir));
        await h.run(OURS_WARM, 'big', { drop: true, mountPid: m.pid }, bigRead(m.dir));
        await h.run(OURS_WARM_PC, 'big', { drop: false, mountPid: m.pid }, bigRead(m.dir));
        // Before the small files: the cache holds only the big file's chunks now.
        await h.run(CACHE_DIR, 'big', { drop: true }, () => readCacheDir(join(tmp, 'cache-main'), READ_SIZE, big.size));
      }
      if (has('small')) {
        await h.run(OURS_COLD, 'small', { drop: true, mountPid: m.pid }, smallRead(m.dir));
        await h.run(OURS_WARM, 'small', { drop: true, mountPid: m.pid }, smallRead(m.dir));
        await h.run(OURS_WARM_PC, 'small', { drop: false, mountPid: m.pid }, smallRead(m.dir));
      }
      const rss = m.peakRss();
      for (const c of [OURS_COLD, OURS_WARM, OURS_WARM_PC]) h.peakRss[c] = rss;
    });
    rmSync(join(tmp, 'cache-main'), { recursive: true, force: true });
  }
  await loaders.freshMountEach(
    OURS_COLD,
    OURS_WARM,
    (w) => stowage(`mnt-stowage-${w}`, `cache-${w}`)(),
    (w) => [join(tmp, `cache-${w}`)],
  );

  say('s3fs');
  await h.withMount(
    () => mountS3fs(join(tmp, 'mnt-s3fs'), { endpoint, prefix: PLAIN_PREFIX, workDir: join(tmp, 's3fs') }),
    async (m) => {
      await both(S3FS, m.dir, true, m.pid);
      await loaders.onOneMount([{ contender: S3FS, drop: true }], m.dir, { mountPid: m.pid });
      h.peakRss[S3FS] = m.peakRss();
    },
  );

  say('rclone mount');
  const rclone = (dir: string, mode: 'off' | 'full', cacheDir: string) => () =>
    mountRclone(join(tmp, dir), { endpoint, prefix: PLAIN_PREFIX, mode, cacheDir: join(tmp, cacheDir) });
  if (has('big') || has('small')) {
    await h.withMount(rclone('mnt-rclone-off', 'off', 'rclone-cache-off'), async (m) => {
      await both(RCLONE_OFF, m.dir, true, m.pid);
      h.peakRss[RCLONE_OFF] = m.peakRss();
    });
    await h.withMount(rclone('mnt-rclone-full', 'full', 'rclone-cache-full'), async (m) => {
      await both(RCLONE_FULL, m.dir, true, m.pid);
      await both(RCLONE_FULL_WARM, m.dir, true, m.pid);
      const rss = m.peakRss();
      h.peakRss[RCLONE_FULL] = rss;
      h.peakRss[RCLONE_FULL_WARM] = rss;
    });
    rmSync(join(tmp, 'rclone-cache-full'), { recursive: true, force: true });
  }
  await loaders.freshMountEach(
    RCLONE_FULL,
    RCLONE_FULL_WARM,
    (w) => rclone(`mnt-rclone-full-${w}`, 'full', `rclone-cache-full-${w}`)(),
    (w) => [join(tmp, `rclone-cache-full-${w}`)],
  );

  // Streaming: a file 4× the mount's chunk cache, read once, cold.
  const streamCacheMiB = Math.max(1, Math.floor(streamMiB / 4));
  if (has('stream')) {
    say(`stream: ${streamMiB} MiB through a mount with --cache-size ${streamCacheMiB}MiB`);
    const streamFile = await writeBigFile(join(dataDir, 'stream.bin'), streamMiB * 2 ** 20);
    t = performance.now();
    await putOneFile(server.connection, STREAM_VOLUME, streamFile.path, `/${BIG_NAME}`);
    say(`  volume ${STREAM_VOLUME} uploaded in ${((performance.now() - t) / 1000).toFixed(1)} s`);
    await h.withMount(
      () =>
        mountStowage(join(tmp, 'mnt-stream'), {
          volume: STREAM_VOLUME,
          cacheDir: join(tmp, 'cache-stream'),
          cacheSize: `${streamCacheMiB}MiB`,
          server: conn.address,
          token: conn.token,
        }),
      async (m) => {
        await h.run(STREAM, 'stream', { drop: true, mountPid: m.pid }, () => readBig(join(m.dir, BIG_NAME), streamFile.path, streamFile.size));
        h.peakRss[STREAM] = m.peakRss();
      },
    );
    rmSync(streamFile.path, { force: true });
  }

  // The sweep needs a mount that takes --fetch-threads; an older one would refuse to start.
  let sweep: SweepRow[] | undefined;
  let sweepNote: string | undefined;
  if (fetchThreads.length === 0) sweepNote = 'skipped (--fetch-threads none)';
  else if (!has('big') && !has('weights')) sweepNote = 'skipped (needs the big or weights case)';
  else if (!stowageHasFetchThreads()) sweepNote = 'skipped: this checkout\'s stowage mount has no --fetch-threads';
  else {
    say(`--fetch-threads sweep: ${fetchThreads.join(', ')}`);
    sweep = await fetchThreadsSweep(h, fetchThreads, {
      tmp,
      volume: VOLUME,
      cacheSize: MAIN_CACHE_SIZE,
      server: conn.address,
      token: conn.token,
      big,
      bigCase: has('big'),
      loaders: has('weights') ? loaders : undefined,
    });
  }
  if (sweepNote) say(`--fetch-threads sweep ${sweepNote}`);

  const figures = h.figures;
  const peakRss = h.peakRss;
  const older = compare(figures, { mount: peakRss[OURS_COLD] ?? NaN, stream: has('stream') ? peakRss[STREAM] : undefined });
  const issue = loaderCompare(figures, peakRss);
  const ratios = { ...older.ratios, ...issue.ratios };
  const date = new Date();
  const result = {
    benchmark: 'mount-read',
    date: date.toISOString(),
    machine: { ...machine, s3fs: s3fsVersion, fuseNative: packageVersion('fuse-native') },
    settings: { ...settings(big, small, streamCacheMiB), loaders: loaders.settings(trivialShards), fetchThreads: { list: fetchThreads, note: sweepNote ?? null } },
    pageCacheDropped: h.dropPermitted ?? false,
    figures,
    peakRssBytes: peakRss,
    ratios,
    aims: [...older.aims, ...issue.aims],
    fetchThreadsSweep: sweep ?? null,
    totalSeconds: Math.round((performance.now() - started) / 1000),
  };
  const stamp = date.toISOString().replace(/\.\d+Z$/, 'Z').replace(/:/g, '-');
  const out = join(ROOT, 'bench', 'results', `mount-read-${stamp}.json`);
  mkdirSync(join(ROOT, 'bench', 'results'), { recursive: true });
  writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
  if (jsonOnly) {
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    process.stderr.write(`${out}\n`);
    return;
  }
  const labels = { bigMiB: sizeMiB, smallFiles: smallCount, streamMiB, streamCache: `${streamCacheMiB}MiB` };
  // The first tables are about the big file, the small files and the stream: empty when --cases leaves those out.
  const olderTables = figures.some((f) => f.workload === 'big' || f.workload === 'small' || f.workload === 'stream')
    ? `${tables(figures, peakRss, ratios, older.aims, labels)}\n\n`
    : '';
  const loaderLabels = { bigMiB: sizeMiB, shards: shards ? { count: SHARD_COUNT, mib: shardMiB * SHARD_COUNT } : undefined, trivialShards, sweepNote };
  process.stdout.write(
    `\nmount-read on ${machine.cpus} × ${machine.cpuModel}, node ${machine.node}, s3rver ${machine.s3rver} on 127.0.0.1, ` +
      `${s3fsVersion.replace(/ \(commit.*$/, '')}, ${machine.rclone}; big file read in ${READ_SIZE / 2 ** 20} MiB reads, ` +
      `small files by ${readers} readers; page cache ${h.dropPermitted ? 'dropped before each cold case' : 'NOT dropped (not permitted)'}; MB = 10^6 bytes\n\n` +
      `${olderTables}${loaderTables(figures, peakRss, issue.aims, sweep, loaderLabels)}\n\n` +
      `results: ${out} (run took ${result.totalSeconds} s)\n`,
  );
}

function settings(big: BigFile, small: SmallFiles, streamCacheMiB: number) {
  return {
    quick,
    cases: [...cases],
    bigFileBytes: big.size,
    smallFiles: small.files.length,
    smallFileBytes: small.fileSize,
    readSize: READ_SIZE,
    smallReaders: readers,
    stowage: { volume: VOLUME, cacheSize: MAIN_CACHE_SIZE, memoryCacheSize: 'default (64MiB)', prefetchWindow: 'default (32MiB)', fetchThreads: 'default (one per core but one, 1 to 4)' },
    stream: cases.has('stream') ? { bytes: streamMiB * 2 ** 20, cacheSize: `${streamCacheMiB}MiB` } : null,
    s3fs: { options: S3FS_OPTIONS.join(',') },
    rclone: { flags: RCLONE_MOUNT_FLAGS.join(' '), modes: ['off', 'full'] },
    parallelGets: { rangeSize: GET_RANGE, inFlight: GETS_IN_FLIGHT, small: `one GET per object, ${readers} in flight` },
    trivialFuse: 'fuse-native, data in memory, entry/attr timeout 3600 s, no kernel_cache',
  };
}

main().then(
  () => cleanUp(),
  async (err: unknown) => {
    // After SIGINT/SIGTERM the reads fail because the mounts went away: not news.
    if (signals.interrupted()) return;
    process.stderr.write(`mount-read failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    await cleanUp();
    process.exitCode = 1;
  },
);
