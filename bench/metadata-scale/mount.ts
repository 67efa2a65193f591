/**
 * The mount case, through the CLI only: `stowage mount VOL DIR` as a child
 * process (started and stopped as mount-read does, bench/mount-read/mounts.ts),
 * `find DIR | wc -l` over it, `stowage volume reload DIR` after a 1-file
 * commit, `stowage unmount DIR`. The mount process's memory and CPU come
 * from /proc.
 *
 * "Ready" is the time from spawning the mount process until a known file
 * reads back its bytes through DIR: the read is tried every READ_POLL_MS,
 * and before the mount is attached it fails (DIR is an empty directory).
 */
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Volume } from '../../src/client/index.js';
import { mountStowage, type Mount } from '../mount-read/mounts.js';
import { ROOT, processCpuSeconds, processMemory, track, type ProcessMemory } from '../volume-transfer/setup.js';
import type { ServeProcess } from './server.js';
import type { Tree } from './tree.js';

const READ_POLL_MS = 10;
const READY_MS = 30 * 60_000;
/** The chunk cache bound of the mount: the tree's bytes are a few MiB. */
const CACHE_SIZE = '1GiB';

export interface MountFigures {
  /** Spawn → first correct read of a known file. */
  readySeconds: number;
  findCold: { seconds: number; lines: number };
  findWarm: { seconds: number; lines: number };
  /** The mount process after the two finds, and after the reload. */
  memoryAfterFind: ProcessMemory;
  memoryAfterReload: ProcessMemory;
  /** `stowage volume reload DIR`, wall clock, CLI start-up included. */
  reloadSeconds: number;
  reloadedTo: number;
  /** CPU seconds of the mount process and of the server: from spawn to ready, during the finds, during the reload. */
  cpu: {
    mount: { ready: number; finds: number; reload: number };
    server: { ready: number; finds: number; reload: number };
  };
}

/** Runs a command, returns its stdout and how long it took; fails unless it exits 0. */
export function timed(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<{ seconds: number; stdout: string }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = track(spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] }));
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-8192)));
    child.once('error', reject);
    child.once('close', (code, signal) => {
      const seconds = (performance.now() - t0) / 1000;
      if (code === 0) resolve({ seconds, stdout });
      else reject(new Error(`${cmd} ${args.join(' ')} failed (${code ?? signal}): ${stderr.trim()}`));
    });
  });
}

/** `find DIR | wc -l`, timed; fails unless it counts `expected` lines. */
export async function findCount(dir: string, expected: number): Promise<{ seconds: number; lines: number }> {
  const { seconds, stdout } = await timed('sh', ['-c', 'find "$1" | wc -l', 'sh', dir]);
  const lines = Number(stdout.trim());
  if (lines !== expected) throw new Error(`find ${dir} printed ${lines} lines, not ${expected}`);
  return { seconds, lines };
}

/** `node bin/stowage.js ARGS` (talking to `server` when given), timed; fails unless it exits 0. */
export function stowageCli(args: string[], server?: Pick<ServeProcess, 'address' | 'token'>): Promise<{ seconds: number; stdout: string }> {
  const env: NodeJS.ProcessEnv = { ...process.env, STOWAGE_LOG_LEVEL: 'warn' };
  if (server) Object.assign(env, { STOWAGE_SERVER: server.address, STOWAGE_TOKEN: server.token });
  return timed(process.execPath, [join(ROOT, 'bin', 'stowage.js'), ...args], env);
}

/**
 * Mounts the volume, times it until ready, runs find twice (cold: the first
 * walk of the mount; warm: again, now that the kernel has cached entries),
 * commits one file through `vol` and reloads, checks the file shows, and
 * unmounts. `started` hears of the mount as soon as it exists, for the
 * caller's clean-up.
 */
export async function measureMount(opts: {
  tree: Tree;
  volume: string;
  vol: Volume;
  server: ServeProcess;
  dir: string;
  cacheDir: string;
  started: (m: Mount) => void;
}): Promise<MountFigures> {
  const { tree, server, dir } = opts;
  const server0 = server.cpuSeconds();
  const t0 = performance.now();
  const mounting = mountStowage(dir, { volume: opts.volume, cacheDir: opts.cacheDir, cacheSize: CACHE_SIZE, server: server.address, token: server.token });
  let failed: unknown;
  mounting.then(opts.started, (err: unknown) => (failed = err ?? new Error('stowage mount failed')));
  const known = join(dir, ...tree.path(0).split('/'));
  const want = tree.content(0);
  let readySeconds: number | undefined;
  while (readySeconds === undefined) {
    if (failed !== undefined) throw failed;
    const got = await readFile(known).catch(() => undefined);
    if (got?.equals(want)) readySeconds = (performance.now() - t0) / 1000;
    else if (performance.now() - t0 > READY_MS) throw new Error(`${known} did not read back through the mount within ${READY_MS / 1000} s`);
    else await new Promise((r) => setTimeout(r, READ_POLL_MS));
  }
  const m = await mounting;
  const mountCpu = () => processCpuSeconds(m.pid);
  const ready = { mount: mountCpu(), server: server.cpuSeconds() - server0 };

  const c1 = { mount: mountCpu(), server: server.cpuSeconds() };
  const findCold = await findCount(dir, tree.totalEntries + 1);
  const findWarm = await findCount(dir, tree.totalEntries + 1);
  const memoryAfterFind = processMemory(m.pid);
  const finds = { mount: mountCpu() - c1.mount, server: server.cpuSeconds() - c1.server };

  const probe = tree.addExtra('reload-probe');
  const probeBytes = Buffer.from('reload-probe\n');
  const { version } = await opts.vol.batchUpload().putFile(probeBytes, probe).commit();
  const c2 = { mount: mountCpu(), server: server.cpuSeconds() };
  const reload = await stowageCli(['volume', 'reload', dir], server);
  const reloadCpu = { mount: mountCpu() - c2.mount, server: server.cpuSeconds() - c2.server };
  const reloadedTo = Number(/-> (\d+)/.exec(reload.stdout)?.[1]);
  if (reloadedTo !== version) throw new Error(`stowage volume reload said "${reload.stdout.trim()}", not version ${version}`);
  const seen = await readFile(join(dir, ...probe.split('/')));
  if (!seen.equals(probeBytes)) throw new Error(`${probe} read back ${JSON.stringify(seen.toString())} through the mount after the reload`);
  const memoryAfterReload = processMemory(m.pid);

  await stowageCli(['unmount', dir], server);
  await m.stop();
  return {
    readySeconds,
    findCold,
    findWarm,
    memoryAfterFind,
    memoryAfterReload,
    reloadSeconds: reload.seconds,
    reloadedTo,
    cpu: {
      mount: { ready: ready.mount, finds: finds.mount, reload: reloadCpu.mount },
      server: { ready: ready.server, finds: finds.server, reload: reloadCpu.server },
    },
  };
}
