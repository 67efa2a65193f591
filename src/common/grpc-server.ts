/**
 * The server half of every gRPC service: the token check, and wrappers that
 * turn an async handler into a grpc-js one with errors encoded by
 * grpc-errors.ts. `session` serves a bidirectional stream of batches, each
 * answered on its own (out of order) so one slow batch never holds up others.
 */
import type {
  handleBidiStreamingCall,
  handleClientStreamingCall,
  handleServerStreamingCall,
  handleUnaryCall,
  sendUnaryData,
  ServerDuplexStream,
  ServerUnaryCall,
  ServerReadableStream,
  ServerWritableStream,
} from '@grpc/grpc-js';
import { setMaxListeners } from 'node:events';
import { bearerMatches } from './auth.js';
import { UnauthenticatedError } from './errors.js';
import { toGrpcError } from './grpc-errors.js';
import type { Logger } from './logger.js';

type AnyCall = { metadata: { get(key: string): unknown[] } };

export function authCheck(token: string) {
  return (call: AnyCall): void => {
    const header = call.metadata.get('authorization')[0];
    if (!bearerMatches(typeof header === 'string' ? header : undefined, token)) {
      throw new UnauthenticatedError(
        'missing or wrong token: set STOWAGE_TOKEN to the contents of the server\'s <data-dir>/token',
      );
    }
  };
}

export function unary<Req, Res>(
  check: (call: AnyCall) => void,
  log: Logger,
  fn: (req: Req, call: ServerUnaryCall<Req, Res>) => Promise<Res> | Res,
): handleUnaryCall<Req, Res> {
  return (call: ServerUnaryCall<Req, Res>, cb: sendUnaryData<Res>) => {
    (async () => {
      check(call);
      return fn(call.request, call);
    })().then(
      (res) => cb(null, res),
      (err: unknown) => {
        logFailure(log, call.getPath(), err);
        cb(toGrpcError(err));
      },
    );
  };
}

export function serverStream<Req, Res>(
  check: (call: AnyCall) => void,
  log: Logger,
  fn: (req: Req, write: (msg: Res) => Promise<void>) => Promise<void>,
): handleServerStreamingCall<Req, Res> {
  return (call: ServerWritableStream<Req, Res>) => {
    const write = (msg: Res) =>
      new Promise<void>((resolve) => {
        if (call.write(msg)) resolve();
        else call.once('drain', resolve);
      });
    (async () => {
      check(call);
      await fn(call.request, write);
    })().then(
      () => call.end(),
      (err: unknown) => {
        logFailure(log, call.getPath(), err);
        call.emit('error', toGrpcError(err));
      },
    );
  };
}

export function clientStream<Req, Res>(
  check: (call: AnyCall) => void,
  log: Logger,
  fn: (messages: AsyncIterable<Req>) => Promise<Res>,
): handleClientStreamingCall<Req, Res> {
  return (call: ServerReadableStream<Req, Res>, cb: sendUnaryData<Res>) => {
    (async () => {
      check(call);
      return fn(call as AsyncIterable<Req>);
    })().then(
      (res) => cb(null, res),
      (err: unknown) => {
        logFailure(log, call.getPath(), err);
        cb(toGrpcError(err));
      },
    );
  };
}

/** True when the caller connected from this host (loopback). */
export function fromSameHost(call: { getPeer(): string }): boolean {
  const peer = call.getPeer();
  return peer.startsWith('127.') || peer.startsWith('::1') || peer.startsWith('[::1]') || peer.startsWith('::ffff:127.');
}

function logFailure(log: Logger, method: string, err: unknown): void {
  const { code, details } = toGrpcError(err);
  // Caller mistakes are the caller's to read; server faults (a full disk among them) are ours.
  if (code === 8 || code === 13 || code === 14 || code === 15) log.warn({ method, code }, details);
  else log.debug({ method, code }, details);
}


/** Batches a session handles at once before it stops reading from the client. */
const SESSION_IN_FLIGHT = 256;

/**
 * A bidirectional stream of batches. Each request is handled as it arrives and
 * its response written when ready (a handler may also answer in parts through
 * `sendEarly`, and then resolve to the last part or to undefined); `signal` aborts when the client goes away
 * so that blocked operations stop waiting. The stream ends after the client
 * half-closes and every batch is answered.
 */
export function session<Req, Res>(
  check: (call: AnyCall) => void,
  log: Logger,
  fn: (req: Req, signal: AbortSignal, sendEarly: (res: Res) => void) => Promise<Res | undefined>,
): handleBidiStreamingCall<Req, Res> {
  return (call: ServerDuplexStream<Req, Res>) => {
    try {
      check(call);
    } catch (err) {
      call.emit('error', toGrpcError(err));
      return;
    }
    const aborter = new AbortController();
    // Every blocked op of the session listens for the abort.
    setMaxListeners(0, aborter.signal);
    let inFlight = 0;
    let ended = false;
    let failed = false;
    const finishIfDone = () => {
      if (ended && inFlight === 0 && !failed) call.end();
    };
    call.on('data', (req: Req) => {
      inFlight++;
      if (inFlight >= SESSION_IN_FLIGHT) call.pause();
      const send = (res: Res) => {
        if (!aborter.signal.aborted && !failed) call.write(res);
      };
      fn(req, aborter.signal, send).then(
        (res) => {
          if (res !== undefined) send(res);
        },
        (err: unknown) => {
          // Handlers report per-operation errors in their response; a throw
          // here is a fault of the whole session.
          logFailure(log, call.getPath(), err);
          if (!failed && !aborter.signal.aborted) {
            failed = true;
            call.emit('error', toGrpcError(err));
          }
        },
      ).finally(() => {
        inFlight--;
        if (inFlight === SESSION_IN_FLIGHT - 1) call.resume();
        finishIfDone();
      });
    });
    call.on('end', () => {
      ended = true;
      finishIfDone();
    });
    call.on('cancelled', () => aborter.abort());
    call.on('close', () => aborter.abort());
    call.on('error', () => aborter.abort());
  };
}
