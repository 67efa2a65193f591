/**
 * The docker runtime (`stowage worker --runtime docker --image IMAGE`): each
 * runner (runner.ts) runs in a container of the function's image (its
 * `image`, else the worker's), started with the `docker` CLI on the host's
 * engine and reused for later calls of the same image and limits, as forked
 * runners are (runners.ts). The image's `node` runs the worker's own
 * runner.js, which is bound in read-only at the same path (with the SDK the
 * bundles import, and the node_modules above it that its dependencies may
 * have been hoisted to). The bundle of the call it runs, and only that one,
 * is linked into a directory bound in read-only, for the call.
 *
 * Volumes: a container is made for a set of declared paths ('/data',
 * '/out'; part of its key, with the image and limits). Each path is bound,
 * read-only and with `rslave` propagation, from an empty directory of its own
 * under the worker's `<work-dir>/mounts` (a shared mount, namespaces.ts).
 * Before each call the worker binds the call's volume mount onto that
 * directory, on the host, and the bind propagates into the container; after
 * the call it is unbound, and the container sees an empty, read-only
 * directory again. A read-only volume is first bound read-only in a private
 * staging directory, and that read-only mount is what is bound there (its
 * propagated copy is read-only too; runner-binds.ts). A reload binds the new
 * version's mount there, for the call that asked only. So the container needs
 * no capability (it runs with none, as root of its own files, without new
 * privileges), and its image no `mount`.
 *
 * The worker and the runner talk over a Unix socket in a directory bound into
 * the container (runner-channel.ts); stdout and stderr come through the
 * attached `docker run`. Containers are labelled (stowage.runner, the host,
 * the worker's pid and its start time) and run with --rm; a worker removes
 * its containers when it stops, and at start those that a worker of this host
 * killed before it could (SIGKILL) left behind, and their directories.
 *
 * cpu and memory map to --cpus and --memory; gpu 'any' to --gpus 1, where the
 * engine has the NVIDIA runtime, else the call fails naming what is missing.
 */
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, rmSync, rmdirSync, symlinkSync } from 'node:fs';
import { copyFile, link, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { hostname } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { PassThrough } from 'node:stream';
import { promisify } from 'node:util';
import { FailedPreconditionError, UnavailableError, messageOf } from '../common/errors.js';
import { PRIVATE } from '../common/file-modes.js';
import { alive, startTimeOf } from '../common/processes.js';
import type { Logger } from '../common/logger.js';
import type { FunctionSpec } from '../gen/stowage/v1/bridge.js';
import { socketChannel, type Channel } from './runner-channel.js';
import { RunnerBinds, type CallMount } from './runner-binds.js';
import { PACKAGE_ROOT } from './code.js';
import { RUNNER, type RunnerProcess, type StartRunner } from './runners.js';

const exec = promisify(execFile);

export const RUNNER_LABEL = 'stowage.runner';
/** Where a runner's socket directory is bound in its container. */
const SOCKET_DIR_IN_CONTAINER = '/run/stowage-runner';
/** Where a runner container sees the bundle of the call it runs (and no other). */
const CODE_DIR_IN_CONTAINER = '/run/stowage-code';
/** The newest bytes of a container's output kept for the error of one that ends before it is ready. */
const START_LOG_BYTES = 4096;
/** This worker's installation (no trailing '/'). */
const INSTALLATION = PACKAGE_ROOT.replace(/\/$/, '');

export interface DockerRuntimeOptions {
  /** The image of functions that name none. */
  image: string;
  workerId: string;
  workDir: string;
  /** The worker's shared mounts directory (namespaces.ts): runner containers' declared paths are bound from below it. */
  mountsDir: string;
  /** The environment of `docker` (DOCKER_HOST…) and of the runners: their STOWAGE_* variables are passed in (and the TLS files they name bound). */
  env: NodeJS.ProcessEnv;
  log: Logger;
}

/** The container part of a function's spec. */
export type ContainerNeeds = Pick<FunctionSpec, 'image' | 'cpu' | 'memoryBytes' | 'gpu'>;

/** What a runner container is made for: image, cpu, memory bytes, gpu, declared volume paths. */
type ContainerKey = [string, number, number, string, string[]];

export class DockerRuntime {
  /** Images known to be on the engine. */
  private readonly images = new Set<string>();
  private nvidia: boolean | undefined;
  private n = 0;
  /** Sockets of runners: <work-dir>/runners/<name>/. */
  private readonly socketsDir: string;
  /** Declared paths of runner containers: <mounts>/@runners/<name>/<i> ('@' is in no volume mount's name there). */
  private readonly bindsDir: string;
  /** Read-only binds before they are bound into bindsDir: a private mount, so nothing made there propagates. */
  private readonly stageDir: string;
  /** Host paths bound into every container read-only at the same path: this installation and the node_modules above it, TLS files. */
  private readonly readOnlyPaths: string[];
  /** This worker process, as its containers' labels name it: pid and start time (a pid may be reused). */
  private readonly instance = `${process.pid}:${startTimeOf(process.pid)}`;

  constructor(private readonly opts: DockerRuntimeOptions) {
    this.socketsDir = join(opts.workDir, 'runners');
    this.bindsDir = join(opts.mountsDir, '@runners');
    this.stageDir = join(opts.workDir, 'ro-stage');
    this.readOnlyPaths = [...installationPaths(INSTALLATION), ...tlsFiles(opts.env)];
    for (const d of [this.socketsDir, this.bindsDir, this.stageDir]) mkdirSync(d, { recursive: true, mode: PRIVATE.dir });
  }

  /** Checks that the engine answers and the worker's image is there; removes what killed workers of this host left. */
  async start(): Promise<void> {
    await this.docker(['version', '--format', '{{.Server.Version}}']);
    await this.checkImage(this.opts.image, 'the worker\'s --image');
    const left = await this.leftovers();
    if (left.length) {
      await this.docker(['rm', '-f', ...left]);
      this.opts.log.info({ containers: left.length }, `worker: removed ${left.length} runner container(s) that stopped workers of this host left behind`);
    }
    // Binds and sockets of runners of an earlier worker on this work dir (its containers are gone).
    for (const dir of [this.bindsDir, this.stageDir]) {
      for (const runner of readdirSync(dir)) {
        for (const p of readdirSync(join(dir, runner))) await unmountLazily(join(dir, runner, p));
        removeEmptyDirs(join(dir, runner));
      }
    }
    rmSync(this.socketsDir, { recursive: true, force: true });
    mkdirSync(this.socketsDir, { recursive: true, mode: PRIVATE.dir });
    await unmountLazily(this.stageDir);
    await exec('mount', ['--bind', this.stageDir, this.stageDir]);
    await exec('mount', ['--make-private', this.stageDir]);
  }

  /** The runner key of a call: calls of one key share containers. */
  key(f: ContainerNeeds & Pick<FunctionSpec, 'volumes'>): string {
    return JSON.stringify([f.image || this.opts.image, f.cpu, f.memoryBytes, f.gpu, Object.keys(f.volumes).sort()] satisfies ContainerKey);
  }

  /** Before a call runs: its declared paths can be a container's, its image is on the engine (pulled if it can be), and its GPU can be given. */
  async prepare(f: ContainerNeeds & Pick<FunctionSpec, 'volumes'>, fn: string): Promise<void> {
    const taken = [...this.readOnlyPaths, SOCKET_DIR_IN_CONTAINER, CODE_DIR_IN_CONTAINER];
    for (const path of Object.keys(f.volumes)) {
      if (/[:,]/.test(path)) throw new FailedPreconditionError(`function ${fn} declares the volume path ${path}, which a container cannot have (no ':' or ','); declare another path`);
      const clash = taken.find((t) => t === path || t.startsWith(`${path}/`) || path.startsWith(`${t}/`));
      if (clash) throw new FailedPreconditionError(`function ${fn} declares the volume path ${path}, which would hide or sit in ${clash}, where the worker binds what runs the function; declare another path`);
    }
    await this.checkImage(f.image || this.opts.image, `function ${fn}`);
    if (f.gpu) {
      this.nvidia ??= (await this.docker(['info', '--format', '{{json .Runtimes}}'])).includes('"nvidia"');
      if (!this.nvidia) {
        throw new FailedPreconditionError(
          `function ${fn} asks for gpu '${f.gpu}', but the Docker engine of worker ${this.opts.workerId} has no NVIDIA runtime (install the NVIDIA driver and nvidia-container-toolkit on that host, or run the function without gpu)`,
        );
      }
    }
  }

  /** Starts runners in containers, for the pool. */
  starter(): StartRunner {
    return (key) => this.run(JSON.parse(key) as ContainerKey);
  }

  /** Removes every container of this worker (it is stopping; the pool has stopped its runners). */
  async stop(): Promise<void> {
    const mine = await this.docker(['ps', '-aq', '--filter', `label=${RUNNER_LABEL}`, '--filter', `label=stowage.worker-instance=${this.instance}`, '--filter', `label=stowage.host=${hostname()}`]).catch(() => '');
    const ids = mine.split('\n').filter(Boolean);
    if (ids.length) await this.docker(['rm', '-f', ...ids]).catch(() => undefined);
    await unmountLazily(this.stageDir);
  }

  private run([image, cpu, memoryBytes, gpu, paths]: ContainerKey): RunnerProcess {
    const name = `stowage-runner-${process.pid}-${++this.n}-${randomBytes(3).toString('hex')}`;
    const socketDir = join(this.socketsDir, name);
    mkdirSync(socketDir, { recursive: true, mode: PRIVATE.dir });
    // The call's bundle, linked here for the call (the worker's other bundles are other functions' code), and
    // `stowage` for its import.
    const codeDir = join(this.socketsDir, `${name}-code`);
    mkdirSync(join(codeDir, 'node_modules'), { recursive: true, mode: PRIVATE.dir });
    symlinkSync(INSTALLATION, join(codeDir, 'node_modules', 'stowage'), 'dir');
    let linked: string | undefined;
    const unlinkBundle = async () => {
      if (linked) await rm(linked, { force: true });
      linked = undefined;
    };
    // Under the shared mounts directory, so that what the worker binds there reaches the container.
    const bindDir = join(this.bindsDir, name);
    const stageDir = join(this.stageDir, name);
    const at = new Map(paths.map((p, i) => [p, String(i)]));
    for (const i of at.values()) mkdirSync(join(bindDir, i), { recursive: true, mode: PRIVATE.dir });
    const binds = new RunnerBinds(
      (m) => join(bindDir, at.get(m.path)!),
      (m) => join(stageDir, at.get(m.path)!),
    );
    /** The call bound now, and its mounts by declared path. */
    let current = { callId: '', mounts: new Map<string, CallMount>() };
    /** Bind work in order: a call's binds wait for the last call's unbinds. */
    let chain: Promise<void> = Promise.resolve();
    const then = (step: () => Promise<void>): Promise<void> => (chain = chain.then(step, step));
    const socketPath = join(socketDir, 'runner.sock');
    const stowageEnv = Object.keys(this.opts.env).filter((k) => k.startsWith('STOWAGE_'));
    const args = [
      'run', '--rm', '--name', name,
      '--label', `${RUNNER_LABEL}=1`, '--label', `stowage.worker=${this.opts.workerId}`, '--label', `stowage.host=${hostname()}`, '--label', `stowage.worker-instance=${this.instance}`,
      // The SDK inside reaches the server as the worker does (127.0.0.1 included).
      '--network', 'host',
      // Root of its own files (the bundles and sockets are root's, 0600), without any capability or a way to gain one.
      '--user', '0:0', '--cap-drop', 'ALL', '--security-opt', 'no-new-privileges',
      ...[...at].flatMap(([path, i]) => ['-v', `${join(bindDir, i)}:${path}:ro,rslave`]),
      ...this.readOnlyPaths.flatMap((p) => ['-v', `${p}:${p}:ro`]),
      '-v', `${socketDir}:${SOCKET_DIR_IN_CONTAINER}`,
      '-v', `${codeDir}:${CODE_DIR_IN_CONTAINER}:ro`,
      '-e', `STOWAGE_RUNNER_SOCKET=${SOCKET_DIR_IN_CONTAINER}/runner.sock`,
      ...stowageEnv.flatMap((k) => ['-e', k]),
      ...(cpu ? ['--cpus', String(cpu)] : []),
      ...(memoryBytes ? ['--memory', String(memoryBytes)] : []),
      ...(gpu ? ['--gpus', '1'] : []),
      '--entrypoint', 'node',
      image, RUNNER,
    ];
    const exits: ((how: string, log: string) => void)[] = [];
    let exited: { how: string; log: string } | undefined;
    let channel: Channel | undefined;
    const pending: ((msg: unknown) => void)[] = [];
    const closes: (() => void)[] = [];
    let startLog = '';
    let ready = false;
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    // The runner connects once its container is up; until then nothing is sent (the pool waits for its first message).
    const server: Server = createServer((socket) => {
      server.close();
      channel = socketChannel(socket);
      channel.onMessage(() => (ready = true));
      for (const fn of pending) channel.onMessage(fn);
      for (const fn of closes) channel.onClose(fn);
    });
    // A socket path too long (a deep --work-dir) or a directory gone: the runner cannot connect, so end it.
    server.on('error', (err) => {
      startLog += `the worker cannot listen on ${socketPath}: ${err.message}`;
      child.kill('SIGKILL');
      remove();
    });
    server.listen(socketPath);
    const child = spawn('docker', args, { env: this.opts.env, stdio: ['ignore', 'pipe', 'pipe'] });
    const keep = (data: Buffer) => {
      if (!ready) startLog = (startLog + data.toString('utf8')).slice(-START_LOG_BYTES);
    };
    child.stdout.on('data', keep).pipe(stdout);
    child.stderr.on('data', keep).pipe(stderr);
    const remove = () => {
      execFile('docker', ['rm', '-f', name], { env: this.opts.env }, () => undefined);
    };
    let ending = false;
    const ended = (how: string) => {
      if (ending) return;
      ending = true;
      server.close();
      // Sockets, links and a symlink only: nothing is mounted there.
      rmSync(socketDir, { recursive: true, force: true });
      rmSync(codeDir, { recursive: true, force: true });
      // Its binds are gone before its end is told (the worker may then unmount the volumes bound).
      void then(async () => {
        await binds.unbindAll();
        removeEmptyDirs(bindDir);
        removeEmptyDirs(stageDir);
      }).then(() => {
        exited = { how, log: ready ? '' : engineHint(startLog.trim()) };
        for (const fn of exits) fn(exited.how, exited.log);
      });
    };
    child.on('error', (err) => ended(`an error starting docker: ${err.message}`));
    // After its output is all read, so that what a failing start printed is in the error.
    child.on('close', (code, signal) => ended(signal ?? `code ${code}`));
    return {
      pid: child.pid,
      stdout,
      stderr,
      channel: {
        send: (msg) => channel?.send(msg),
        onMessage: (fn) => (channel ? channel.onMessage(fn) : void pending.push(fn)),
        onClose: (fn) => (channel ? channel.onClose(fn) : void closes.push(fn)),
        get connected() {
          return !!channel?.connected;
        },
      },
      onExit: (fn) => (exited ? fn(exited.how, exited.log) : void exits.push(fn)),
      get exited() {
        return !!exited;
      },
      kill: () => {
        remove();
        child.kill('SIGKILL');
      },
      stop: remove,
      beginCall: async (mounts, callId, bundle) => {
        let seen = '';
        await then(async () => {
          current = { callId, mounts: new Map(mounts.map((m) => [m.path, { ...m }])) };
          await unlinkBundle();
          linked = join(codeDir, basename(bundle));
          // A hard link (the work dir is one file system); a copy where it is not.
          await link(bundle, linked).catch(() => copyFile(bundle, linked!));
          seen = join(CODE_DIR_IN_CONTAINER, basename(bundle));
          await binds.bind(mounts, []);
        });
        return seen;
      },
      endCall: () =>
        then(async () => {
          current = { callId: '', mounts: new Map() };
          await unlinkBundle();
          await binds.unbindAll();
        }),
      rebind: (callId, path, source) =>
        then(async () => {
          // Only for the call bound now: an answer that arrives after its call ended must not move the next call's volume.
          const m = current.callId === callId ? current.mounts.get(path) : undefined;
          if (!m || m.source === source) return;
          await binds.rebind(m, source);
          m.source = source;
        }),
    };
  }

  private async checkImage(image: string, whose: string): Promise<void> {
    if (this.images.has(image)) return;
    try {
      await this.docker(['image', 'inspect', '--format', '{{.Id}}', image]);
    } catch (err) {
      if (err instanceof UnavailableError) throw err;
      this.opts.log.info({ image }, `worker: image ${image} is not on this host's Docker engine; pulling it`);
      try {
        await this.docker(['pull', '--quiet', image], 10 * 60_000);
      } catch (pullErr) {
        if (pullErr instanceof UnavailableError) throw pullErr;
        throw new FailedPreconditionError(
          `image ${image} (${whose}) is not on the Docker engine of worker ${this.opts.workerId}, and pulling it failed (${messageOf(pullErr)}); build it on that host (${image.startsWith('stowage:') ? 'scripts/image.sh builds stowage:VERSION, or ' : ''}docker build -t ${image} DIR) or load it (docker load -i FILE)`,
        );
      }
    }
    this.images.add(image);
  }

  /** Ids of runner containers of this host whose worker is gone (its pid is not alive, or is another process's now). */
  private async leftovers(): Promise<string[]> {
    const out = await this.docker(['ps', '-a', '--filter', `label=${RUNNER_LABEL}`, '--filter', `label=stowage.host=${hostname()}`, '--format', '{{.ID}} {{.Label "stowage.worker-instance"}}']);
    return out
      .split('\n')
      .filter(Boolean)
      .map((line) => line.split(' '))
      .filter(([, instance]) => {
        const [pid, started] = (instance ?? '').split(':');
        return !alive(Number(pid)) || startTimeOf(Number(pid)) !== started;
      })
      .map(([id]) => id!);
  }

  /** Runs the docker CLI; an engine it cannot reach is UNAVAILABLE, naming it. */
  private async docker(args: string[], timeoutMs = 60_000): Promise<string> {
    try {
      return (await exec('docker', args, { env: this.opts.env, timeout: timeoutMs, maxBuffer: 16 << 20 })).stdout;
    } catch (err) {
      const e = err as NodeJS.ErrnoException & { stderr?: string };
      if (e.code === 'ENOENT') throw new FailedPreconditionError('the docker CLI is not installed on this host (--runtime docker runs functions through it: apt-get install docker.io)');
      const text = (e.stderr ?? '').trim() || messageOf(err);
      if (unreachable(text)) throw new UnavailableError(engineHint(text));
      throw new Error(`docker ${args[0]}: ${text}`);
    }
  }
}

const unreachable = (text: string): boolean => /Cannot connect to the Docker daemon|Is the docker daemon running|error during connect/i.test(text);

/** What docker said, with what to do when it could not reach its engine. */
function engineHint(text: string): string {
  const said = text.replace(/\s*Run 'docker \w+ --help' for more information\s*/g, ' ').trim();
  return unreachable(said) ? `the Docker engine is not reachable (${said}); start dockerd on this host, or point DOCKER_HOST at it` : said;
}

/**
 * What a runner in a container needs of this installation: its root, and each node_modules above it (installed
 * as a dependency, its own dependencies may be hoisted there; node looks in every one up to /).
 */
function installationPaths(root: string): string[] {
  const paths = [root];
  for (let dir = dirname(root); ; dir = dirname(dir)) {
    const nm = join(dir, 'node_modules');
    if (existsSync(nm)) paths.push(nm);
    if (dir === dirname(dir)) return paths;
  }
}

/** Paths of the TLS files the runners' environment names. */
function tlsFiles(env: NodeJS.ProcessEnv): string[] {
  return ['STOWAGE_TLS_CA', 'STOWAGE_TLS_CLIENT_CERT', 'STOWAGE_TLS_CLIENT_KEY'].flatMap((k) => (env[k] ? [env[k]!] : []));
}

async function unmountLazily(path: string): Promise<void> {
  await exec('umount', ['-l', path]).catch(() => undefined);
}

/** Removes a directory tree of empty directories, one by one: never recursively, which would go into a bind still there. */
function removeEmptyDirs(dir: string): void {
  if (!existsSync(dir)) return;
  for (const entry of readdirSync(dir)) {
    try {
      rmdirSync(join(dir, entry));
    } catch {
      // still bound (a straggler), or not empty: left
    }
  }
  try {
    rmdirSync(dir);
  } catch {
    // as above
  }
}
