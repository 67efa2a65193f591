/**
 * The redis-server the benchmark runs against, and redis-benchmark.
 *
 * redis-server is started as the tests start it (test/support/redis.ts):
 * daemonized on a free 127.0.0.1 port, no persistence, found by the PID in its
 * pidfile and stopped by that PID with SIGKILL. A backstop on process exit
 * kills it too, so a failed or interrupted run leaves nothing behind.
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
export const REDIS_SERVER = process.env.REDIS_SERVER ?? 'redis-server';
export const REDIS_BENCHMARK = process.env.REDIS_BENCHMARK ?? 'redis-benchmark';

const pids = new Set<number>();
process.on('exit', () => {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
});

export interface RedisServer {
  port: number;
  url: string;
  pid: number;
  version: string;
  stop(): Promise<void>;
}

export async function startRedis(dir: string): Promise<RedisServer> {
  const port = await freePort();
  const pidfile = join(dir, 'redis.pid');
  await run(REDIS_SERVER, [
    '--port', String(port),
    '--bind', '127.0.0.1',
    '--save', '',
    '--appendonly', 'no',
    '--daemonize', 'yes',
    '--pidfile', pidfile,
    '--dir', dir,
    '--logfile', join(dir, 'redis.log'),
  ]);
  const pid = await until(`redis-server pidfile ${pidfile}`, () =>
    existsSync(pidfile) ? Number(readFileSync(pidfile, 'utf8').trim()) || undefined : undefined,
  );
  pids.add(pid);
  await until(`redis-server PING on port ${port}`, () => ping(port));
  const version = (await run(REDIS_SERVER, ['--version'])).stdout.match(/v=(\S+)/)?.[1] ?? 'unknown';
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    pid,
    version,
    async stop() {
      if (!pids.has(pid)) return;
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
      await until(`redis-server ${pid} to exit`, () => (alive(pid) ? undefined : true));
      pids.delete(pid);
    },
  };
}

/** One redis-benchmark test's figures, from its --csv output. */
export interface RedisBenchmarkRow {
  test: string;
  rps: number;
  p50Ms: number;
  p99Ms: number;
}

/**
 * Runs redis-benchmark against `port` and returns a row per test. `-d` is the
 * value size; `-r` spreads SET/GET over that many keys as the other
 * contenders do.
 */
export async function redisBenchmark(
  port: number,
  o: { tests: string; requests: number; clients: number; pipeline: number; valueBytes: number; keys: number },
): Promise<{ args: string[]; rows: RedisBenchmarkRow[] }> {
  const args = [
    '-h', '127.0.0.1',
    '-p', String(port),
    '-t', o.tests,
    '-n', String(o.requests),
    '-c', String(o.clients),
    '-P', String(o.pipeline),
    '-d', String(o.valueBytes),
    '-r', String(o.keys),
    '-q', '--csv',
  ];
  const { stdout } = await run(REDIS_BENCHMARK, args, { timeout: 120_000 });
  const rows: RedisBenchmarkRow[] = [];
  for (const line of stdout.split('\n')) {
    const f = line.split(',').map((c) => c.replace(/^"|"$/g, ''));
    if (f.length < 7 || f[0] === 'test') continue;
    rows.push({ test: f[0]!, rps: Number(f[1]), p50Ms: Number(f[4]), p99Ms: Number(f[6]) });
  }
  if (rows.length === 0) throw new Error(`redis-benchmark ${args.join(' ')} printed no figures:\n${stdout}`);
  return { args, rows };
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** Whether `pid` is running; a zombie (killed, not yet reaped by init) is not. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return true;
  }
}

function ping(port: number): Promise<true | undefined> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port }, () => s.write('PING\r\n'));
    s.setTimeout(500, () => s.destroy());
    s.once('data', (d) => {
      s.destroy();
      resolve(d.toString().startsWith('+PONG') ? true : undefined);
    });
    s.once('error', () => resolve(undefined));
    s.once('close', () => resolve(undefined));
  });
}

/** Polls `probe` until it returns a value, for at most ten seconds. */
async function until<T>(what: string, probe: () => T | undefined | Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
