/**
 * RunnerPool: the worker's function processes (runner.ts), scaled with the
 * calls it is handed and down to zero. A call takes an idle runner, or forks a
 * new one while fewer than `max` exist (the bridge never hands a worker more
 * calls than its slots). A runner left idle for `idleMs` is stopped, so with
 * no work no function process runs. A runner that dies during a call answers
 * `lost` (the bridge retries the call elsewhere); a cancelled call's runner is
 * killed (a handler cannot be interrupted any other way). A runner's stdout
 * and stderr are pipes: a call's output goes to the sink given with it
 * (output.ts), and its reply is given once that output is all read.
 * A runner may be started under a command (`unshare …`: a mount namespace of
 * its own, namespaces.ts) or in a container (docker-runtime.ts); runners of
 * one kind (a key: the container's image and limits) are reused only for
 * calls of that kind, and an idle runner of another kind makes way when the
 * pool is full. Its volume(path).commit()/.reload() requests go to
 * `onVolumeOp`.
 */
import { fork } from 'node:child_process';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { RunnerOutput, newMark, type OutputSink } from './output.js';
import { childChannel, type Channel } from './runner-channel.js';
import { messageOf } from '../common/errors.js';
import type { CallMount, RunReply, RunRequest, VolumeOpReply, VolumeOpRequest } from './runner.js';

/** The runner's script (the worker's own installation's). */
export const RUNNER = fileURLToPath(new URL('./runner.js', import.meta.url));

/** A started runner: a forked process, or one in a container (docker-runtime.ts). */
export interface RunnerProcess {
  readonly pid: number | undefined;
  readonly stdout: Readable;
  readonly stderr: Readable;
  readonly channel: Channel;
  /** Called once when it has ended, with how ("SIGKILL", "code 1"), and what it wrote last when it ended before it was ready. */
  onExit(fn: (how: string, log: string) => void): void;
  readonly exited: boolean;
  /** Ends it at once. */
  kill(): void;
  /** Ends it after an idle time. */
  stop(): void;
  /**
   * Before a call: shows its volumes at their declared paths and its bundle (a container's, from the host:
   * docker-runtime.ts); gives the path the runner imports the bundle from, when not the host's.
   */
  beginCall?(mounts: readonly CallMount[], callId: string, bundle: string): Promise<string | undefined>;
  /** After the call (before its reply is given): undoes beginCall. */
  endCall?(): Promise<void>;
  /** A read-only volume of call `callId` was reloaded: show `source` at its declared path `path` (if that call is still the one bound). */
  rebind?(callId: string, path: string, source: string): Promise<void>;
}

/** Starts a runner for calls of one kind: `key` tells kinds apart (a container's image and limits; '' for a forked process). */
export type StartRunner = (key: string) => RunnerProcess;

/** Runners forked on this host, under `wrap` when given (fork's execPath, and its arguments before node's). */
export function forkRunners(env: NodeJS.ProcessEnv, wrap?: { execPath: string; execArgv: string[] }): StartRunner {
  return () => {
    const child = fork(RUNNER, [], { env, serialization: 'advanced', stdio: ['ignore', 'pipe', 'pipe', 'ipc'], ...wrap });
    return {
      pid: child.pid,
      stdout: child.stdout!,
      stderr: child.stderr!,
      channel: childChannel(child),
      onExit: (fn) => void child.once('exit', (code, signal) => fn(signal ?? `code ${code}`, '')),
      get exited() {
        return child.exitCode !== null || child.signalCode !== null;
      },
      kill: () => void child.kill('SIGKILL'),
      stop: () => void child.kill('SIGTERM'),
    };
  };
}

export interface RunnerPoolOptions {
  /** Starts a runner (default: forkRunners with the pool's env). */
  start?: StartRunner;
  /** Carries out a function's volume(path).commit() or .reload(). */
  onVolumeOp?: (op: VolumeOpRequest['volumeOp']) => Promise<VolumeOpReply['volumeOpReply']>;
}

export type PoolReply = RunReply | { callId: string; lost: true; message: string } | { callId: string; cancelled: true };

interface Runner {
  key: string;
  proc: RunnerProcess;
  output: RunnerOutput;
  ready: Promise<void>;
  busy?: { callId: string; done: (r: PoolReply) => void; cancelled: boolean };
  idleTimer?: NodeJS.Timeout;
}

export class RunnerPool {
  private readonly runners = new Set<Runner>();
  private readonly start: StartRunner;
  private stopped = false;

  constructor(
    private readonly max: number,
    private readonly idleMs: number,
    env: NodeJS.ProcessEnv,
    private readonly opts: RunnerPoolOptions = {},
  ) {
    this.start = opts.start ?? forkRunners(env);
  }

  /** Runners alive now. */
  get size(): number {
    return this.runners.size;
  }

  pids(): number[] {
    return [...this.runners].map((r) => r.proc.pid!).filter(Boolean);
  }

  /** Runs a call in a runner of kind `key`; what the function writes to stdout and stderr goes to `sink`. */
  async run(req: RunRequest, sink: OutputSink, key = ''): Promise<PoolReply> {
    const runner = [...this.runners].find((r) => !r.busy && r.key === key) ?? this.spawn(key);
    clearTimeout(runner.idleTimer);
    const reply = new Promise<PoolReply>((done) => {
      runner.busy = { callId: req.callId, done, cancelled: false };
    });
    try {
      await runner.ready;
    } catch (err) {
      this.finish(runner, { callId: req.callId, lost: true, message: `the runner process could not start: ${(err as Error).message}` });
      return reply;
    }
    let bundle = req.bundle;
    try {
      bundle = (await runner.proc.beginCall?.(req.mounts, req.callId, req.bundle)) ?? req.bundle;
    } catch (err) {
      // Cancelled (its runner killed) meanwhile: the exit answers for it.
      if (runner.busy?.cancelled || !this.runners.has(runner)) return reply;
      this.finish(runner, { callId: req.callId, ok: false, error: { code: 'FAILED_PRECONDITION', message: messageOf(err), name: '', stack: '' } });
      return reply;
    }
    if (runner.busy?.callId !== req.callId || runner.busy.cancelled) return reply; // cancelled, or its runner died, while its volumes were bound
    const outputMark = newMark();
    runner.output.begin(outputMark, sink);
    runner.proc.channel.send({ ...req, bundle, outputMark });
    return reply;
  }

  /** Kills the runner running `callId` (if any); its call answers `cancelled`. */
  cancel(callId: string): void {
    for (const r of this.runners) {
      if (r.busy?.callId === callId) {
        r.busy.cancelled = true;
        // Out of the pool at once: the bridge gives the slot to the next call before this runner's exit is seen.
        this.runners.delete(r);
        r.proc.kill();
      }
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(
      [...this.runners].map(
        (r) =>
          new Promise<void>((res) => {
            if (r.proc.exited) return res();
            r.proc.onExit(() => res());
            r.proc.kill();
          }),
      ),
    );
  }

  private spawn(key: string): Runner {
    if (this.runners.size >= this.max) {
      // Full, but an idle runner of another kind can make way.
      const idle = [...this.runners].find((r) => !r.busy);
      if (!idle) throw new Error(`all ${this.max} runners are busy`);
      this.retire(idle);
    }
    const proc = this.start(key);
    const runner: Runner = {
      key,
      proc,
      // Output while no call runs is the worker's own.
      output: new RunnerOutput(proc.stdout, proc.stderr, (stream, data) => process[stream].write(data)),
      ready: new Promise<void>((resolve, reject) => {
        proc.channel.onMessage(() => resolve());
        proc.onExit((how, log) => reject(new Error(`runner exited with ${how} before it was ready${log ? `; its last output: ${log}` : ''}`)));
      }),
    };
    runner.ready.catch(() => undefined);
    proc.channel.onMessage((m) => {
      const msg = m as RunReply | VolumeOpRequest | { ready: true };
      if ('ready' in msg) return;
      if ('volumeOp' in msg) {
        const { id } = msg.volumeOp;
        const answer = this.opts.onVolumeOp?.(msg.volumeOp) ?? Promise.resolve({ id, ok: false as const, code: 'FAILED_PRECONDITION', message: 'this worker takes no volume requests' });
        void answer
          .then(async (r) => {
            if (!r.ok || !r.source || !proc.rebind) return r;
            try {
              await proc.rebind(msg.volumeOp.callId, msg.volumeOp.path, r.source);
              return r;
            } catch (err) {
              return { id, ok: false as const, code: 'FAILED_PRECONDITION', message: messageOf(err) };
            }
          })
          .then((r) => proc.channel.connected && proc.channel.send({ volumeOpReply: r } satisfies VolumeOpReply));
        return;
      }
      const b = runner.busy;
      if (b?.callId !== msg.callId) return;
      void runner.output.ended().then(() => {
        if (runner.busy === b) this.finish(runner, msg);
      });
    });
    let started = false;
    void runner.ready.then(() => (started = true), () => undefined);
    proc.onExit((how, log) => {
      this.runners.delete(runner);
      clearTimeout(runner.idleTimer);
      const b = runner.busy;
      if (!b) return;
      runner.busy = undefined;
      const message = started
        ? `its runner process exited (${how}) during the call`
        : `the runner process could not start: it exited with ${how} before it was ready${log ? `; its last output: ${log}` : ''}`;
      void runner.output.ended().then(() => b.done(b.cancelled ? { callId: b.callId, cancelled: true } : { callId: b.callId, lost: true, message }));
    });
    this.runners.add(runner);
    return runner;
  }

  private finish(runner: Runner, reply: PoolReply): void {
    const b = runner.busy;
    runner.busy = undefined;
    // The call's volumes leave its paths before its reply is given (the worker then commits or drops them).
    const ended = runner.proc.endCall?.().catch(() => undefined);
    if (ended) void ended.then(() => b?.done(reply));
    else b?.done(reply);
    if (this.stopped) return;
    clearTimeout(runner.idleTimer);
    runner.idleTimer = setTimeout(() => {
      if (!runner.busy) this.retire(runner);
    }, this.idleMs);
  }

  /** Stops an idle runner. Out of the pool before it is told to stop: a call arriving while it exits must start a new runner, not be sent to this one (it would die with the call and the attempt count as lost). */
  private retire(runner: Runner): void {
    clearTimeout(runner.idleTimer);
    this.runners.delete(runner);
    runner.proc.stop();
  }
}
