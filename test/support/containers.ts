/**
 * Redis, stowage servers and stowage mounts in containers, started through
 * testcontainers from the images scripts/image.sh builds locally (no image
 * registry is reachable, so nothing is pulled, and the reaper container, whose
 * image would have to be pulled, is off: TESTCONTAINERS_RYUK_DISABLED).
 * Every container runs with --network host on a port chosen at run time and
 * passed as an argument, so all traffic stays on 127.0.0.1.
 *
 * Without a Docker engine or without the images, or with
 * STOWAGE_CONTAINER_SUITES=off (.ci/run's second Node line: the containers run
 * the same image either way), CONTAINERS_SKIPPED says why, and the container
 * suites skip (describe.skipIf) after printing it.
 * Containers are stopped and removed by their stop(); a test file that exits
 * without stopping one removes it on exit (docker rm -f) as a backstop.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { GenericContainer, Wait, type StartedTestContainer } from 'testcontainers';
import { Connection } from '../../src/client/index.js';
import { freePort, tempDir } from './processes.js';

// Read when the first container starts.
process.env.TESTCONTAINERS_RYUK_DISABLED = 'true';

export const STOWAGE_IMAGE = 'stowage:latest';
export const REDIS_IMAGE = 'local/redis:bookworm';

/** Why containers cannot be started here (no engine, an image missing), or undefined when they can. */
export const CONTAINERS_SKIPPED: string | undefined = whyNoContainers();

function whyNoContainers(): string | undefined {
  if (process.env.STOWAGE_CONTAINER_SUITES === 'off') return 'STOWAGE_CONTAINER_SUITES=off';
  const r = spawnSync('docker', ['image', 'inspect', '--format', '{{.Id}}', STOWAGE_IMAGE, REDIS_IMAGE], {
    encoding: 'utf8',
    timeout: 30_000,
  });
  if (r.error) return `no docker command (${r.error.message}); scripts/docker.sh installs and starts an engine`;
  if (r.status === 0) return undefined;
  const said = r.stderr.trim().split('\n')[0] ?? `docker exited with ${r.status}`;
  return /daemon|connect/i.test(said)
    ? `no Docker engine answers (${said}); scripts/docker.sh starts one`
    : `${said}; scripts/image.sh builds ${STOWAGE_IMAGE} and ${REDIS_IMAGE}`;
}

/** For describe.skipIf: true when the suite must skip, after printing which suite and why. */
export function skipWithoutContainers(suite: string): boolean {
  if (CONTAINERS_SKIPPED !== undefined) console.log(`skipped ${suite}: ${CONTAINERS_SKIPPED}`);
  return CONTAINERS_SKIPPED !== undefined;
}

const running = new Map<string, StartedTestContainer>();
process.on('exit', () => {
  if (running.size > 0) spawnSync('docker', ['rm', '-f', ...running.keys()], { timeout: 30_000 });
});

/** A container of GenericContainer that may be given /dev/fuse (testcontainers has no option for devices). */
class TestContainer extends GenericContainer {
  withFuse(): this {
    this.hostConfig.Devices = [{ PathOnHost: '/dev/fuse', PathInContainer: '/dev/fuse', CgroupPermissions: 'rwm' }];
    return this.withAddedCapabilities('SYS_ADMIN');
  }
}

export interface Container {
  id: string;
  /** What it printed so far (stdout and stderr). */
  output(): string;
  exec(command: string[]): Promise<{ exitCode: number; output: string }>;
  /** Stops and removes it; a second call does nothing. */
  stop(): Promise<void>;
}

/**
 * Starts `image` on the host's network with `command`, ready when its output
 * matches `ready`. A container that fails to get ready is removed
 * (testcontainers does it), and the error carries what it printed.
 */
async function start(image: string, command: string[], ready: RegExp, setup: (c: TestContainer) => TestContainer = (c) => c): Promise<Container> {
  let printed = '';
  const container = setup(new TestContainer(image))
    .withNetworkMode('host')
    .withCommand(command)
    .withLabels({ 'stowage.test': 'true' })
    .withLogConsumer((stream: Readable) => stream.on('data', (d: Buffer | string) => (printed += d.toString())))
    .withWaitStrategy(Wait.forLogMessage(ready))
    .withStartupTimeout(60_000);
  let started: StartedTestContainer;
  try {
    started = await container.start();
  } catch (err) {
    throw new Error(`${image} ${command.join(' ')} did not get ready (${(err as Error).message}); it printed: ${printed || '(nothing)'}`);
  }
  const id = started.getId();
  running.set(id, started);
  return {
    id,
    output: () => printed,
    async exec(cmd) {
      const r = await started.exec(cmd);
      return { exitCode: r.exitCode, output: r.output };
    },
    async stop() {
      if (!running.delete(id)) return;
      await started.stop({ timeout: 10_000, remove: true });
    },
  };
}

export interface RedisContainer extends Container {
  url: string;
}

/** Debian's redis-server, without persistence, on a free 127.0.0.1 port. */
export async function startRedisContainer(): Promise<RedisContainer> {
  const port = await freePort();
  const c = await start(
    REDIS_IMAGE,
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    /Ready to accept connections/,
  );
  return { ...c, url: `redis://127.0.0.1:${port}` };
}

export interface StowageContainer extends Container {
  /** host:port of its gRPC service. */
  address: string;
  /** The admin token it wrote to its data dir. */
  token: string;
  /** Its data dir: a host temp dir, bind-mounted at the same path. */
  dataDir: string;
  connection: Connection;
}

/**
 * `stowage serve` in a container on a free 127.0.0.1 port, as this process's
 * user (so the test can read the token and remove the data dir), with dicts
 * and queues in `redisUrl` when given, else in LMDB in its data dir.
 */
export async function startStowageContainer(opts: { redisUrl?: string } = {}): Promise<StowageContainer> {
  const port = await freePort();
  const dataDir = tempDir('stowage-container');
  const args = ['serve', '--host', '127.0.0.1', '--port', String(port), '--data-dir', dataDir];
  if (opts.redisUrl) args.push('--redis-url', opts.redisUrl);
  const c = await start(STOWAGE_IMAGE, args, /stowage serving on/, (t) =>
    t.withBindMounts([{ source: dataDir, target: dataDir }]).withUser(`${process.getuid?.() ?? 0}:${process.getgid?.() ?? 0}`),
  );
  const address = `127.0.0.1:${port}`;
  const token = readFileSync(join(dataDir, 'token'), 'utf8').trim();
  const connection = new Connection({ server: address, token });
  return {
    ...c,
    address,
    token,
    dataDir,
    connection,
    async stop() {
      connection.close();
      await c.stop();
    },
  };
}

/**
 * `stowage mount VOLUME DIR` in a container given /dev/fuse and SYS_ADMIN,
 * reaching the server at `server` (on the host) with `token`; ready once it
 * printed that it mounted.
 */
export async function startMountContainer(server: string, token: string, volume: string, dir: string): Promise<Container> {
  return start(STOWAGE_IMAGE, ['mount', volume, dir], /mounted .* at /, (t) =>
    t.withFuse().withEnvironment({ STOWAGE_SERVER: server, STOWAGE_TOKEN: token }),
  );
}
