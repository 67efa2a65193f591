/** `stowage worker`: the compute bridge's agent on this host (see src/worker/agent.ts). */
import type { Command } from 'commander';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Connection, InvalidArgumentError, StowageError } from '../client/index.js';
import { resolveClientConfig, type ClientConfig } from '../common/config.js';
import { absolutePem } from '../common/tls.js';
import { parseDuration } from '../common/duration.js';
import { createLogger } from '../common/logger.js';
import { WorkerAgent } from '../worker/agent.js';
import { CACHE_MODE_FLAGS, CACHE_MODE_HELP, DEFAULT_CACHE_SIZE, cacheModes, defaultCacheDir, parseSize } from './mount.js';
import { quote } from '../common/quote.js';
import { integerArg } from './values.js';
import { checkContainerFields } from '../common/validate.js';
import { stowageVersion } from '../common/version.js';

interface WorkerFlags {
  bridge?: string;
  slots: string;
  cacheDir?: string;
  cacheSize: string;
  cacheMode: string;
  memoryCacheSize?: string;
  idleTimeout: string;
  workDir?: string;
  id?: string;
  volumePaths: boolean;
  runtime: string;
  image?: string;
}

export function register(program: Command): void {
  program
    .command('worker')
    .description('run functions placed on this host by the compute bridge (one worker per host; stays in the foreground)')
    .option('--bridge <host:port>', 'the stowage server hosting the bridge (default: --server, STOWAGE_SERVER or 127.0.0.1:7420)')
    .option('--slots <n>', 'calls run at once, each in its own process', '4')
    .option('--cache-dir <dir>', 'the host chunk cache its mounts share (default: STOWAGE_CACHE_DIR or ~/.cache/stowage)')
    .option('--cache-size <size>', 'bound on the chunk cache on disk', DEFAULT_CACHE_SIZE)
    .option(CACHE_MODE_FLAGS, `${CACHE_MODE_HELP}; passed on to its mounts`, 'private')
    .option('--memory-cache-size <size>', "bound on the chunks each mount keeps in memory when the cache disk cannot take them (stowage mount's default when not given)")
    .option('--idle-timeout <duration>', 'stop a function process after this long without a call (e.g. 30s)', '30s')
    .option('--work-dir <dir>', 'where mounts and fetched code live (default: <tmp>/stowage-worker-<id>)')
    .option('--id <id>', 'worker id (default: <hostname>-<pid>)')
    .option(
      '--no-volume-paths',
      "do not bind each function's volumes at its declared paths (which takes root and util-linux unshare): functions find them with volumePath()",
    )
    .option('--runtime <runtime>', "how functions run: 'process' (forked on this host) or 'docker' (in containers of --image, or of the function's own image)", 'process')
    .option('--image <image>', `the image of functions that name none, with --runtime docker (default: stowage:${stowageVersion()}, which scripts/image.sh builds)`)
    .action(async (flags: WorkerFlags) => {
      if (flags.bridge) process.env.STOWAGE_SERVER = flags.bridge;
      const slots = integerArg('--slots', flags.slots, 1)!;
      parseSize('--cache-size', flags.cacheSize);
      cacheModes(flags.cacheMode);
      if (flags.memoryCacheSize) parseSize('--memory-cache-size', flags.memoryCacheSize);
      const idleTimeoutMs = parseDuration('--idle-timeout', flags.idleTimeout);
      if (flags.runtime !== 'process' && flags.runtime !== 'docker') throw new InvalidArgumentError(`--runtime ${quote(flags.runtime)}: choose process or docker`);
      if (flags.image !== undefined) {
        if (flags.runtime !== 'docker') throw new InvalidArgumentError('--image is for --runtime docker (the process runtime runs functions on this host)');
        checkContainerFields({ image: flags.image, cpu: 0, memoryBytes: 0, gpu: '' });
      }
      if (flags.id !== undefined && !/^[A-Za-z0-9._-]{1,64}$/.test(flags.id)) {
        throw new InvalidArgumentError(`--id ${quote(flags.id)}: use 1 to 64 of [A-Za-z0-9._-]`);
      }
      const cfg = resolveClientConfig();
      const connection = new Connection(cfg);
      const log = createLogger('worker');
      const cacheDir = resolve(flags.cacheDir ?? defaultCacheDir());
      const id = flags.id ?? undefined;
      const agent = new WorkerAgent({
        id,
        slots,
        cacheDir,
        cacheSize: flags.cacheSize,
        workDir: resolve(flags.workDir ?? join(tmpdir(), `stowage-worker-${id ?? process.pid}`)),
        idleTimeoutMs,
        connection,
        // The mounts it starts find the server (over TLS when the worker speaks it), and (on its host) its data dir for file:// transfers, as the worker did.
        env: { ...process.env, STOWAGE_SERVER: cfg.server, STOWAGE_TOKEN: cfg.token, ...(cfg.dataDir ? { STOWAGE_DATA_DIR: cfg.dataDir } : {}), ...tlsEnv(cfg) },
        volumePaths: flags.volumePaths,
        runtime: flags.runtime,
        image: flags.image,
        mountArgs: ['--cache-mode', flags.cacheMode, ...(flags.memoryCacheSize ? ['--memory-cache-size', flags.memoryCacheSize] : [])],
        log,
        onRegistered: () => console.log(`worker ${agent.id} registered with the bridge at ${cfg.server} (slots ${slots}, cache ${cacheDir})`),
        onFatal: (err) => stopped(err),
      });
      let stopped!: (why: NodeJS.Signals | StowageError) => void;
      const why = new Promise<NodeJS.Signals | StowageError>((done) => (stopped = done));
      process.once('SIGINT', () => stopped('SIGINT'));
      process.once('SIGTERM', () => stopped('SIGTERM'));
      try {
        await agent.start();
      } catch (err) {
        await agent.stop();
        connection.close();
        throw err;
      }
      const reason = await why;
      if (typeof reason === 'string') console.error(`worker ${agent.id}: ${reason}, stopping runners and unmounting`);
      await agent.stop();
      connection.close();
      // A refused token is the command's error (exit 7, as for any command); a signal is a normal stop.
      if (reason instanceof StowageError) throw reason;
      process.exit(0);
    });
}

/** The worker's TLS settings for the mounts and function processes it starts (paths absolute: they may run elsewhere). */
function tlsEnv(cfg: ClientConfig): Record<string, string> {
  const env: Record<string, string> = {};
  if (cfg.tls !== undefined) env.STOWAGE_TLS = cfg.tls ? '1' : '0';
  if (cfg.tlsCa) env.STOWAGE_TLS_CA = absolutePem(cfg.tlsCa);
  if (cfg.tlsClientCert) env.STOWAGE_TLS_CLIENT_CERT = absolutePem(cfg.tlsClientCert);
  if (cfg.tlsClientKey) env.STOWAGE_TLS_CLIENT_KEY = absolutePem(cfg.tlsClientKey);
  return env;
}
