/**
 * volume-transfer: how fast stowage moves one big file and many small files
 * to and from S3, next to the AWS SDK used well (a) and rclone (b), all
 * against the same s3rver in one run.
 *
 *   npm run bench:volume-transfer -- [--size-mib 1024] [--small-files 10000] [--chunk-mib 8] [--json-only]
 *
 * Each transfer is timed alone: dirty pages are flushed and s3rver's request
 * counters reset before it starts, every download is checked byte for byte
 * after its clock stops, and then deleted. Everything lives in one temp
 * directory that is removed at the end, as is s3rver (by its PID).
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_CHUNK_SIZE, DEFAULT_PARALLEL } from '../../src/client/volume.js';
import { AwsSdkPeer, PART_SIZE, QUEUE_SIZE, RANGE_SIZE, RANGES_IN_FLIGHT, SMALL_IN_FLIGHT } from './aws-peer.js';
import type { Contender, Detail } from './contender.js';
import { checkBigFile, checkSmallFiles, writeBigFile, writeSmallFiles, type BigFile, type SmallFiles } from './dataset.js';
import { StowageSdk } from './ours.js';
import { BIG_FLAGS, RclonePeer, SMALL_FLAGS } from './rclone-peer.js';
import { compare, figure, table, type CaseName, type ContenderName, type Figure } from './report.js';
import {
  ROOT,
  cleanUpOnSignal,
  cpuSeconds,
  load1,
  machineInfo,
  makeTempRoot,
  parseFlags,
  settleDisk,
  startS3rver,
  startStowage,
  type S3rver,
  type StowageServer,
} from './setup.js';

const SMALL_FILE_SIZE = 4096;
const RESULTS = join(ROOT, 'bench', 'results', 'volume-transfer.json');

const USAGE = 'usage: node dist/bench/volume-transfer/main.js [--size-mib 1024] [--small-files 10000] [--chunk-mib 8] [--json-only]';
const flags = parseFlags(
  {
    'size-mib': { type: 'string', default: '1024' },
    'small-files': { type: 'string', default: '10000' },
    'chunk-mib': { type: 'string' },
    'json-only': { type: 'boolean', default: false },
  },
  USAGE,
);
const sizeMiB = positive('size-mib', flags['size-mib']);
const smallCount = positive('small-files', flags['small-files']);
const chunkSize = flags['chunk-mib']
  ? positive('chunk-mib', flags['chunk-mib']) * 1024 * 1024
  : Number(process.env.STOWAGE_CHUNK_SIZE) || DEFAULT_CHUNK_SIZE;
const jsonOnly = flags['json-only'];
const say = (msg: string) => {
  if (!jsonOnly) process.stderr.write(`${msg}\n`);
};

function positive(name: string, v: string | undefined): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) {
    process.stderr.write(`--${name} must be a positive whole number, not ${v}\n`);
    process.exit(2);
  }
  return n;
}

const tmp = makeTempRoot();
let s3: S3rver | undefined;
let server: StowageServer | undefined;
let aws: AwsSdkPeer | undefined;

async function cleanUp(): Promise<void> {
  aws?.close();
  await server?.stop().catch(() => undefined);
  await s3?.stop().catch(() => undefined);
  rmSync(tmp, { recursive: true, force: true });
}

cleanUpOnSignal(cleanUp, say, `stopping s3rver and removing ${tmp}`);

async function main(): Promise<void> {
  const started = performance.now();
  const machine = machineInfo();
  if (machine.rclone === 'not found') throw new Error('rclone is not installed (apt-get install -y rclone)');
  say(`data: ${sizeMiB} MiB file and ${smallCount} files of ${SMALL_FILE_SIZE / 1024} KiB in ${tmp}`);
  const big = await writeBigFile(join(tmp, 'big.bin'), sizeMiB * 1024 * 1024);
  const small = await writeSmallFiles(join(tmp, 'small'), smallCount, SMALL_FILE_SIZE);
  const out = join(tmp, 'out');
  mkdirSync(out);

  s3 = await startS3rver(join(tmp, 's3rver'));
  server = await startStowage(join(tmp, 'stowage'), s3);
  say(`s3rver pid ${s3.pid} at ${s3.endpoint}; stowage at ${server.server.address}, chunk ${chunkSize / 2 ** 20} MiB`);

  const ours = await StowageSdk.open(server.connection, chunkSize);
  aws = new AwsSdkPeer(s3.endpoint);
  const rclone = new RclonePeer(s3.endpoint);
  const figures: Figure[] = [];
  const run = async (who: ContenderName, kase: CaseName, bytes: number, files: number, fn: () => Promise<Detail>) => {
    settleDisk();
    await s3!.resetStats();
    const loadBefore = load1();
    const cpu0 = cpuSeconds(s3!.pid);
    const t0 = performance.now();
    const detail = await fn();
    const seconds = (performance.now() - t0) / 1000;
    const cpu1 = cpuSeconds(s3!.pid);
    const cpu = { client: cpu1.client - cpu0.client, s3rver: cpu1.s3rver - cpu0.s3rver };
    const f = figure(who, kase, bytes, files, { seconds, s3Requests: await s3!.stats(), cpu, loadBefore, detail });
    figures.push(f);
    const rate = kase.startsWith('small') ? `${f.filesPerSec} files/s` : `${f.mbPerSec} MB/s`;
    say(
      `  ${who.padEnd(8)} ${kase.padEnd(14)} ${f.seconds.toFixed(2).padStart(7)} s  ${rate.padEnd(16)}` +
        `cpu: client ${f.cpu.client.toFixed(1)} s, s3rver ${f.cpu.s3rver.toFixed(1)} s; load ${loadBefore}`,
    );
  };

  const contenders: [ContenderName, Contender][] = [['stowage', ours], ['aws-sdk', aws], ['rclone', rclone]];
  say('big file');
  for (const [who, c] of contenders) {
    await run(who, 'big-put', big.size, 1, () => c.putBig(big));
    if (c === ours) await run(who, 'big-put-again', big.size, 1, () => ours.putBigAgain(big));
    const dest = join(out, `${who}-big.bin`);
    await run(who, 'big-get', big.size, 1, () => c.getBig(dest));
    await checkBigFile(dest, big, who);
    rmSync(dest);
  }
  say('small files');
  const smallBytes = smallCount * SMALL_FILE_SIZE;
  for (const [who, c] of contenders) {
    await run(who, 'small-put', smallBytes, smallCount, () => c.putSmall(small));
    const dest = join(out, `${who}-small`);
    await run(who, 'small-get', smallBytes, smallCount, () => c.getSmall(dest));
    await checkSmallFiles(dest, small, who);
    rmSync(dest, { recursive: true });
  }

  const { ratios, aims } = compare(figures);
  const result = {
    benchmark: 'volume-transfer',
    date: new Date().toISOString(),
    machine,
    settings: settings(big, small),
    figures,
    ratios,
    aims,
    totalSeconds: Math.round((performance.now() - started) / 1000),
  };
  mkdirSync(join(ROOT, 'bench', 'results'), { recursive: true });
  writeFileSync(RESULTS, `${JSON.stringify(result, null, 2)}\n`);
  if (jsonOnly) {
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    process.stderr.write(`${RESULTS}\n`);
    return;
  }
  const labels = { bigMiB: sizeMiB, smallFiles: smallCount, smallKiB: SMALL_FILE_SIZE / 1024 };
  process.stdout.write(
    `\nvolume-transfer on ${machine.cpus} × ${machine.cpuModel}, node ${machine.node}, s3rver ${machine.s3rver} on 127.0.0.1, ` +
      `stowage chunk ${chunkSize / 2 ** 20} MiB × ${DEFAULT_PARALLEL} in flight; MB = 10^6 bytes, ratios compare throughput\n\n` +
      `${table(figures, ratios, aims, labels)}\n\nresults: ${RESULTS} (run took ${result.totalSeconds} s)\n`,
  );
}

function settings(big: BigFile, small: SmallFiles) {
  return {
    bigFileBytes: big.size,
    smallFiles: small.files.length,
    smallFileBytes: small.fileSize,
    stowage: {
      chunkSize,
      parallel: DEFAULT_PARALLEL,
      transfer: process.env.STOWAGE_TRANSFER ?? 'auto',
      server: 'in-process, S3BlobStore on s3rver',
    },
    awsSdk: {
      partSize: PART_SIZE,
      queueSize: QUEUE_SIZE,
      rangeSize: RANGE_SIZE,
      rangesInFlight: RANGES_IN_FLIGHT,
      smallInFlight: SMALL_IN_FLIGHT,
      checksums: 'WHEN_REQUIRED',
    },
    rclone: { bigFlags: BIG_FLAGS.join(' '), smallFlags: SMALL_FLAGS.join(' ') },
  };
}

main().then(
  () => cleanUp(),
  async (err: unknown) => {
    process.stderr.write(`volume-transfer failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    await cleanUp();
    process.exitCode = 1;
  },
);
