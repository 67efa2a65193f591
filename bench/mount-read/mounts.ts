/**
 * The FUSE mounts of the benchmark, each a child process started here and
 * stopped by its PID: stowage's own (`node bin/stowage.js mount`), s3fs,
 * `rclone mount` and the trivial in-memory file system (trivial-fuse.ts).
 *
 * Every mount point is remembered as soon as a mount is attempted, and
 * `detachAll` runs `fusermount -uz` on each: stop() does it for one mount,
 * the caller's finally block and signal handlers for all that are left. A
 * mount process that does not exit within a few seconds of SIGTERM is
 * SIGKILLed; the exit backstop of setup.ts kills any left when this process
 * exits.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BUCKET, ROOT, S3_KEY, S3_SECRET, processMemory, rcloneEnv, track } from '../volume-transfer/setup.js';

const READY_MS = 60_000;
const STOP_MS = 10_000;

/** Every directory something was mounted on (or tried to be). */
const mountDirs = new Set<string>();

export function detach(dir: string): void {
  spawnSync('fusermount', ['-uz', dir], { stdio: 'ignore' });
}

/** fusermount -uz on every mount point still listed by the kernel. */
export function detachAll(): void {
  const mounted = new Set(mountedPaths());
  for (const dir of mountDirs) if (mounted.has(dir)) detach(dir);
}

export function mountedPaths(): string[] {
  return readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .map((l) => (l.split(' ')[1] ?? '').replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8))));
}

export interface Mount {
  readonly name: string;
  readonly dir: string;
  readonly pid: number;
  /** Peak resident set (VmHWM) of the mount process so far, in bytes; NaN once it is gone. */
  peakRss(): number;
  /** Detaches the mount point and stops the process (SIGTERM, then SIGKILL). */
  stop(): Promise<void>;
}

export function peakRssOf(pid: number): number {
  return processMemory(pid).peak;
}

/**
 * Starts `cmd args` (which mounts on `dir` and stays in the foreground) and
 * resolves once the kernel lists `dir` as a mount point.
 */
async function startMount(name: string, dir: string, cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<Mount> {
  mkdirSync(dir, { recursive: true });
  mountDirs.add(dir);
  const child: ChildProcess = track(spawn(cmd, args, { env, stdio: ['ignore', 'ignore', 'pipe'] }));
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
    if (stderr.length > 64 * 1024) stderr = stderr.slice(-32 * 1024);
  });
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
  const gone = () => child.exitCode !== null || child.signalCode !== null;
  const t0 = Date.now();
  for (;;) {
    if (mountedPaths().includes(dir)) break;
    if (gone()) throw new Error(`${name}: ${cmd} exited (${child.exitCode ?? child.signalCode}) before mounting: ${stderr.trim()}`);
    if (Date.now() - t0 > READY_MS) {
      process.kill(child.pid!, 'SIGKILL');
      throw new Error(`${name}: not mounted after ${READY_MS / 1000} s: ${stderr.trim()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  let stopping: Promise<void> | undefined;
  return {
    name,
    dir,
    pid: child.pid!,
    peakRss: () => peakRssOf(child.pid!),
    stop() {
      stopping ??= (async () => {
        detach(dir);
        if (!gone()) process.kill(child.pid!, 'SIGTERM');
        const timer = setTimeout(() => {
          if (!gone()) process.kill(child.pid!, 'SIGKILL');
        }, STOP_MS);
        await exited;
        clearTimeout(timer);
        if (mountedPaths().includes(dir)) detach(dir);
      })();
      return stopping;
    },
  };
}

/** `stowage mount VOLUME DIR --cache-dir CACHE --cache-size SIZE [--fetch-threads N]`, talking to the bench's stowage server. */
export function mountStowage(
  dir: string,
  opts: { volume: string; cacheDir: string; cacheSize: string; server: string; token: string; fetchThreads?: number },
): Promise<Mount> {
  const args = [join(ROOT, 'bin', 'stowage.js'), 'mount', opts.volume, dir, '--cache-dir', opts.cacheDir, '--cache-size', opts.cacheSize];
  if (opts.fetchThreads !== undefined) args.push('--fetch-threads', String(opts.fetchThreads));
  const env = { ...process.env, STOWAGE_SERVER: opts.server, STOWAGE_TOKEN: opts.token, STOWAGE_LOG_LEVEL: 'warn' };
  return startMount('stowage', dir, process.execPath, args, env);
}

export const S3FS_OPTIONS = ['ro', 'use_path_request_style', 'nomixupload', 'endpoint=us-east-1'];

/** s3fs in the foreground on BUCKET:/PREFIX, path-style requests to s3rver, read-only. */
export function mountS3fs(dir: string, opts: { endpoint: string; prefix: string; workDir: string }): Promise<Mount> {
  mkdirSync(opts.workDir, { recursive: true });
  const passwd = join(opts.workDir, 's3fs-passwd');
  writeFileSync(passwd, `${S3_KEY}:${S3_SECRET}\n`, { mode: 0o600 });
  const o = [...S3FS_OPTIONS, `url=${opts.endpoint}`, `passwd_file=${passwd}`].join(',');
  return startMount('s3fs', dir, 's3fs', [`${BUCKET}:/${opts.prefix}`, dir, '-f', '-o', o], { ...process.env });
}

export const RCLONE_MOUNT_FLAGS = ['--read-only', '--s3-no-check-bucket'];

/** `rclone mount s3:BUCKET/PREFIX DIR --vfs-cache-mode MODE`, configured through RCLONE_CONFIG_S3_*. */
export function mountRclone(dir: string, opts: { endpoint: string; prefix: string; mode: 'off' | 'full'; cacheDir: string }): Promise<Mount> {
  const env = rcloneEnv(opts.endpoint);
  const args = ['mount', `s3:${BUCKET}/${opts.prefix}`, dir, '--vfs-cache-mode', opts.mode, '--cache-dir', opts.cacheDir, ...RCLONE_MOUNT_FLAGS];
  return startMount(`rclone (${opts.mode})`, dir, 'rclone', args, env);
}

/** The trivial in-memory fuse-native file system (trivial-fuse.js) over the local data (the shards too when `shardsDir` is given). */
export function mountTrivial(dir: string, opts: { bigFile: string; smallDir: string; shardsDir?: string }): Promise<Mount> {
  const script = join(ROOT, 'dist', 'bench', 'mount-read', 'trivial-fuse.js');
  const args = [script, dir, opts.bigFile, opts.smallDir, ...(opts.shardsDir ? [opts.shardsDir] : [])];
  return startMount('trivial FUSE', dir, process.execPath, args, { ...process.env });
}

/** Whether this checkout's `stowage mount` takes --fetch-threads (the sweep is skipped when it does not). */
export function stowageHasFetchThreads(): boolean {
  const help = spawnSync(process.execPath, [join(ROOT, 'bin', 'stowage.js'), 'mount', '--help'], { encoding: 'utf8' });
  return /--fetch-threads\b/.test(help.stdout ?? '');
}
