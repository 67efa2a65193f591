/**
 * A runner's stdout and stderr, told apart by call. The runner's fds 1 and
 * 2 are pipes to the worker (so a subprocess the function starts writes into
 * them too), and a runner runs one call at a time; what it writes belongs to
 * the call it is running.
 *
 * The end of a call's output. The reply of a call comes over the IPC channel,
 * which races the pipes: bytes the function wrote just before it returned may
 * still be in a pipe when the reply arrives. So each RunRequest carries a
 * mark (random, new per call) that the runner writes to both fds after the
 * function returned and before it replies (endOfOutput); the worker takes the
 * call's output up to the mark on each pipe (RunnerOutput.ended). What comes
 * after the mark, or while no call runs (a timer a function left behind),
 * goes to the worker's own stdout and stderr. Marks are written in one write
 * of under PIPE_BUF bytes, so no other writer splits them.
 */
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';

export type OutputStream = 'stdout' | 'stderr';
/** Where a call's output goes, as it is read. */
export type OutputSink = (stream: OutputStream, data: Buffer) => void;

/** How long the worker waits for a mark after the reply (a function that closed its stdout never writes it). */
const MARK_WAIT_MS = 2000;

/** A fresh end-of-output mark: starts with a NUL, which text output does not hold. */
export function newMark(): string {
  return `\0stowage-end-of-call-${randomBytes(12).toString('hex')}\n`;
}

/** In the runner: writes `mark` to stdout and stderr, resolving once both are written (or failed). */
export async function endOfOutput(mark: string): Promise<void> {
  await Promise.all(
    [process.stdout, process.stderr].map(
      (s) =>
        new Promise<void>((resolve) => {
          try {
            s.write(mark, () => resolve());
          } catch {
            resolve();
          }
        }),
    ),
  );
}

/** One pipe, cut at the current call's mark. */
class MarkedPipe {
  /** Bytes that may be the start of the mark, held until the next chunk tells. */
  private held = Buffer.alloc(0);
  mark: Buffer | undefined;
  seen = false;
  onMark: () => void = () => undefined;

  constructor(
    pipe: Readable,
    private readonly emit: (data: Buffer) => void,
  ) {
    pipe.on('data', (chunk: Buffer) => this.push(chunk));
    pipe.on('end', () => {
      if (this.held.length) this.emit(this.held);
      this.held = Buffer.alloc(0);
      this.seen = true;
      this.onMark();
    });
  }

  private push(chunk: Buffer): void {
    let data = this.held.length ? Buffer.concat([this.held, chunk]) : chunk;
    this.held = Buffer.alloc(0);
    const mark = this.mark;
    if (!mark) {
      this.emit(data);
      return;
    }
    const at = data.indexOf(mark);
    if (at >= 0) {
      if (at > 0) this.emit(data.subarray(0, at));
      this.mark = undefined;
      this.seen = true;
      this.onMark(); // switches the sink: what follows is not the call's
      const rest = data.subarray(at + mark.length);
      if (rest.length) this.push(rest);
      return;
    }
    // Hold the longest tail that could begin the mark (a NUL and what follows); text passes at once.
    const from = data.lastIndexOf(mark[0]!, -1);
    if (from >= 0 && data.length - from < mark.length && mark.subarray(0, data.length - from).equals(data.subarray(from))) {
      this.held = Buffer.from(data.subarray(from));
      data = data.subarray(0, from);
    }
    if (data.length) this.emit(data);
  }
}

/**
 * The output of one runner process: to the sink of the call it runs, else to
 * `idle` (the worker's own stdout and stderr).
 */
export class RunnerOutput {
  private sink: OutputSink | undefined;
  private readonly pipes: Record<OutputStream, MarkedPipe>;
  /** Who waits for the end of the current call's output (its reply, and its runner's exit). */
  private waiters: (() => void)[] = [];

  constructor(
    stdout: Readable,
    stderr: Readable,
    private readonly idle: OutputSink,
  ) {
    // A pipe past its mark writes to `idle`, while the other may still carry the call's last bytes.
    const to = (stream: OutputStream) => (data: Buffer) => (this.sink && !this.pipes[stream].seen ? this.sink : this.idle)(stream, data);
    this.pipes = { stdout: new MarkedPipe(stdout, to('stdout')), stderr: new MarkedPipe(stderr, to('stderr')) };
    for (const p of Object.values(this.pipes)) p.onMark = () => this.checkEnded();
  }

  /** A call starts: its output goes to `sink` until both pipes carried `mark`. */
  begin(mark: string, sink: OutputSink): void {
    this.sink = sink;
    for (const p of Object.values(this.pipes)) {
      p.mark = Buffer.from(mark);
      p.seen = false;
    }
  }

  /**
   * Resolves once the call's output is all read (both marks seen, the pipes
   * ended, or MARK_WAIT_MS passed); from then on output goes to `idle`.
   */
  ended(): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => this.stop(), MARK_WAIT_MS);
      this.waiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
      this.checkEnded();
    });
  }

  private checkEnded(): void {
    if (this.pipes.stdout.seen && this.pipes.stderr.seen) this.stop();
  }

  private stop(): void {
    this.sink = undefined;
    for (const p of Object.values(this.pipes)) p.mark = undefined;
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
}
