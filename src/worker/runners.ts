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
 * its own, namespaces.ts), and its volume(path).commit()/.reload() requests
 * go to `onVolumeOp`.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { RunnerOutput, newMark, type OutputSink } from './output.js';
import type { RunReply, RunRequest, VolumeOpReply, VolumeOpRequest } from './runner.js';

const RUNNER = fileURLToPath(new URL('./runner.js', import.meta.url));

export interface RunnerPoolOptions {
  /** Start each runner under this command (fork's execPath, and its arguments before node's). */
  wrap?: { execPath: string; execArgv: string[] };
  /** Carries out a function's volume(path).commit() or .reload(). */
  onVolumeOp?: (op: VolumeOpRequest['volumeOp']) => Promise<VolumeOpReply['volumeOpReply']>;
}

export type PoolReply = RunReply | { callId: string; lost: true; message: string } | { callId: string; cancelled: true };

interface Runner {
  child: ChildProcess;
  output: RunnerOutput;
  ready: Promise<void>;
  busy?: { callId: string; done: (r: PoolReply) => void; cancelled: boolean };
  idleTimer?: NodeJS.Timeout;
}

export class RunnerPool {
  private readonly runners = new Set<Runner>();
  private stopped = false;

  constructor(
    private readonly max: number,
    private readonly idleMs: number,
    private readonly env: NodeJS.ProcessEnv,
    private readonly opts: RunnerPoolOptions = {},
  ) {}

  /** Runner processes alive now. */
  get size(): number {
    return this.runners.size;
  }

  pids(): number[] {
    return [...this.runners].map((r) => r.child.pid!).filter(Boolean);
  }

  /** Runs a call; what the function writes to stdout and stderr goes to `sink`. */
  async run(req: RunRequest, sink: OutputSink): Promise<PoolReply> {
    const runner = [...this.runners].find((r) => !r.busy) ?? this.spawn();
    clearTimeout(runner.idleTimer);
    const reply = new Promise<PoolReply>((done) => {
      runner.busy = { callId: req.callId, done, cancelled: false };
    });
    try {
      await runner.ready;
      const outputMark = newMark();
      runner.output.begin(outputMark, sink);
      runner.child.send({ ...req, outputMark });
    } catch (err) {
      this.finish(runner, { callId: req.callId, lost: true, message: `the runner process could not start: ${(err as Error).message}` });
    }
    return reply;
  }

  /** Kills the runner running `callId` (if any); its call answers `cancelled`. */
  cancel(callId: string): void {
    for (const r of this.runners) {
      if (r.busy?.callId === callId) {
        r.busy.cancelled = true;
        // Out of the pool at once: the bridge gives the slot to the next call before this runner's exit is seen.
        this.runners.delete(r);
        r.child.kill('SIGKILL');
      }
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(
      [...this.runners].map(
        (r) =>
          new Promise<void>((res) => {
            if (r.child.exitCode !== null || r.child.signalCode !== null) return res();
            r.child.once('exit', () => res());
            r.child.kill('SIGKILL');
          }),
      ),
    );
  }

  private spawn(): Runner {
    if (this.runners.size >= this.max) throw new Error(`all ${this.max} runners are busy`);
    const child = fork(RUNNER, [], { env: this.env, serialization: 'advanced', stdio: ['ignore', 'pipe', 'pipe', 'ipc'], ...this.opts.wrap });
    const runner: Runner = {
      child,
      // Output while no call runs is the worker's own.
      output: new RunnerOutput(child.stdout!, child.stderr!, (stream, data) => process[stream].write(data)),
      ready: new Promise<void>((resolve, reject) => {
        child.once('message', () => resolve());
        child.once('exit', (code, signal) => reject(new Error(`runner exited with ${signal ?? code} before it was ready`)));
      }),
    };
    runner.ready.catch(() => undefined);
    child.on('message', (msg: RunReply | VolumeOpRequest | { ready: true }) => {
      if ('ready' in msg) return;
      if ('volumeOp' in msg) {
        const { id } = msg.volumeOp;
        const answer = this.opts.onVolumeOp?.(msg.volumeOp) ?? Promise.resolve({ id, ok: false as const, code: 'FAILED_PRECONDITION', message: 'this worker takes no volume requests' });
        void answer.then((r) => child.connected && child.send({ volumeOpReply: r } satisfies VolumeOpReply));
        return;
      }
      const b = runner.busy;
      if (b?.callId !== msg.callId) return;
      void runner.output.ended().then(() => {
        if (runner.busy === b) this.finish(runner, msg);
      });
    });
    child.on('exit', (code, signal) => {
      this.runners.delete(runner);
      clearTimeout(runner.idleTimer);
      const b = runner.busy;
      if (!b) return;
      runner.busy = undefined;
      void runner.output.ended().then(() => b.done(b.cancelled ? { callId: b.callId, cancelled: true } : { callId: b.callId, lost: true, message: `its runner process exited (${signal ?? `code ${code}`}) during the call` }));
    });
    this.runners.add(runner);
    return runner;
  }

  private finish(runner: Runner, reply: PoolReply): void {
    const b = runner.busy;
    runner.busy = undefined;
    b?.done(reply);
    if (this.stopped) return;
    clearTimeout(runner.idleTimer);
    runner.idleTimer = setTimeout(() => {
      if (runner.busy) return;
      // Out of the pool before it is told to stop: a call arriving while it exits must fork a new runner, not
      // be sent to this one (it would die with the call and the attempt count as lost).
      this.runners.delete(runner);
      runner.child.kill('SIGTERM');
    }, this.idleMs);
  }
}
