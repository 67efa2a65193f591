/**
 * Forwarding BridgeService calls to the server that runs the active bridge
 * (a generic gRPC proxy over the generated service definition: any method
 * shape, unary to bidirectional). The caller's checks (token, scopes, sizes)
 * have run on this server already (callGuard); the leader runs them again on
 * the same metadata, which is passed on whole (the bearer token with it) but
 * for the transport's own headers, plus FORWARDED_BY so that a forwarded
 * call is never forwarded a second time.
 *
 * Each method's messages are decoded here (callGuard needs them) and encoded
 * again with the definition's serializers; responses, status codes, details
 * and trailers (stowage-code among them) come back as the leader sent them.
 * Flow control is end to end: a side that cannot take more pauses the other.
 * Cancellation goes both ways: a caller that goes away cancels the upstream
 * call, and an Upstream that is closed (the leader changed, or this server
 * won the lease) ends every call it carries with UNAVAILABLE, so workers
 * reconnect and callers retry, this time to the new leader.
 */
import {
  Client,
  Metadata,
  status,
  type CallOptions,
  type ChannelCredentials,
  type ClientDuplexStream,
  type ClientReadableStream,
  type ClientUnaryCall,
  type ClientWritableStream,
  type MethodDefinition,
  type sendUnaryData,
  type ServerDuplexStream,
  type ServerReadableStream,
  type ServerUnaryCall,
  type ServerWritableStream,
  type ServiceDefinition,
  type StatusObject,
  type UntypedHandleCall,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import { MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES } from '../common/message-limits.js';

/** Metadata key naming the server that forwarded a call. */
export const FORWARDED_BY = 'stowage-forwarded-by';
/** Headers of the transport, which the upstream call makes its own. */
const HOP_HEADERS = ['user-agent', 'host', 'te', 'content-type', 'grpc-timeout', 'grpc-encoding', 'grpc-accept-encoding', 'accept-encoding'];
const KEEPALIVE_MS = 30_000;
const KEEPALIVE_TIMEOUT_MS = 20_000;

type Untyped = MethodDefinition<unknown, unknown>;
type ServerCall = ServerUnaryCall<unknown, unknown> | ServerReadableStream<unknown, unknown> | ServerWritableStream<unknown, unknown> | ServerDuplexStream<unknown, unknown>;
type UpstreamCall = ClientUnaryCall | ClientReadableStream<unknown> | ClientWritableStream<unknown> | ClientDuplexStream<unknown, unknown>;

/** A channel to one leader, and the calls it carries. */
export class Upstream {
  private readonly client: Client;
  private readonly open = new Set<(why: string) => void>();
  private closedWhy: string | undefined;

  constructor(
    /** host:port of the leader. */
    readonly address: string,
    /** For messages: who the leader is. */
    readonly label: string,
    credentials: ChannelCredentials,
  ) {
    this.client = new Client(address, credentials, {
      'grpc.max_send_message_length': MAX_REQUEST_BYTES,
      'grpc.max_receive_message_length': MAX_RESPONSE_BYTES,
      'grpc.keepalive_time_ms': KEEPALIVE_MS,
      'grpc.keepalive_timeout_ms': KEEPALIVE_TIMEOUT_MS,
    });
  }

  /** Ends every call in flight with UNAVAILABLE saying `why`, and the channel. */
  close(why: string): void {
    this.closedWhy ??= why;
    for (const end of [...this.open]) end(why);
    this.open.clear();
    this.client.close();
  }

  /**
   * Starts `call` upstream; `abort` is called (once) if this upstream is
   * closed while the call is in flight, `done` to unregister it.
   */
  track<C extends UpstreamCall>(start: (client: Client) => C, abort: (why: string) => void): { call: C; done: () => void } | undefined {
    if (this.closedWhy !== undefined) return undefined;
    const call = start(this.client);
    let live = true;
    const end = (why: string) => {
      if (!live) return;
      live = false;
      abort(why);
      call.cancel();
    };
    this.open.add(end);
    return {
      call,
      done: () => {
        live = false;
        this.open.delete(end);
      },
    };
  }
}

/**
 * Handlers for every method of `service` that forward to the upstream
 * `pick` returns at the start of each call; `pick` returns a status instead
 * when there is nowhere to forward to (UNAVAILABLE, saying why).
 */
export function forwardingHandlers(
  service: ServiceDefinition,
  pick: (metadata: Metadata) => Upstream | Partial<StatusObject>,
  selfId: string,
): UntypedServiceImplementation {
  const out: UntypedServiceImplementation = {};
  for (const [name, def] of Object.entries(service) as [string, Untyped][]) {
    out[name] = handlerFor(def, pick, selfId);
  }
  return out;
}

function handlerFor(def: Untyped, pick: (metadata: Metadata) => Upstream | Partial<StatusObject>, selfId: string): UntypedHandleCall {
  const metadataOf = (call: ServerCall) => {
    const md = call.metadata.clone();
    for (const h of HOP_HEADERS) md.remove(h);
    md.set(FORWARDED_BY, selfId);
    return md;
  };
  const optionsOf = (call: ServerCall): CallOptions => ({ deadline: call.getDeadline() });
  const unavailable = (why: string): Partial<StatusObject> => ({ code: status.UNAVAILABLE, details: why });

  if (!def.requestStream && !def.responseStream) {
    return (call: ServerUnaryCall<unknown, unknown>, cb: sendUnaryData<unknown>) => {
      const up = pick(call.metadata);
      if (!(up instanceof Upstream)) return cb(up);
      const answer = answerOnce(cb);
      let value: unknown;
      const t = up.track(
        (client) =>
          client.makeUnaryRequest(def.path, def.requestSerialize, def.responseDeserialize, call.request, metadataOf(call), optionsOf(call), (_err, res) => {
            value = res;
          }),
        (why) => answer(unavailable(why)),
      );
      if (!t) return cb(unavailable(`the compute bridge at ${up.label} is going away`));
      t.call.on('status', (s: StatusObject) => {
        t.done();
        answer(s.code === status.OK ? null : relayed(s, up), value, s.metadata);
      });
      call.on('cancelled', () => t.call.cancel());
    };
  }

  if (!def.requestStream && def.responseStream) {
    return (call: ServerWritableStream<unknown, unknown>) => {
      const up = pick(call.metadata);
      if (!(up instanceof Upstream)) return void call.emit('error', up);
      const finish = endOnce(call);
      const t = up.track(
        (client) => client.makeServerStreamRequest(def.path, def.requestSerialize, def.responseDeserialize, call.request, metadataOf(call), optionsOf(call)),
        (why) => finish(unavailable(why)),
      );
      if (!t) return void call.emit('error', unavailable(`the compute bridge at ${up.label} is going away`));
      pipe(t.call, call);
      t.call.on('error', () => undefined); // the status says it
      t.call.on('status', (s: StatusObject) => {
        t.done();
        finish(s.code === status.OK ? s : relayed(s, up));
      });
      call.on('cancelled', () => t.call.cancel());
    };
  }

  if (def.requestStream && !def.responseStream) {
    return (call: ServerReadableStream<unknown, unknown>, cb: sendUnaryData<unknown>) => {
      const up = pick(call.metadata);
      if (!(up instanceof Upstream)) return cb(up);
      const answer = answerOnce(cb);
      let value: unknown;
      const t = up.track(
        (client) =>
          client.makeClientStreamRequest(def.path, def.requestSerialize, def.responseDeserialize, metadataOf(call), optionsOf(call), (_err, res) => {
            value = res;
          }),
        (why) => answer(unavailable(why)),
      );
      if (!t) return cb(unavailable(`the compute bridge at ${up.label} is going away`));
      pipe(call, t.call);
      call.on('end', () => t.call.end());
      t.call.on('status', (s: StatusObject) => {
        t.done();
        answer(s.code === status.OK ? null : relayed(s, up), value, s.metadata);
      });
      call.on('cancelled', () => t.call.cancel());
    };
  }

  return (call: ServerDuplexStream<unknown, unknown>) => {
    const up = pick(call.metadata);
    if (!(up instanceof Upstream)) return void call.emit('error', up);
    const finish = endOnce(call);
    const t = up.track(
      (client) => client.makeBidiStreamRequest(def.path, def.requestSerialize, def.responseDeserialize, metadataOf(call), optionsOf(call)),
      (why) => finish(unavailable(why)),
    );
    if (!t) return void call.emit('error', unavailable(`the compute bridge at ${up.label} is going away`));
    pipe(call, t.call);
    pipe(t.call, call);
    call.on('end', () => t.call.end());
    call.on('error', () => t.call.cancel());
    t.call.on('error', () => undefined); // the status says it
    t.call.on('status', (s: StatusObject) => {
      t.done();
      finish(s.code === status.OK ? s : relayed(s, up));
    });
    call.on('cancelled', () => t.call.cancel());
  };
}

interface Readable {
  on(event: 'data', fn: (m: unknown) => void): unknown;
  pause(): unknown;
  resume(): unknown;
}
interface Writable {
  write(m: unknown): boolean;
  once(event: 'drain', fn: () => void): unknown;
}

/** Copies messages from `from` to `to`, pausing `from` while `to` is full. */
/** A unary or client-stream call's callback, answered once (the upstream status or its abort, whichever comes first). */
function answerOnce(cb: sendUnaryData<unknown>): (err: Partial<StatusObject> | null, res?: unknown, trailers?: Metadata) => void {
  let answered = false;
  return (err, res, trailers) => {
    if (answered) return;
    answered = true;
    if (err) cb(err);
    else cb(null, res, trailers);
  };
}

/** A server-stream or bidi call, ended once: with the trailers on OK, else with the status as its error. */
function endOnce(call: ServerWritableStream<unknown, unknown> | ServerDuplexStream<unknown, unknown>): (s: Partial<StatusObject>) => void {
  let ended = false;
  return (s) => {
    if (ended) return;
    ended = true;
    if (s.code === status.OK) call.end(s.metadata);
    else call.emit('error', s);
  };
}

function pipe(from: Readable, to: Writable): void {
  from.on('data', (m) => {
    if (!to.write(m)) {
      from.pause();
      to.once('drain', () => from.resume());
    }
  });
}

/**
 * A failed upstream call's status as the caller gets it: the leader's own
 * statuses unchanged; UNAVAILABLE (the leader could not be reached, or went
 * away mid-call) saying which leader it was.
 */
function relayed(s: StatusObject, up: Upstream): Partial<StatusObject> {
  if (s.code !== status.UNAVAILABLE) return s;
  return { ...s, details: `the compute bridge at ${up.label} is unavailable (${s.details}); retrying reaches the next leader` };
}
