/**
 * mount-read: how fast files are read through stowage's FUSE mount, cold
 * (empty chunk cache) and warm, next to s3fs and `rclone mount` on the same
 * bytes on the same s3rver, with three ceilings measured in the same run:
 * parallel ranged GETs straight from s3rver, the local file, and a trivial
 * in-memory fuse-native file system.
 *
 *   npm run bench:mount-read -- [--quick] [--size-mib 1024] [--small-files 10000]
 *                               [--stream-mib 4096] [--readers 8] [--json-only]
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
import { ROOT, cleanUpOnSignal, load1, machineInfo, packageVersion, parseFlags, processCpuSeconds as cpuOf, dropCaches, startS3rver, startStowage, wholeFlag, type S3rver, type StowageServer } from '../volume-transfer/setup.js';
import { BIG_NAME, PLAIN_PREFIX, SMALL_NAME, putOneFile, putPlain, putVolume } from './data.js';
import {
  RCLONE_MOUNT_FLAGS,
  S3FS_OPTIONS,
  detachAll,
  mountRclone,
  mountS3fs,
  mountStowage,
  mountTrivial,
  type Mount,
} from './mounts.js';
import { GET_RANGE, GETS_IN_FLIGHT, Presigner, READ_SIZE, parallelGetsBig, parallelGetsSmall, readBig, readSmall, type ReadResult } from './readers.js';
import {
  GETS,
  LOCAL,
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
  round,
  tables,
  type Figure,
  type Workload,
} from './report.js';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const SMALL_FILE_SIZE = 4096;
const VOLUME = 'bench-mount';
const STREAM_VOLUME = 'bench-stream';
/** The chunk cache of the cold/warm mount: large enough for the whole data set. */
const MAIN_CACHE_SIZE = '8GiB';

const USAGE =
  'usage: node dist/bench/mount-read/main.js [--quick] [--size-mib 1024] [--small-files 10000] [--stream-mib 4096] [--readers 8] [--json-only]';
const flags = parseFlags(
  {
    quick: { type: 'boolean', default: false },
    'size-mib': { type: 'string' },
    'small-files': { type: 'string' },
    'stream-mib': { type: 'string' },
    readers: { type: 'string', default: '8' },
    'json-only': { type: 'boolean', default: false },
  },
  USAGE,
);
const quick = flags.quick;
const sizeMiB = whole('size-mib', flags['size-mib'] ?? (quick ? '256' : '1024'), 1);
const smallCount = whole('small-files', flags['small-files'] ?? (quick ? '2000' : '10000'), 1);
/** 0: no streaming case. The mount streaming it gets a quarter of this as --cache-size. */
const streamMiB = whole('stream-mib', flags['stream-mib'] ?? (quick ? '1024' : '4096'), 0);
const readers = whole('readers', flags.readers, 1);
const jsonOnly = flags['json-only'];
const say = (msg: string) => {
  if (!jsonOnly) process.stderr.write(`${msg}\n`);
};

function whole(name: string, v: string | undefined, min: number): number {
  return wholeFlag(name, v, min, USAGE);
}

const tmp = (() => {
  const base = join(tmpdir(), 'stowage-bench');
  mkdirSync(base, { recursive: true });
  return mkdtempSync(join(base, 'mount-read-'));
})();
let s3: S3rver | undefined;
let server: StowageServer | undefined;
let presigner: Presigner | undefined;
const mounts = new Set<Mount>();

let cleaning: Promise<void> | undefined;
/** Unmounts and stops everything this run started (once), then removes the temp directory. */
function cleanUp(): Promise<void> {
  cleaning ??= (async () => {
    detachAll();
    await Promise.all([...mounts].map((m) => m.stop().catch(() => undefined)));
    detachAll();
    presigner?.close();
    await server?.stop().catch(() => undefined);
    await s3?.stop().catch(() => undefined);
    rmSync(tmp, { recursive: true, force: true });
  })();
  return cleaning;
}

const signals = cleanUpOnSignal(cleanUp, say, `unmounting, stopping s3rver and the mounts, removing ${tmp}`);

/** Mounts with `start`, runs `fn`, and always unmounts and stops the mount process. */
async function withMount<T>(start: () => Promise<Mount>, fn: (m: Mount) => Promise<T>): Promise<T> {
  const m = await start();
  mounts.add(m);
  try {
    return await fn(m);
  } finally {
    await m.stop();
    mounts.delete(m);
  }
}

let dropPermitted: boolean | undefined;

async function main(): Promise<void> {
  const started = performance.now();
  const machine = machineInfo();
  const s3fsVersion = spawnSync('s3fs', ['--version'], { encoding: 'utf8' }).stdout?.split('\n')[0]?.trim() || 'not found';
  if (s3fsVersion === 'not found') throw new Error('s3fs is not installed (apt-get install -y s3fs)');
  if (machine.rclone === 'not found') throw new Error('rclone is not installed (apt-get install -y rclone)');

  say(`data: ${sizeMiB} MiB file and ${smallCount} files of 4 KiB in ${tmp}${streamMiB ? `; stream ${streamMiB} MiB` : ''}`);
  const dataDir = join(tmp, 'data');
  mkdirSync(dataDir);
  const big = await writeBigFile(join(dataDir, BIG_NAME), sizeMiB * 2 ** 20);
  const small = await writeSmallFiles(join(dataDir, SMALL_NAME), smallCount, SMALL_FILE_SIZE);

  s3 = await startS3rver(join(tmp, 's3rver'));
  server = await startStowage(join(tmp, 'stowage'), s3);
  say(`s3rver pid ${s3.pid} at ${s3.endpoint}; stowage server at ${server.server.address}`);
  let t = performance.now();
  const version = await putVolume(server.connection, VOLUME, big, small);
  say(`  volume ${VOLUME} v${version} uploaded in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  t = performance.now();
  await putPlain(s3.endpoint, big, small);
  say(`  plain objects under ${PLAIN_PREFIX}/ uploaded in ${((performance.now() - t) / 1000).toFixed(1)} s`);

  presigner = new Presigner(s3.endpoint);
  const bigUrl = await presigner.url(`${PLAIN_PREFIX}/${BIG_NAME}`);
  const smallUrls = await Promise.all(small.files.map((f) => presigner!.url(`${PLAIN_PREFIX}/${SMALL_NAME}/${f}`)));

  const figures: Figure[] = [];
  const peakRss: Record<string, number> = {};
  const s3pid = s3.pid;
  const run = async (
    contender: string,
    workload: Workload,
    opts: { drop: boolean; mountPid?: number },
    fn: () => Promise<ReadResult>,
  ): Promise<void> => {
    let dropped = false;
    if (opts.drop) {
      dropped = dropCaches();
      dropPermitted ??= dropped;
    } else spawnSync('sync', { stdio: 'ignore' });
    await s3!.resetStats();
    const loadBefore = load1();
    const c0 = { bench: cpuOf('self'), mount: opts.mountPid ? cpuOf(opts.mountPid) : NaN, s3rver: cpuOf(s3pid) };
    const t0 = performance.now();
    const r = await fn();
    const seconds = (performance.now() - t0) / 1000;
    const c1 = { bench: cpuOf('self'), mount: opts.mountPid ? cpuOf(opts.mountPid) : NaN, s3rver: cpuOf(s3pid) };
    const f: Figure = {
      contender,
      workload,
      seconds: round(seconds, 3),
      bytes: r.bytes,
      files: r.files,
      mbPerSec: round(r.bytes / 1e6 / seconds, 1),
      filesPerSec: round(r.files / seconds, 1),
      pageCacheDropped: dropped,
      cpu: { bench: round(c1.bench - c0.bench, 2), mount: round(c1.mount - c0.mount, 2), s3rver: round(c1.s3rver - c0.s3rver, 2) },
      s3Requests: await s3!.stats(),
      loadBefore,
      detail: { checked: r.checked, ...(r.listSeconds !== undefined ? { listSeconds: r.listSeconds } : {}) },
    };
    figures.push(f);
    const rate = workload === 'small' ? `${f.filesPerSec.toFixed(0)} files/s` : `${f.mbPerSec.toFixed(1)} MB/s`;
    const reqs = Object.entries(f.s3Requests)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ');
    say(
      `  ${contender.padEnd(38)} ${workload.padEnd(6)} ${f.seconds.toFixed(2).padStart(7)} s  ${rate.padEnd(15)} ` +
        `cpu: bench ${f.cpu.bench.toFixed(1)}, mount ${Number.isFinite(f.cpu.mount) ? f.cpu.mount.toFixed(1) : '-'}, s3rver ${f.cpu.s3rver.toFixed(1)} s; ` +
        `load ${loadBefore}; ${reqs || 'no S3 requests'}`,
    );
  };
  const bigRead = (dir: string) => () => readBig(join(dir, BIG_NAME), big.path, big.size);
  const smallRead = (dir: string) => () => readSmall(join(dir, SMALL_NAME), small.dir, smallCount, readers);
  const both = async (contender: string, dir: string, drop: boolean, mountPid?: number) => {
    await run(contender, 'big', { drop, mountPid }, bigRead(dir));
    await run(contender, 'small', { drop, mountPid }, smallRead(dir));
  };

  // Ceilings.
  say('ceilings');
  await readBig(big.path, big.path, big.size); // into the page cache, untimed
  await run(LOCAL, 'big', { drop: false }, bigRead(dataDir));
  await run(LOCAL, 'small', { drop: false }, smallRead(dataDir));
  await run(GETS, 'big', { drop: true }, () => parallelGetsBig(bigUrl, big.size));
  await run(GETS, 'small', { drop: true }, () => parallelGetsSmall(smallUrls, SMALL_FILE_SIZE, readers));
  await withMount(
    () => mountTrivial(join(tmp, 'mnt-trivial'), { bigFile: big.path, smallDir: small.dir }),
    async (m) => {
      await both(TRIVIAL, m.dir, true, m.pid);
      peakRss[TRIVIAL] = m.peakRss();
    },
  );

  const conn = server.server;
  say('stowage mount');
  await withMount(
    () => mountStowage(join(tmp, 'mnt-stowage'), { volume: VOLUME, cacheDir: join(tmp, 'cache-main'), cacheSize: MAIN_CACHE_SIZE, server: conn.address, token: conn.token }),
    async (m) => {
      await both(OURS_COLD, m.dir, true, m.pid);
      // Each "page cache kept" read comes right after the dropped one of the
      // same data, so that no drop in between empties the page cache again.
      await run(OURS_WARM, 'big', { drop: true, mountPid: m.pid }, bigRead(m.dir));
      await run(OURS_WARM_PC, 'big', { drop: false, mountPid: m.pid }, bigRead(m.dir));
      await run(OURS_WARM, 'small', { drop: true, mountPid: m.pid }, smallRead(m.dir));
      await run(OURS_WARM_PC, 'small', { drop: false, mountPid: m.pid }, smallRead(m.dir));
      const rss = m.peakRss();
      for (const c of [OURS_COLD, OURS_WARM, OURS_WARM_PC]) peakRss[c] = rss;
    },
  );

  say('s3fs');
  await withMount(
    () => mountS3fs(join(tmp, 'mnt-s3fs'), { endpoint: s3!.endpoint, prefix: PLAIN_PREFIX, workDir: join(tmp, 's3fs') }),
    async (m) => {
      await both(S3FS, m.dir, true, m.pid);
      peakRss[S3FS] = m.peakRss();
    },
  );

  say('rclone mount');
  await withMount(
    () => mountRclone(join(tmp, 'mnt-rclone-off'), { endpoint: s3!.endpoint, prefix: PLAIN_PREFIX, mode: 'off', cacheDir: join(tmp, 'rclone-cache-off') }),
    async (m) => {
      await both(RCLONE_OFF, m.dir, true, m.pid);
      peakRss[RCLONE_OFF] = m.peakRss();
    },
  );
  await withMount(
    () => mountRclone(join(tmp, 'mnt-rclone-full'), { endpoint: s3!.endpoint, prefix: PLAIN_PREFIX, mode: 'full', cacheDir: join(tmp, 'rclone-cache-full') }),
    async (m) => {
      await both(RCLONE_FULL, m.dir, true, m.pid);
      await both(RCLONE_FULL_WARM, m.dir, true, m.pid);
      const rss = m.peakRss();
      peakRss[RCLONE_FULL] = rss;
      peakRss[RCLONE_FULL_WARM] = rss;
    },
  );

  // Streaming: a file 4× the mount's chunk cache, read once, cold.
  const streamCacheMiB = Math.max(1, Math.floor(streamMiB / 4));
  if (streamMiB > 0) {
    say(`stream: ${streamMiB} MiB through a mount with --cache-size ${streamCacheMiB}MiB`);
    const streamFile = await writeBigFile(join(dataDir, 'stream.bin'), streamMiB * 2 ** 20);
    t = performance.now();
    await putOneFile(server.connection, STREAM_VOLUME, streamFile.path, `/${BIG_NAME}`);
    say(`  volume ${STREAM_VOLUME} uploaded in ${((performance.now() - t) / 1000).toFixed(1)} s`);
    await withMount(
      () =>
        mountStowage(join(tmp, 'mnt-stream'), {
          volume: STREAM_VOLUME,
          cacheDir: join(tmp, 'cache-stream'),
          cacheSize: `${streamCacheMiB}MiB`,
          server: conn.address,
          token: conn.token,
        }),
      async (m) => {
        await run(STREAM, 'stream', { drop: true, mountPid: m.pid }, () => readBig(join(m.dir, BIG_NAME), streamFile.path, streamFile.size));
        peakRss[STREAM] = m.peakRss();
      },
    );
    rmSync(streamFile.path, { force: true });
  }

  const { ratios, aims } = compare(figures, { mount: peakRss[OURS_COLD]!, stream: streamMiB > 0 ? peakRss[STREAM] : undefined });
  const date = new Date();
  const result = {
    benchmark: 'mount-read',
    date: date.toISOString(),
    machine: { ...machine, s3fs: s3fsVersion, fuseNative: packageVersion('fuse-native') },
    settings: settings(big, small, streamCacheMiB),
    pageCacheDropped: dropPermitted ?? false,
    figures,
    peakRssBytes: peakRss,
    ratios,
    aims,
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
  process.stdout.write(
    `\nmount-read on ${machine.cpus} × ${machine.cpuModel}, node ${machine.node}, s3rver ${machine.s3rver} on 127.0.0.1, ` +
      `${s3fsVersion.replace(/ \(commit.*$/, '')}, ${machine.rclone}; big file read in ${READ_SIZE / 2 ** 20} MiB reads, ` +
      `small files by ${readers} readers; page cache ${dropPermitted ? 'dropped before each cold case' : 'NOT dropped (not permitted)'}; MB = 10^6 bytes\n\n` +
      `${tables(figures, peakRss, ratios, aims, labels)}\n\nresults: ${out} (run took ${result.totalSeconds} s)\n`,
  );
}


function settings(big: BigFile, small: SmallFiles, streamCacheMiB: number) {
  return {
    quick,
    bigFileBytes: big.size,
    smallFiles: small.files.length,
    smallFileBytes: small.fileSize,
    readSize: READ_SIZE,
    smallReaders: readers,
    stowage: { volume: VOLUME, cacheSize: MAIN_CACHE_SIZE, memoryCacheSize: 'default (256MiB)', prefetchWindow: 'default (64MiB)' },
    stream: streamMiB > 0 ? { bytes: streamMiB * 2 ** 20, cacheSize: `${streamCacheMiB}MiB` } : null,
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
