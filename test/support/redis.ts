/**
 * A real redis-server for tests and benchmarks: daemonized on a free
 * 127.0.0.1 port with no persistence, found by the PID in its pidfile, stopped
 * by that PID (by the caller, and on process exit as a backstop).
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort, tempDir } from './processes.js';

const run = promisify(execFile);
export const REDIS_SERVER = process.env.REDIS_SERVER ?? 'redis-server';

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
  /** Working directory (log, pidfile); remove it after stop(). */
  dir: string;
  /** What `redis-server --version` says, e.g. 7.0.15. */
  version: string;
  /** PID of the running server (0 while stopped). */
  readonly pid: number;
  /** Kills the server (SIGKILL) and waits until the process is gone. */
  stop(): Promise<void>;
  /** Starts a fresh, empty server on the same port. */
  restart(): Promise<void>;
}

/** Starts a server working in `dir` (default: a new temporary directory). */
export async function startRedis(dir = tempDir('redis')): Promise<RedisServer> {
  const port = await freePort();
  const pidfile = join(dir, 'redis.pid');
  let pid = 0;

  const launch = async () => {
    rmSync(pidfile, { force: true });
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
    pid = await until(`redis-server pidfile ${pidfile}`, () =>
      existsSync(pidfile) ? Number(readFileSync(pidfile, 'utf8').trim()) || undefined : undefined,
    );
    pids.add(pid);
    await until(`redis-server PING on port ${port}`, () => ping(port));
  };

  await launch();
  const version = (await run(REDIS_SERVER, ['--version'])).stdout.match(/v=(\S+)/)?.[1] ?? 'unknown';
  const server: RedisServer = {
    port,
    dir,
    version,
    url: `redis://127.0.0.1:${port}`,
    get pid() {
      return pid;
    },
    async stop() {
      if (pid === 0) return;
      const p = pid;
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        // already gone
      }
      await until(`redis-server ${p} to exit`, () => (alive(p) ? undefined : true));
      pids.delete(p);
      pid = 0;
    },
    async restart() {
      await server.stop();
      await launch();
    },
  };
  return server;
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
