/**
 * A function runner: the child process a worker forks (runners.ts) to run
 * calls, one at a time, reused for the next call until it is idle too long.
 * It imports the function's bundle, finds the export, calls it with the
 * arguments, and answers with the msgpack of the result or the error (name,
 * message, stack). Volumes: in a runner with a mount namespace of its own
 * (`bind`), each is bound at its declared path for the call (runner-binds.ts);
 * either way STOWAGE_VOLUME_PATHS, set here for each call, tells the SDK's
 * `volumePath()` where they are. `volume(path).commit()`/`.reload()` inside
 * the function are asked of the worker over the IPC channel (VolumeOps). A
 * handler's EROFS under a read-only volume gets the volume's name and how to
 * make it writable. It talks with its worker over Node's IPC channel, or (in
 * a container: docker-runtime.ts) over the Unix socket STOWAGE_RUNNER_SOCKET
 * names (runner-channel.ts), and exits when its worker goes (the channel
 * closes).
 */
import { Decoder, Encoder } from '@msgpack/msgpack';
import { createConnection, type Socket } from 'node:net';
import { basename, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { VOLUME_OPS, type VolumeOps } from '../client/function-volumes.js';
import { errorForCode, isErrorCode, messageOf } from '../common/errors.js';
import { RunnerBinds, type CallMount } from './runner-binds.js';

export type { CallMount };
import { endOfOutput } from './output.js';
import { parentChannel, socketChannel, type Channel } from './runner-channel.js';

export interface RunRequest {
  callId: string;
  /** Absolute path of the bundle (an ES module) on this host. */
  bundle: string;
  /** Module name as the caller gave it, for messages. */
  module: string;
  function: string;
  args: Uint8Array;
  /** The call's volumes: declared path, volume, where the worker mounted it. */
  mounts: CallMount[];
  /** Bind them at their declared paths (this runner has a mount namespace of its own). */
  bind: boolean;
  /** They are at their declared paths already: its worker bound them (this runner is in a container, docker-runtime.ts). */
  bound?: boolean;
  /** Written to stdout and stderr once the call is over, before the reply (output.ts). */
  outputMark?: string;
}

/** A function's volume(path).commit() or .reload(), asked of the worker. */
export interface VolumeOpRequest {
  volumeOp: { id: number; callId: string; action: 'commit' | 'reload'; path: string };
}

/** The worker's answer: the version the function sees now, and (a read-only volume reloaded) the mount that shows it. */
export interface VolumeOpReply {
  volumeOpReply: { id: number; ok: true; version: number; source?: string } | { id: number; ok: false; code: string; message: string };
}

export interface RunError {
  code: string;
  message: string;
  name: string;
  stack: string;
}

export type RunReply = { callId: string; ok: true; value: Uint8Array } | { callId: string; ok: false; error: RunError };

/** How app.function marks its handles (a Symbol.for, so that two copies of the SDK agree). */
export const FUNCTION_BRAND = Symbol.for('stowage.function');

interface Handle {
  handler: (...args: unknown[]) => unknown;
}

const isHandle = (v: unknown): v is Handle =>
  typeof v === 'object' && v !== null && (v as Record<symbol, unknown>)[FUNCTION_BRAND] === true;

function failure(code: string, message: string, err?: unknown): RunError {
  const e = err instanceof Error ? err : undefined;
  return { code, message, name: e?.name ?? '', stack: e?.stack ?? '' };
}

async function run(req: RunRequest): Promise<RunReply> {
  const { callId } = req;
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(req.bundle).href)) as Record<string, unknown>;
  } catch (err) {
    return { callId, ok: false, error: failure('FUNCTION_ERROR', `module ${req.module} failed to load: ${(err as Error)?.message ?? String(err)}`, err) };
  }
  const target = mod[req.function];
  const handler = typeof target === 'function' ? (target as Handle['handler']) : isHandle(target) ? target.handler : undefined;
  if (!handler) {
    const names = Object.keys(mod).filter((k) => typeof mod[k] === 'function' || isHandle(mod[k]));
    return {
      callId,
      ok: false,
      error: failure('NOT_FOUND', `function "${req.function}" not found in module ${basename(req.module)} (exported functions: ${names.join(', ') || 'none'})`),
    };
  }
  let args: unknown;
  try {
    args = new Decoder().decode(req.args);
  } catch (err) {
    return { callId, ok: false, error: failure('INVALID_ARGUMENT', `the call's arguments are not msgpack: ${(err as Error).message}`) };
  }
  if (!Array.isArray(args)) return { callId, ok: false, error: failure('INVALID_ARGUMENT', 'the call\'s arguments must be a msgpack array') };
  try {
    if (req.bind) await binds.bind(req.mounts, [dirname(req.bundle), PACKAGE_ROOT]);
  } catch (err) {
    await binds.unbindAll();
    return { callId, ok: false, error: failure('FAILED_PRECONDITION', messageOf(err)) };
  }
  current = req;
  process.env.STOWAGE_VOLUME_PATHS = JSON.stringify(Object.fromEntries(req.mounts.map((m) => [m.path, req.bind || req.bound ? m.path : m.source])));
  let value: unknown;
  try {
    value = await handler(...(args as unknown[]));
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    return { callId, ok: false, error: failure('FUNCTION_ERROR', readOnlyHint(message, err, req), err) };
  } finally {
    current = undefined;
    if (req.bind) await binds.unbindAll();
  }
  try {
    return { callId, ok: true, value: new Encoder().encode(value) };
  } catch (err) {
    return { callId, ok: false, error: failure('INVALID_ARGUMENT', `the result of ${req.function} cannot be encoded with msgpack: ${(err as Error).message}`) };
  }
}

/** For an EROFS under a read-only volume of the call: the message, naming the volume and how to write to it. */
function readOnlyHint(message: string, err: unknown, req: RunRequest): string {
  const e = err as NodeJS.ErrnoException;
  if (e?.code !== 'EROFS' || typeof e.path !== 'string') return message;
  const under = (p: string, dir: string): boolean => p === dir || p.startsWith(`${dir}/`);
  const m = req.mounts.find((x) => !x.writable && (under(e.path!, x.path) || under(e.path!, x.source)));
  if (!m) return message;
  return `${message}: volume ${m.volume} is mounted read-only at ${m.path}; to write to it declare it writable: volumes: { '${m.path}': { name: '${m.volume}', writable: true } }`;
}

const PACKAGE_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const binds = new RunnerBinds();
/** The call running now. */
let current: RunRequest | undefined;
let nextOp = 1;
const pendingOps = new Map<number, { resolve: (version: number) => void; reject: (err: Error) => void; mount: CallMount; req: RunRequest }>();

const volumeOps: VolumeOps = {
  request(action, path) {
    const req = current;
    const mount = req?.mounts.find((m) => m.path === path);
    if (!req || !mount) return Promise.reject(errorForCode('FAILED_PRECONDITION', `volume(${JSON.stringify(path)}).${action}() works only while a call that declared ${path} runs`));
    const id = nextOp++;
    return new Promise<number>((resolve, reject) => {
      pendingOps.set(id, { resolve, reject, mount, req });
      channel!.send({ volumeOp: { id, callId: req.callId, action, path } } satisfies VolumeOpRequest);
    });
  },
};

/** The worker answered a volume op: a reloaded read-only volume moves to the mount of its new version. */
async function onVolumeOpReply({ volumeOpReply: r }: VolumeOpReply): Promise<void> {
  const op = pendingOps.get(r.id);
  if (!op) return;
  pendingOps.delete(r.id);
  if (!r.ok) return op.reject(errorForCode(isErrorCode(r.code) ? r.code : 'INTERNAL', r.message));
  try {
    if (r.source && r.source !== op.mount.source && current === op.req) {
      if (op.req.bind) await binds.rebind(op.mount, r.source);
      op.mount.source = r.source;
      if (!op.req.bind && !op.req.bound) process.env.STOWAGE_VOLUME_PATHS = JSON.stringify(Object.fromEntries(op.req.mounts.map((m) => [m.path, m.source])));
    }
    op.resolve(r.version);
  } catch (err) {
    op.reject(err instanceof Error ? err : new Error(String(err)));
  }
}

/** To the worker: its IPC channel when it forked this runner; the socket it names when this runner is in a container. */
const socketPath = process.env.STOWAGE_RUNNER_SOCKET;
const channel: Channel | undefined = socketPath ? socketChannel(connectTo(socketPath)) : process.send ? parentChannel() : undefined;

/** The worker's socket; a failure to reach it is said on stderr (the worker attaches it to the error of the call that started this runner). */
function connectTo(path: string): Socket {
  const socket = createConnection(path);
  socket.once('error', (err) => console.error(`stowage runner: cannot reach the worker at ${path}: ${err.message}`));
  return socket;
}

if (channel) {
  (globalThis as Record<symbol, unknown>)[VOLUME_OPS] = volumeOps;
  channel.onClose(() => process.exit(1));
  channel.onMessage((m) => {
    const msg = m as RunRequest | VolumeOpReply;
    if ('volumeOpReply' in msg) return void onVolumeOpReply(msg);
    void run(msg)
      .then(async (reply) => {
        if (msg.outputMark) await endOfOutput(msg.outputMark);
        return reply;
      })
      .then((reply) => channel.send(reply));
  });
  channel.send({ ready: true });
}
