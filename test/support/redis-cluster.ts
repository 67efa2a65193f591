/**
 * A real Redis Cluster for tests and benchmarks: `masters` masters and as
 * many replicas (one each, or none), each a daemonized redis-server on a free
 * 127.0.0.1 port with no persistence and cluster-node-timeout 1000, joined by
 * `redis-cli --cluster create`. Nodes are stopped by the PIDs in their
 * pidfiles (by the caller, and on process exit as a backstop).
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort, tempDir } from './processes.js';
import { REDIS_SERVER } from './redis.js';

const run = promisify(execFile);
const REDIS_CLI = process.env.REDIS_CLI ?? 'redis-cli';

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

export interface ClusterNode {
  port: number;
  pid: number;
}

export interface RedisCluster {
  /** redis://127.0.0.1:p1,127.0.0.1:p2,… (every node, as seeds) */
  url: string;
  /** The first node alone (for --redis-cluster with one seed). */
  seedUrl: string;
  nodes: ClusterNode[];
  dir: string;
  /** Ports of the nodes that are masters now. */
  masters(): Promise<number[]>;
  /** The port of the master serving `key`'s slot now. */
  masterOf(key: string): Promise<number>;
  /** SIGKILLs the node on `port` and waits until a replica has taken over its slots (cluster_state:ok again). */
  kill(port: number): Promise<void>;
  /** kill() of the i-th master now (by port order); returns its port. */
  killMaster(index: number): Promise<number>;
  stop(): Promise<void>;
}

export async function startRedisCluster(opts: { masters?: number; replicas?: 0 | 1 } = {}): Promise<RedisCluster> {
  const masters = opts.masters ?? 3;
  const replicas = opts.replicas ?? 1;
  const dir = tempDir('redis-cluster');
  const nodes: ClusterNode[] = [];
  const cluster: RedisCluster = {
    url: '',
    seedUrl: '',
    nodes,
    dir,
    async masters() {
      const out = await cli(live()[0]!.port, 'cluster', 'nodes');
      return out
        .split('\n')
        .filter((l) => /\bmaster\b/.test(l) && !/\bfail\b/.test(l) && /connected/.test(l))
        .map((l) => Number(/:(\d+)@/.exec(l)?.[1]));
    },
    async masterOf(key: string) {
      const slot = Number((await cli(live()[0]!.port, 'cluster', 'keyslot', key)).trim());
      const slots = (await run(REDIS_CLI, ['-p', String(live()[0]!.port), '--json', 'cluster', 'slots'])).stdout;
      for (const [from, to, master] of JSON.parse(slots) as [number, number, [string, number]][]) {
        if (slot >= from && slot <= to) return Number(master[1]);
      }
      throw new Error(`no master serves slot ${slot}`);
    },
    async kill(port: number) {
      const node = nodes.find((n) => n.port === port);
      if (!node || node.pid === 0) throw new Error(`no running node on port ${port}`);
      await killPid(node.pid);
      node.pid = 0;
      // A replica is promoted after cluster-node-timeout; then every live node agrees the state is ok.
      await until(`cluster failover after killing ${port}`, async () => {
        const now = await cluster.masters().catch(() => [] as number[]);
        if (now.includes(port) || now.length < masters) return undefined;
        return (await allOk()) ? true : undefined;
      }, 30_000);
    },
    async killMaster(index: number) {
      const port = (await cluster.masters()).sort((x, y) => x - y)[index];
      if (port === undefined) throw new Error(`no master #${index}`);
      await cluster.kill(port);
      return port;
    },
    async stop() {
      for (const n of nodes) {
        if (n.pid !== 0) await killPid(n.pid);
        n.pid = 0;
      }
    },
  };
  const live = () => nodes.filter((n) => n.pid !== 0);
  const allOk = async () => {
    for (const n of live()) {
      const info = await cli(n.port, 'cluster', 'info').catch(() => '');
      if (!info.includes('cluster_state:ok')) return false;
    }
    return true;
  };
  try {
    const total = masters * (1 + replicas);
    for (let i = 0; i < total; i++) nodes.push(await startNode(dir, i));
    await run(REDIS_CLI, [
      '--cluster', 'create',
      ...nodes.map((n) => `127.0.0.1:${n.port}`),
      '--cluster-replicas', String(replicas),
      '--cluster-yes',
    ]);
    await until('cluster_state:ok on every node', async () => ((await allOk()) ? true : undefined), 30_000);
    // Every replica has synced with its master (else it cannot take over).
    await until('every replica to sync', async () => {
      for (const n of nodes) {
        const info = await cli(n.port, 'info', 'replication');
        if (info.includes('role:slave') && !info.includes('master_link_status:up')) return undefined;
      }
      return true;
    }, 30_000);
    // Every node knows every other (gossip) before a client reads the slot map.
    await until('every node to see the whole cluster', async () => {
      for (const n of nodes) {
        const known = (await cli(n.port, 'cluster', 'nodes')).split('\n').filter((l) => l.trim()).length;
        if (known < total) return undefined;
      }
      return true;
    });
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  cluster.url = `redis://${nodes.map((n) => `127.0.0.1:${n.port}`).join(',')}`;
  cluster.seedUrl = `redis://127.0.0.1:${nodes[0]!.port}`;
  return cluster;
}

async function startNode(dir: string, i: number): Promise<ClusterNode> {
  const port = await freePort();
  const pidfile = join(dir, `node-${i}.pid`);
  await run(REDIS_SERVER, [
    '--port', String(port),
    '--bind', '127.0.0.1',
    '--cluster-enabled', 'yes',
    '--cluster-config-file', join(dir, `nodes-${i}.conf`),
    '--cluster-node-timeout', '1000',
    // A replica serves as a failover target only once it has synced: start that at once, not after 5 s.
    '--repl-diskless-sync-delay', '0',
    // Let a replica take over however long ago it last heard its master (tests kill masters on purpose).
    '--cluster-replica-validity-factor', '0',
    '--save', '',
    '--appendonly', 'no',
    '--daemonize', 'yes',
    '--pidfile', pidfile,
    '--dir', dir,
    '--logfile', join(dir, `node-${i}.log`),
  ]);
  const pid = await until(`redis-server pidfile ${pidfile}`, () =>
    existsSync(pidfile) ? Number(readFileSync(pidfile, 'utf8').trim()) || undefined : undefined,
  );
  pids.add(pid);
  await until(`redis-server PING on ${port}`, async () => ((await cli(port, 'ping').catch(() => '')).includes('PONG') ? true : undefined));
  return { port, pid };
}

async function cli(port: number, ...args: string[]): Promise<string> {
  return (await run(REDIS_CLI, ['-p', String(port), ...args], { timeout: 5000 })).stdout;
}

async function killPid(pid: number): Promise<void> {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
  await until(`redis-server ${pid} to exit`, () => (alive(pid) ? undefined : true));
  pids.delete(pid);
}

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

async function until<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
