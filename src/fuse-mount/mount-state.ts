/**
 * The state file of a running mount, and reloading a mount from another
 * process (`stowage volume reload DIR`).
 *
 * - One small JSON file per mount, named after a hash of the mount point's
 *   real path, in the user's runtime directory (STOWAGE_RUNTIME_DIR, else
 *   $XDG_RUNTIME_DIR/stowage, else <tmpdir>/stowage-<uid>). The mount process
 *   writes it once mounted and after every reload, and removes it when it
 *   unmounts (a mount process that was killed leaves its file behind; the
 *   next mount removes the files of processes that are gone). Writes are atomic (temporary file, then rename), so a reader
 *   sees one state or the next.
 * - `reloads` counts the reloads the mount has finished (or failed: then
 *   `lastError` says why); a reloader reads it, sends SIGHUP to `pid`, and
 *   waits for the count to move.
 * - A file is trusted only for a live stowage mount: the mount point must be
 *   listed as a `fuse.stowage` mount and the process must exist.
 * - A writable mount also listens on a unix socket beside its state file
 *   (named in it) for `stowage volume commit DIR`: one request line, one
 *   answer line (JSON), sent when the commit that started after the request
 *   arrived has ended. A socket rather than a signal, so that each committer
 *   gets the answer of a commit that includes what it wrote before asking.
 */
import { createHash } from 'node:crypto';
import { chmod, mkdir, readFile, readdir, realpath, rename, rm, writeFile } from 'node:fs/promises';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { FailedPreconditionError, StowageError, UnavailableError, errorForCode, messageOf, type ErrorCode } from '../common/errors.js';
import { alive } from '../common/processes.js';
import type { CommitResult } from './write/commit.js';

export interface MountState {
  pid: number;
  mountpoint: string;
  volume: string;
  /** The version served now. */
  version: number;
  /** Reloads finished (successfully or not) since the mount started. */
  reloads: number;
  /** Why the last reload failed, when it did. */
  lastError?: string;
  /** A writable mount's staging directory, and the socket it takes commit requests on. */
  staging?: string;
  commitSocket?: string;
}

/** The answer to a commit request. */
type CommitAnswer = { ok: true; result: CommitResult } | { ok: false; code: ErrorCode; error: string };

/** Unix socket paths are limited to 107 bytes. */
const MAX_SOCKET_PATH = 107;

/** How long `reloadMount` waits for the mount to report, by default. */
const RELOAD_WAIT_MS = 10 * 60_000;
const POLL_MS = 50;

export function mountStateDir(): string {
  if (process.env.STOWAGE_RUNTIME_DIR) return process.env.STOWAGE_RUNTIME_DIR;
  if (process.env.XDG_RUNTIME_DIR) return join(process.env.XDG_RUNTIME_DIR, 'stowage');
  return join(tmpdir(), `stowage-${process.getuid?.() ?? 0}`);
}

function stateFile(realMountpoint: string): string {
  return join(mountStateDir(), `mount-${stateKey(realMountpoint)}.json`);
}

function stateKey(realMountpoint: string): string {
  return createHash('sha256').update(realMountpoint).digest('hex').slice(0, 32);
}

/** Records `state` for its mount point (absolute, as mounted). */
export async function writeMountState(state: MountState): Promise<void> {
  const dir = mountStateDir();
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const file = stateFile(state.mountpoint);
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, `${JSON.stringify(state)}\n`, { mode: 0o600 });
  await rename(tmp, file);
}

/** Removes the state files of mount processes that no longer exist (killed ones leave theirs). */
export async function pruneMountStates(): Promise<void> {
  const dir = mountStateDir();
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return;
  }
  for (const name of names.filter((n) => n.startsWith('mount-') && n.endsWith('.json'))) {
    try {
      const state = JSON.parse(await readFile(join(dir, name), 'utf8')) as MountState;
      if (!alive(state.pid)) {
        await rm(join(dir, name), { force: true });
        if (state.commitSocket) await rm(state.commitSocket, { force: true });
      }
    } catch {
      // Being written or removed by its owner right now: leave it.
    }
  }
}

export async function removeMountState(mountpoint: string): Promise<void> {
  await rm(stateFile(mountpoint), { force: true });
}

async function readMountState(mountpoint: string): Promise<MountState | undefined> {
  try {
    return JSON.parse(await readFile(stateFile(mountpoint), 'utf8')) as MountState;
  } catch {
    return undefined;
  }
}

/** Whether /proc/self/mounts lists `mountpoint` as a stowage FUSE mount. */
async function isStowageMount(mountpoint: string): Promise<boolean> {
  const mounts = await readFile('/proc/self/mounts', 'utf8');
  const unescape = (f: string): string => f.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
  return mounts.split('\n').some((line) => {
    const [, dir, type] = line.split(' ');
    return type === 'fuse.stowage' && unescape(dir ?? '') === mountpoint;
  });
}

/**
 * The real mount point of `dir` and the state of the live mount process
 * serving it; FailedPreconditionError when there is none (of this user).
 */
async function runningMount(dir: string): Promise<{ mountpoint: string; state: MountState }> {
  let mountpoint: string;
  try {
    mountpoint = await realpath(resolve(dir));
  } catch (err) {
    throw new FailedPreconditionError(`${dir} is not a stowage mount (${messageOf(err)})`);
  }
  if (!(await isStowageMount(mountpoint))) throw new FailedPreconditionError(`${dir} is not a stowage mount`);
  const state = await readMountState(mountpoint);
  if (!state || !alive(state.pid)) {
    throw new FailedPreconditionError(`no running stowage mount process found for ${dir} (it was mounted by another user, or its process is gone)`);
  }
  return { mountpoint, state };
}

/**
 * Asks the mount process serving `dir` to move to the newest version (SIGHUP)
 * and waits until it has. FailedPreconditionError when `dir` is not a running
 * stowage mount of this user, or when the reload failed.
 */
export async function reloadMount(dir: string, opts: { waitMs?: number } = {}): Promise<{ from: number; to: number; state: MountState }> {
  const { mountpoint, state: before } = await runningMount(dir);
  process.kill(before.pid, 'SIGHUP');
  const deadline = Date.now() + (opts.waitMs ?? RELOAD_WAIT_MS);
  for (;;) {
    await new Promise((r) => setTimeout(r, POLL_MS));
    const now = await readMountState(mountpoint);
    if (!now || now.pid !== before.pid || !alive(before.pid)) throw new FailedPreconditionError(`the mount process of ${dir} went away during the reload`);
    if (now.reloads > before.reloads) {
      if (now.lastError !== undefined) throw new FailedPreconditionError(`reloading ${dir} failed: ${now.lastError}`);
      return { from: before.version, to: now.version, state: now };
    }
    if (Date.now() > deadline) throw new UnavailableError(`the mount process of ${dir} (pid ${before.pid}) did not report a reload in time`);
  }
}

/**
 * Listens for commit requests of the writable mount at `realMountpoint`
 * (`commit` runs one, after any running one). Returns the socket's path and
 * how to stop listening.
 */
export async function serveCommitRequests(
  realMountpoint: string,
  commit: () => Promise<CommitResult>,
): Promise<{ path: string; close(): Promise<void> }> {
  const dir = mountStateDir();
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const path = join(dir, `mount-${stateKey(realMountpoint)}.sock`);
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH) {
    throw new FailedPreconditionError(`the commit socket ${path} is longer than a unix socket path may be (set STOWAGE_RUNTIME_DIR to a shorter directory)`);
  }
  // Left by a mount process of this mount point that was killed (this one is not mounted twice).
  await rm(path, { force: true });
  const server = createServer((sock) => {
    sock.on('error', () => undefined);
    createInterface({ input: sock }).once('line', (line) => {
      let op: unknown;
      try {
        op = (JSON.parse(line) as { op?: unknown }).op;
      } catch {
        op = undefined;
      }
      const answer = (a: CommitAnswer): void => void sock.end(`${JSON.stringify(a)}\n`);
      if (op !== 'commit') return answer({ ok: false, code: 'INVALID_ARGUMENT', error: `unknown request ${line.slice(0, 80)}` });
      commit().then(
        (result) => answer({ ok: true, result }),
        (err: unknown) => answer({ ok: false, code: err instanceof StowageError ? err.code : 'INTERNAL', error: messageOf(err) }),
      );
    });
  });
  await new Promise<void>((done, fail) => {
    server.once('error', fail);
    server.listen(path, () => done());
  });
  await chmod(path, 0o600);
  server.unref();
  return {
    path,
    async close() {
      await new Promise<void>((done) => server.close(() => done()));
      await rm(path, { force: true });
    },
  };
}

/**
 * Asks the writable mount serving `dir` to commit its staged changes and
 * waits for the answer: the commit includes every write made through the
 * mount before this call. FailedPreconditionError when `dir` is not a running
 * writable stowage mount of this user; the commit's own error when it failed.
 */
export async function commitMount(dir: string): Promise<CommitResult> {
  const { state } = await runningMount(dir);
  if (!state.commitSocket) throw new FailedPreconditionError(`${dir} is mounted read-only: there is nothing to commit (mount it with --writable)`);
  const line = await new Promise<string>((done, fail) => {
    const sock = createConnection(state.commitSocket!);
    let answered = false;
    sock.once('error', (err) => fail(new UnavailableError(`cannot reach the mount process of ${dir} (pid ${state.pid}): ${messageOf(err)}`)));
    sock.once('connect', () => sock.write(`${JSON.stringify({ op: 'commit' })}\n`));
    createInterface({ input: sock }).once('line', (l) => {
      answered = true;
      done(l);
    });
    sock.once('close', () => {
      if (!answered) fail(new UnavailableError(`the mount process of ${dir} went away before the commit ended`));
    });
  });
  const answer = JSON.parse(line) as CommitAnswer;
  if (!answer.ok) throw errorForCode(answer.code, answer.error);
  return answer.result;
}

/** The state of the stowage mount at `dir` when there is a live one, for commands that act on it. */
export async function liveMountState(dir: string): Promise<MountState | undefined> {
  try {
    const mountpoint = await realpath(resolve(dir));
    if (!(await isStowageMount(mountpoint))) return undefined;
    const state = await readMountState(mountpoint);
    return state && alive(state.pid) ? state : undefined;
  } catch {
    return undefined;
  }
}
