/**
 * The server half of every gRPC service: the checks every call passes before
 * its handler sees a message, and wrappers that turn an async handler into a
 * grpc-js one with errors encoded by grpc-errors.ts. `session` serves a
 * bidirectional stream of batches, each answered on its own (out of order) so
 * one slow batch never holds up others.
 *
 * Order of checks on a call (callGuard, a grpc-js server interceptor):
 * 1. the bearer token, from the call's metadata, before any message is read:
 *    grpc-js keeps the HTTP/2 stream paused until the handler asks for a
 *    message, and a call refused here never reaches its handler, so its body
 *    is never buffered (what arrives after the status is dropped unread).
 *    The token is the admin token or a scoped one (tokens.ts); a method with
 *    no entry in the server's scope table is refused to scoped tokens;
 * 2. the size of each message, from its 5-byte length prefix, before it is
 *    read: grpc-js's server-wide limit (MAX_REQUEST_BYTES), RESOURCE_EXHAUSTED;
 * 3. the method's own, smaller limit (withRequestLimits), once the message is
 *    read but before it is decoded: INVALID_ARGUMENT, since no valid request
 *    of that method is that large;
 * 4. the scopes (scopes.ts): every decoded request message, each message of a
 *    client or bidirectional stream included, before the handler sees it; a
 *    message that needs a scope the token lacks ends the call with
 *    PERMISSION_DENIED naming the scope, except in a batch of dict or queue
 *    ops (Batch, and each batch of a Session), where each op outside the
 *    scope fails alone: the handler gets the batch without it, and its answer
 *    gets the op's error back at its place (scopes.ts BatchScope); a batch of
 *    refused ops only never reaches the handler (RefusedBatch, answered by
 *    `unary` and `session` below). The session goes on either way.
 *    The handlers never see a request outside the caller's scopes, and the
 *    responses of list methods are filtered here to what the token may read.
 * The handlers check the token again (authCheck): a service mounted on a
 * server without callGuard still refuses strangers (scopes are callGuard's alone). The one exception is the
 * grpc.health.v1 health service, which answers without a token (probes carry
 * none, and it tells nothing but whether each service is serving).
 */
import {
  ServerInterceptingCall,
  status,
  type handleBidiStreamingCall,
  type handleClientStreamingCall,
  type handleServerStreamingCall,
  type handleUnaryCall,
  type Metadata,
  type sendUnaryData,
  type ServerDuplexStream,
  type ServerInterceptor,
  type ServerUnaryCall,
  type ServerReadableStream,
  type ServerWritableStream,
  type ServiceDefinition,
} from '@grpc/grpc-js';
import { setMaxListeners } from 'node:events';
import { InvalidArgumentError, PermissionDeniedError } from './errors.js';
import { toGrpcError, toOpError } from './grpc-errors.js';
import type { Logger } from './logger.js';
import { canRead, describeNeed, firstUnmet, type MethodScope, type OpFailure, type Principal } from './scopes.js';
import { adminOnly, tokenLabel, type Authenticator } from './tokens.js';

type AnyCall = { metadata: { get(key: string): unknown[] } };

function authorization(metadata: AnyCall['metadata']): string | undefined {
  const header = metadata.get('authorization')[0];
  return typeof header === 'string' ? header : undefined;
}

/** The handlers' own check: a token the server knows (the admin token alone when given a string). */
export function authCheck(auth: Authenticator | string) {
  const a = typeof auth === 'string' ? adminOnly(auth) : auth;
  return (call: AnyCall): void => {
    a.authenticate(authorization(call.metadata));
  };
}

/** The scope table callGuard checks: one entry per method path (`/stowage.v1.VolumeService/GetFile`). */
export type MethodScopes = ReadonlyMap<string, MethodScope<never, unknown>>;

/** What the deserializer hands on instead of a request over its method's limit; callGuard turns it into INVALID_ARGUMENT. */
class OversizedRequest {
  constructor(
    readonly bytes: number,
    readonly limit: number,
  ) {}
}

/**
 * `service` with a bound on the encoded size of each method's requests
 * (`limits`, bytes; methods not named keep the server-wide bound). A request
 * over it is not decoded: callGuard fails the call with INVALID_ARGUMENT.
 */
export function withRequestLimits<S extends ServiceDefinition>(service: S, limits: Partial<Record<keyof S, number>>): S {
  const out: S = { ...service };
  for (const name of Object.keys(limits) as (keyof S)[]) {
    const limit = limits[name];
    const method = service[name];
    if (limit === undefined) continue;
    const decode = method.requestDeserialize;
    out[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer): unknown => (bytes.length > limit ? new OversizedRequest(bytes.length, limit) : decode(bytes)),
    };
  }
  return out;
}

/** What callGuard passes on instead of a batch outside the caller's scopes: its answer, every op failed. */
class RefusedBatch {
  constructor(readonly answer: unknown) {}
}

/** Methods of the standard gRPC health service, which callGuard lets through without a token. */
export const HEALTH_PATH_PREFIX = '/grpc.health.v1.Health/';

/** The server interceptor every call goes through (the order of its checks: see the head of this file). */
export function callGuard(auth: Authenticator | string, scopes: MethodScopes, log: Logger): ServerInterceptor {
  const authn = typeof auth === 'string' ? adminOnly(auth) : auth;
  return (method, call) => {
    // Health checks (grpc.health.v1) come from Kubernetes probes and load
    // balancers, which carry no token; they tell only whether each service
    // is serving, and nothing else goes through this exemption.
    const open = method.path.startsWith(HEALTH_PATH_PREFIX);
    const rule = scopes.get(method.path);
    let principal: Principal | undefined;
    let header: string | undefined;
    let refused = false;
    /** Batches passed on without some of their ops, by batch id: what their answers must be given back. */
    const plans = new Map<number, { kept: number[]; refused: Map<number, OpFailure>; first: boolean; left: number }>();
    const refuse = (err: Error) => {
      refused = true;
      // Refusals name the token by its id (never its secret); an unknown token's message names the id it claimed.
      const { code, details } = toGrpcError(err);
      log.info({ method: method.path, code, token: principal?.id }, details);
      call.sendStatus(toGrpcError(err));
    };
    const denied = (what: string) =>
      new PermissionDeniedError(`this token (${principal ? tokenLabel(principal.id) : '?'}) lacks ${what} for ${method.path}`);
    return new ServerInterceptingCall(call, {
      start(next) {
        next({
          onReceiveMetadata(metadata: Metadata, pass) {
            if (!open) {
              try {
                header = authorization(metadata);
                principal = authn.authenticate(header);
              } catch (err) {
                // Not passing the metadata on: the handler never starts, nothing of the body is read.
                refuse(err as Error);
                return;
              }
              if (!principal.admin && !rule) {
                refuse(denied('the admin token (the method has no scope)'));
                return;
              }
            }
            pass(metadata);
          },
          onReceiveMessage(message: unknown, pass) {
            if (refused) return;
            if (message instanceof OversizedRequest) {
              refuse(
                new InvalidArgumentError(
                  `${method.path} request of ${message.bytes} bytes is over the limit of ${message.limit} bytes for this method (no valid request is that large: check the names, paths and keys it carries)`,
                ),
              );
              return;
            }
            if (principal && !principal.admin && rule) {
              // Again on every message: a stream opened before its token was revoked (or expired) stops at its next message.
              try {
                principal = authn.authenticate(header);
              } catch (err) {
                refuse(err as Error);
                return;
              }
              if (rule.batch) {
                const b = rule.batch;
                const req = message as never;
                const kept: number[] = [];
                const failed = new Map<number, OpFailure>();
                b.opNeeds(req).forEach((need, i) => {
                  if (firstUnmet(principal!, [need])) failed.set(i, toOpError(denied(describeNeed(need))));
                  else kept.push(i);
                });
                if (failed.size === 0) pass(message);
                else {
                  const first = failed.values().next().value!;
                  log.info({ method: method.path, code: status.PERMISSION_DENIED, token: principal.id, ops: failed.size }, first.message);
                  if (kept.length === 0) pass(new RefusedBatch(b.refuseAll(req, [...failed.values()])));
                  else {
                    plans.set(b.id(req), { kept, refused: failed, first: true, left: kept.length });
                    pass(b.keep(req, kept));
                  }
                }
                return;
              }
              const unmet = firstUnmet(principal, rule.needs(message as never));
              if (unmet) {
                refuse(denied(describeNeed(unmet)));
                return;
              }
            }
            pass(message);
          },
        });
      },
      sendMessage(message: unknown, next) {
        const plan = rule?.batch && plans.size ? plans.get(rule.batch.id(message as never)) : undefined;
        if (plan && rule?.batch) {
          const b = rule.batch;
          const merged = b.merge(message as never, plan.kept, plan.refused, plan.first);
          plan.first = false;
          plan.left -= b.answered(message as never, plan.kept);
          if (plan.left <= 0) plans.delete(b.id(message as never));
          next(merged);
          return;
        }
        const p = principal;
        if (p && !p.admin && rule?.filter) next(rule.filter(message as never, (service, name) => canRead(p, service, name)));
        else next(message);
      },
    });
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
      if (call.request instanceof RefusedBatch) return call.request.answer as Res;
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
      (req instanceof RefusedBatch ? Promise.resolve(req.answer as Res) : fn(req, aborter.signal, send)).then(
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
