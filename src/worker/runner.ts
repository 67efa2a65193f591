/**
 * A function runner: the child process a worker forks (runners.ts) to run
 * calls, one at a time, reused for the next call until it is idle too long.
 * It imports the function's bundle, finds the export, calls it with the
 * arguments, and answers with the msgpack of the result or the error (name,
 * message, stack). The function finds its volumes through `volumePath()`
 * from the SDK, which reads STOWAGE_VOLUME_PATHS, set here for each call.
 * It exits when its worker goes (the IPC channel closes).
 */
import { Decoder, Encoder } from '@msgpack/msgpack';
import { basename } from 'node:path';
import { pathToFileURL } from 'node:url';
import { endOfOutput } from './output.js';

export interface RunRequest {
  callId: string;
  /** Absolute path of the bundle (an ES module) on this host. */
  bundle: string;
  /** Module name as the caller gave it, for messages. */
  module: string;
  function: string;
  args: Uint8Array;
  /** Mount path the function declared -> where it is mounted on this host. */
  volumes: Record<string, string>;
  /** Written to stdout and stderr once the call is over, before the reply (output.ts). */
  outputMark?: string;
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
  process.env.STOWAGE_VOLUME_PATHS = JSON.stringify(req.volumes);
  let value: unknown;
  try {
    value = await handler(...(args as unknown[]));
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    return { callId, ok: false, error: failure('FUNCTION_ERROR', message, err) };
  }
  try {
    return { callId, ok: true, value: new Encoder().encode(value) };
  } catch (err) {
    return { callId, ok: false, error: failure('INVALID_ARGUMENT', `the result of ${req.function} cannot be encoded with msgpack: ${(err as Error).message}`) };
  }
}

if (process.send) {
  process.on('disconnect', () => process.exit(1));
  process.on('message', (req: RunRequest) => {
    void run(req)
      .then(async (reply) => {
        if (req.outputMark) await endOfOutput(req.outputMark);
        return reply;
      })
      .then((reply) => process.send!(reply));
  });
  process.send({ ready: true });
}
