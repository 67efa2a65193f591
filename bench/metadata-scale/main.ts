/**
 * metadata-scale: what a volume's metadata costs as it grows (issue 10,
 * "Volumes at dataset scale"). For each size and layout: a tree of tiny files
 * put with the SDK into a `stowage serve` child process on the embedded
 * default, then timed through public interfaces only (SDK, CLI, /proc): a
 * 1-file commit, stat and listdir cold and warm (and pages of 10,000 of a
 * directory that big), a recursive listing, the mount until the first read
 * works, `find` over it, a reload after a 1-file commit; the store bytes a
 * 1-file commit adds; the memory and CPU seconds of the server and the mount. Beside them in the same run: the same tree on
 * the local file system (find, fs.stat: the ceiling) and rclone listing as
 * many plain objects in s3rver.
 *
 *   npm run bench:metadata-scale -- [--files 100000[,1000000]] [--layouts dirs,flat] [--dir-size 1000]
 *       [--commits 20] [--stats 200] [--listdirs 20] [--skip-mount] [--skip-peers] [--json FILE] [--keep]
 *
 * Everything lives in one temp directory under $TMPDIR/stowage-bench/,
 * removed at the end unless --keep; every server, mount and s3rver is stopped
 * by PID and every mount point detached, also when the run fails or is
 * interrupted (SIGINT/SIGTERM).
 */
import { randomUUID } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { Volume } from '../../src/client/index.js';
import { detachAll, type Mount } from '../mount-read/mounts.js';
import {
  BUCKET,
  ROOT,
  cleanUpOnSignal,
  cpuSeconds,
  dropCaches,
  load1,
  machineInfo,
  packageVersion,
  parseFlags,
  processCpuSeconds,
  settleDisk,
  startS3rver,
  wholeFlag,
  type S3rver,
} from '../volume-transfer/setup.js';
import { findCount, measureMount, stowageCli } from './mount.js';
import { firstPut, fullListing, latencies, listDirs, listPages, oneFileCommits, statFiles } from './ours.js';
import { PUTS_IN_FLIGHT, PUT_SAMPLE, RCLONE_LIST_FLAGS, localStats, rcloneList, writeObjects } from './peers.js';
import { aimsOf, tables, type CaseResult } from './report.js';
import { dirBytes, startServe, type ServeProcess } from './server.js';
import { LAYOUTS, Tree, sample, type Layout } from './tree.js';

/**
 * s3rver lists a directory by reading and stat-ing all of it for every page
 * of 1,000 keys, so listing one flat directory costs objects² / 1,000 stats
 * (100,000 flat objects: 262 s, 119 s of s3rver CPU, against 28 s in
 * directories of 1,000). That measures s3rver, not rclone, and would make
 * the default run twice as long: above this many objects the flat rclone
 * listing is skipped, and the table says so.
 */
const RCLONE_FLAT_MAX = 20_000;
const STAT_SEED = 1;
const LISTDIR_SEED = 2;
/** Entries per listPage call in the paged listing of a big directory. */
const PAGE = 10_000;

const USAGE =
  'usage: node dist/bench/metadata-scale/main.js [--files 100000[,1000000]] [--layouts dirs,flat] [--dir-size 1000] [--commits 20] ' +
  '[--stats 200] [--listdirs 20] [--skip-mount] [--skip-peers] [--json FILE] [--keep]';
const flags = parseFlags(
  {
    files: { type: 'string', default: '100000' },
    layouts: { type: 'string', default: 'dirs,flat' },
    'dir-size': { type: 'string', default: '1000' },
    commits: { type: 'string', default: '20' },
    stats: { type: 'string', default: '200' },
    listdirs: { type: 'string', default: '20' },
    'skip-mount': { type: 'boolean', default: false },
    'skip-peers': { type: 'boolean', default: false },
    json: { type: 'string' },
    keep: { type: 'boolean', default: false },
  },
  USAGE,
);
const sizes = flags.files.split(',').map((v) => wholeFlag('files', v.trim(), 1, USAGE));
const layouts = flags.layouts.split(',').map((v) => v.trim()) as Layout[];
for (const l of layouts) {
  if (!LAYOUTS.includes(l)) {
    process.stderr.write(`--layouts: "${l}" is not a layout (choose from ${LAYOUTS.join(', ')})\n${USAGE}\n`);
    process.exit(2);
  }
}
const dirSize = wholeFlag('dir-size', flags['dir-size'], 1, USAGE);
const nCommits = wholeFlag('commits', flags.commits, 1, USAGE);
const nStats = wholeFlag('stats', flags.stats, 1, USAGE);
const nListdirs = wholeFlag('listdirs', flags.listdirs, 1, USAGE);
const runStarted = performance.now();
/** A progress line on stderr, after the seconds since the run started. */
const say = (msg: string) => {
  const lead = msg.startsWith('\n') ? '\n' : '';
  process.stderr.write(`${lead}[${((performance.now() - runStarted) / 1000).toFixed(0).padStart(5)} s] ${msg.slice(lead.length)}\n`);
};

const tmp = (() => {
  const base = join(tmpdir(), 'stowage-bench');
  mkdirSync(base, { recursive: true });
  return mkdtempSync(join(base, 'metadata-scale-'));
})();
// The mount and `stowage volume reload` find each other through state files here, not in the user's runtime dir.
process.env.STOWAGE_RUNTIME_DIR = join(tmp, 'run');
const servers = new Set<ServeProcess>();
const mounts = new Set<Mount>();
let s3: S3rver | undefined;
let dropped: boolean | undefined;

let cleaning: Promise<void> | undefined;
/** Unmounts and stops everything this run started (once), then removes the temp directory unless --keep. */
function cleanUp(): Promise<void> {
  cleaning ??= (async () => {
    detachAll();
    await Promise.all([...mounts].map((m) => m.stop().catch(() => undefined)));
    detachAll();
    await Promise.all([...servers].map((s) => s.stop().catch(() => undefined)));
    await s3?.stop().catch(() => undefined);
    if (flags.keep) say(`kept ${tmp}`);
    else removeTree(tmp);
  })();
  return cleaning;
}
const signals = cleanUpOnSignal(cleanUp, say, `unmounting, stopping the servers and s3rver${flags.keep ? '' : `, removing ${tmp}`}`);

/**
 * `rm -rf`, timed on stderr. Removing is the slowest thing a run does to this
 * VM's disk (mounted with online discard: 1,000–6,000 files a second, and
 * fs.rmSync managed a few hundred), so the run says how long each took.
 */
function removeTree(dir: string): void {
  const t0 = performance.now();
  spawnSync('rm', ['-rf', '--', dir], { stdio: 'ignore' });
  say(`  removed ${dir} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}

/** Drops the page cache before a cold phase; remembers whether it could. */
function cold(): void {
  const ok = dropCaches();
  dropped ??= ok;
}

async function serve(dataDir: string): Promise<ServeProcess> {
  const s = await startServe(dataDir);
  servers.add(s);
  return s;
}

async function stopServe(s: ServeProcess): Promise<void> {
  await s.stop();
  servers.delete(s);
}

async function runCase(tree: Tree): Promise<CaseResult> {
  const started = performance.now();
  const loadBefore = load1();
  const caseDir = join(tmp, tree.key);
  const localRoot = join(caseDir, 'tree');
  const dataDir = join(caseDir, 'stowage');
  const volume = `bench-${tree.key}-${randomUUID().slice(0, 8)}`;
  say(`\n${tree.label} (load ${loadBefore})`);
  let t = performance.now();
  tree.write(localRoot);
  const localTreeSeconds = (performance.now() - t) / 1000;
  say(`  local tree written in ${localTreeSeconds.toFixed(1)} s`);

  let server = await serve(dataDir);
  let vol = await Volume.fromName(volume, { connection: server.connection, createIfMissing: true });
  say(`  stowage serve pid ${server.pid} at ${server.address}, data dir ${dataDir}`);
  settleDisk();
  let c0 = { server: server.cpuSeconds(), client: processCpuSeconds('self') };
  const put = await firstPut(vol, tree, localRoot);
  const putCpu = { server: server.cpuSeconds() - c0.server, client: processCpuSeconds('self') - c0.client };
  const afterPut = server.memory();
  say(`  first put: ${put.seconds.toFixed(1)} s, ${put.filesPerSec.toFixed(0)} files/s; server CPU ${putCpu.server.toFixed(1)} s, RSS ${(afterPut.rss / 2 ** 20).toFixed(0)} MiB`);

  settleDisk();
  const store = join(dataDir, 'store');
  const index = join(dataDir, 'index');
  const before = { store: dirBytes(store), index: dirBytes(index) };
  c0 = { server: server.cpuSeconds(), client: 0 };
  const commits = await oneFileCommits(vol, tree, nCommits, 'c');
  const commitCpu = server.cpuSeconds() - c0.server;
  settleDisk();
  const after = { store: dirBytes(store), index: dirBytes(index) };
  const commitLat = latencies(commits.samplesMs);
  say(`  ${nCommits} 1-file commits: p50 ${commitLat.p50.toFixed(1)} ms, p99 ${commitLat.p99.toFixed(1)} ms; store +${((after.store.apparent - before.store.apparent) / nCommits / 1024).toFixed(1)} KiB each`);
  const peaks: Record<string, number> = { 'put+commits': server.memory().peak };

  // Each cold phase starts from a new server process and an empty page cache.
  const restart = async (): Promise<void> => {
    await stopServe(server);
    cold();
    server = await serve(dataDir);
    vol = await Volume.fromName(volume, { connection: server.connection });
  };

  await restart();
  const statIdx = sample(nStats, tree.files, STAT_SEED);
  c0.server = server.cpuSeconds();
  const statCold = latencies(await statFiles(vol, tree, statIdx));
  const statColdCpu = server.cpuSeconds() - c0.server;
  c0.server = server.cpuSeconds();
  const statWarm = latencies(await statFiles(vol, tree, statIdx));
  const statWarmCpu = server.cpuSeconds() - c0.server;
  peaks.stat = server.memory().peak;
  say(`  stat: cold p50 ${statCold.p50} ms p99 ${statCold.p99} ms; warm p50 ${statWarm.p50} ms p99 ${statWarm.p99} ms`);

  await restart();
  // The flat layout has one directory: one cold listing per restart, then repeats of it.
  const dirs = tree.layout === 'dirs' ? sample(nListdirs, tree.dirs, LISTDIR_SEED) : [0];
  c0.server = server.cpuSeconds();
  const listCold = latencies(await listDirs(vol, tree, dirs));
  const listColdCpu = server.cpuSeconds() - c0.server;
  c0.server = server.cpuSeconds();
  const listWarm = latencies(await listDirs(vol, tree, tree.layout === 'dirs' ? dirs : Array<number>(nListdirs).fill(0)));
  const listWarmCpu = server.cpuSeconds() - c0.server;
  // A directory of 10,000 or more is also listed a page of 10,000 at a time (listPage), as a user pages through it.
  let paged: CaseResult['listPages'];
  if (tree.entriesIn(dirs[0]!) >= PAGE) {
    await restart();
    const cold = await listPages(vol, tree, dirs[0]!, nListdirs, PAGE);
    const warm = await listPages(vol, tree, dirs[0]!, nListdirs, PAGE, cold.tokens);
    paged = { pageSize: PAGE, cold: latencies(cold.samplesMs), warm: latencies(warm.samplesMs) };
    say(`  listPage of ${PAGE} entries: cold p50 ${paged.cold.p50} ms; warm p50 ${paged.warm.p50} ms p99 ${paged.warm.p99} ms`);
  }
  c0.server = server.cpuSeconds();
  const full = await fullListing(vol, tree);
  const fullCpu = server.cpuSeconds() - c0.server;
  peaks.listdir = server.memory().peak;
  say(`  listdir (${tree.entriesIn(dirs[0]!)} entries): cold p50 ${listCold.p50} ms; warm p50 ${listWarm.p50} ms p99 ${listWarm.p99} ms; recursive ${full.seconds.toFixed(2)} s`);

  let mount: CaseResult['mount'];
  if (!flags['skip-mount']) {
    await restart();
    mount = await measureMount({
      tree,
      volume,
      vol,
      server,
      dir: join(caseDir, 'mnt'),
      cacheDir: join(caseDir, 'cache'),
      started: (m) => mounts.add(m),
    });
    mounts.clear(); // measureMount unmounted and stopped it
    peaks.mount = server.memory().peak;
    say(
      `  mount: ready ${mount.readySeconds.toFixed(2)} s; find cold ${mount.findCold.seconds.toFixed(2)} s, warm ${mount.findWarm.seconds.toFixed(2)} s; ` +
        `RSS ${(mount.memoryAfterFind.rss / 2 ** 20).toFixed(0)} MiB (peak ${(mount.memoryAfterFind.peak / 2 ** 20).toFixed(0)}); reload ${mount.reloadSeconds.toFixed(2)} s`,
    );
  }
  await stopServe(server);

  let peers: CaseResult['peers'];
  if (!flags['skip-peers']) peers = await runPeers(tree, localRoot, statIdx);
  if (!flags.keep) removeTree(caseDir);

  return {
    label: tree.label,
    files: tree.files,
    layout: tree.layout,
    dirSize: tree.dirSize,
    dirs: tree.dirs,
    loadBefore,
    seconds: Math.round((performance.now() - started) / 100) / 10,
    localTreeSeconds,
    put: { ...put, cpu: putCpu },
    commits: { n: nCommits, latencies: commitLat, serverCpu: commitCpu, store: { before: before.store, after: after.store }, index: { before: before.index, after: after.index } },
    stat: { cold: statCold, warm: statWarm, serverCpu: { cold: statColdCpu, warm: statWarmCpu } },
    listdir: { entries: tree.entriesIn(dirs[0]!), cold: listCold, warm: listWarm, serverCpu: { cold: listColdCpu, warm: listWarmCpu } },
    listPages: paged,
    fullListing: { ...full, serverCpu: fullCpu },
    mount,
    server: { afterPut, peaks },
    peers,
  };
}

async function runPeers(tree: Tree, localRoot: string, statIdx: number[]): Promise<NonNullable<CaseResult['peers']>> {
  // The local tree has none of the files committed later.
  const lines = tree.files + tree.dirs + 1;
  cold();
  const findCold = await findCount(localRoot, lines);
  const findWarm = await findCount(localRoot, lines);
  cold();
  const statCold = latencies(await localStats(localRoot, tree, statIdx));
  const statWarm = latencies(await localStats(localRoot, tree, statIdx));
  say(`  local: find cold ${findCold.seconds.toFixed(2)} s, warm ${findWarm.seconds.toFixed(2)} s; fs.stat cold p50 ${statCold.p50} ms, warm p50 ${statWarm.p50} ms`);
  const out: NonNullable<CaseResult['peers']> = {
    localFind: { cold: findCold.seconds, warm: findWarm.seconds, lines },
    localStat: { cold: statCold, warm: statWarm },
  };
  if (tree.layout === 'flat' && tree.files > RCLONE_FLAT_MAX) {
    out.rcloneSkipped = `flat, above ${RCLONE_FLAT_MAX.toLocaleString('en-US')} objects`;
    say(`  rclone: skipped (${out.rcloneSkipped}): s3rver lists a flat directory in objects² ÷ 1,000 stats`);
    return out;
  }
  s3 ??= await startS3rver(join(tmp, 's3rver'));
  const prefix = `meta-${tree.key}`;
  const objects = await writeObjects(s3.endpoint, join(tmp, 's3rver'), prefix, tree);
  say(
    `  s3rver: ${objects.put} objects PUT at ${objects.putsPerSec.toFixed(0)}/s (all ${tree.files} would take ${objects.projectedPutSeconds.toFixed(0)} s), ` +
      `${objects.onDisk} written on disk in ${objects.onDiskSeconds.toFixed(1)} s`,
  );
  cold();
  const c0 = cpuSeconds(s3.pid);
  const self0 = processCpuSeconds('self');
  const listed = await rcloneList(s3.endpoint, prefix, tree.files);
  const c1 = cpuSeconds(s3.pid);
  // The benchmark's CPU with its reaped children, less its own: rclone's.
  const rcloneCpu = c1.client - c0.client - (processCpuSeconds('self') - self0);
  out.objects = objects;
  out.rclone = { ...listed, cpu: { rclone: rcloneCpu, s3rver: c1.s3rver - c0.s3rver } };
  say(`  rclone lsf -R: ${listed.seconds.toFixed(2)} s for ${listed.files} objects (rclone CPU ${rcloneCpu.toFixed(1)} s, s3rver ${(c1.s3rver - c0.s3rver).toFixed(1)} s)`);
  if (!flags.keep) removeTree(join(tmp, 's3rver', BUCKET, prefix));
  return out;
}

async function main(): Promise<void> {
  const started = performance.now();
  const machine = { ...machineInfo(), lmdb: packageVersion('lmdb') };
  if (!flags['skip-peers'] && machine.rclone === 'not found') throw new Error('rclone is not installed (apt-get install -y rclone), or run with --skip-peers');
  const loads: number[] = [load1()];
  // What a CLI call costs before it does anything: part of the reload figure.
  const cliStart = await stowageCli(['--help']);
  say(`metadata-scale: sizes ${sizes.join(', ')}; layouts ${layouts.join(', ')}; temp dir ${tmp}; stowage CLI start-up ${cliStart.seconds.toFixed(2)} s`);
  const cases: CaseResult[] = [];
  for (const files of sizes) {
    for (const layout of layouts) {
      cases.push(await runCase(new Tree({ files, layout, dirSize })));
      loads.push(load1());
    }
  }
  const date = new Date();
  const result = {
    benchmark: 'metadata-scale',
    date: date.toISOString(),
    machine,
    load1: { min: Math.min(...loads), max: Math.max(...loads), atCaseEnds: loads },
    pageCacheDropped: dropped ?? false,
    settings: {
      files: sizes,
      layouts,
      dirSize,
      commits: nCommits,
      stats: nStats,
      listdirs: nListdirs,
      mount: !flags['skip-mount'],
      peers: !flags['skip-peers'],
      fileBytes: new Tree({ files: Math.max(...sizes), layout: 'flat', dirSize }).content(0).length,
      server: 'stowage serve child process, embedded default (local directory store + LMDB), its own --data-dir',
      put: 'vol.batchUpload(), putFile(localFile, path) for every file, commit() (putDirectory overflows the stack at 1,000,000 files today)',
      commit: 'vol.batchUpload().putFile(buffer, path).commit(), without force',
      s3rverObjects: `${PUT_SAMPLE} PUT (${PUTS_IN_FLIGHT} in flight), the rest written into s3rver's directory`,
      rclone: `rclone ${RCLONE_LIST_FLAGS.join(' ')} s3:${BUCKET}/PREFIX`,
      rcloneFlatMax: RCLONE_FLAT_MAX,
      cliStartSeconds: cliStart.seconds,
    },
    cases,
    aims: Object.fromEntries(cases.map((c) => [c.label, aimsOf(c)])),
    totalSeconds: Math.round((performance.now() - started) / 1000),
  };
  const stamp = date.toISOString().replace(/\.\d+Z$/, 'Z').replace(/:/g, '-');
  const out = flags.json ? resolve(flags.json) : join(ROOT, 'bench', 'results', `metadata-scale-${stamp}.json`);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(
    `\nmetadata-scale on ${machine.cpus} × ${machine.cpuModel}, node ${machine.node}, commit ${machine.commit}${machine.srcDirty ? ' (src/ changed)' : ''}; ` +
      `load ${result.load1.min}–${result.load1.max}; page cache ${result.pageCacheDropped ? 'dropped before each cold phase' : 'NOT dropped (not permitted)'}; ` +
      `${nCommits} commits, ${nStats} stats, ${nListdirs} listdirs per case; times ours ÷ peer (above 1: stowage slower)\n\n` +
      `${tables(cases)}\n\nresults: ${out} (run took ${result.totalSeconds} s)\n`,
  );
}

main().then(
  () => cleanUp(),
  async (err: unknown) => {
    if (signals.interrupted()) return;
    process.stderr.write(`metadata-scale failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    await cleanUp();
    process.exitCode = 1;
  },
);
