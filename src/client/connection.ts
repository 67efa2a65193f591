/**
 * One gRPC channel to a stowage server, with the bearer token on every call,
 * a deadline on every call that can have one, and failures turned back into
 * StowageError. Shared by every SDK object made without an explicit
 * connection.
 *
 * Deadlines (see `deadlines` below): a metadata call gets `timeoutMs` (STOWAGE_TIMEOUT,
 * default 60 s), a call that moves data `transferTimeoutMs`
 * (STOWAGE_TRANSFER_TIMEOUT, default 10 min). Streams that wait on purpose for
 * as long as their caller asks (dict and queue sessions, the worker stream,
 * WatchCalls) have none: each dict or queue operation has its own deadline
 * instead (session.ts: `timeoutMs` beyond the operation's own wait), and
 * keepalive pings find a connection that went silent under them. Nor has the
 * unary CollectGarbage, which lists the whole store (OPEN_ENDED).
 */
import {
  InterceptingCall,
  Metadata,
  credentials,
  status,
  type CallOptions,
  type ClientReadableStream,
  type ClientUnaryCall,
  type ClientWritableStream,
  type Interceptor,
  type ServiceError,
} from '@grpc/grpc-js';
import { resolveClientConfig, resolveClientTimeouts, type ClientConfig, type ClientTimeouts } from '../common/config.js';
import { fromGrpcError } from '../common/grpc-errors.js';
import { MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES } from '../common/message-limits.js';
import { quote } from '../common/quote.js';
import { clientTlsMode, loadClientTls, type ClientTlsMode } from '../common/tls.js';
import { BridgeServiceClient } from '../gen/stowage/v1/bridge.js';
import { DictOpKind, DictServiceClient, type DictOp, type DictResult } from '../gen/stowage/v1/dict.js';
import { QueueOpKind, QueueServiceClient, type QueueOp, type QueueResult } from '../gen/stowage/v1/queue.js';
import { TokenServiceClient } from '../gen/stowage/v1/token.js';
import { VolumeServiceClient } from '../gen/stowage/v1/volume.js';
import { channelTarget } from './servers.js';
import { SessionBatcher } from './session.js';

/** Calls without a deadline: they wait, on purpose, for as long as their caller asks. */
const OPEN_ENDED = new Set([
  '/stowage.v1.DictService/Session',
  '/stowage.v1.QueueService/Session',
  '/stowage.v1.BridgeService/Work',
  '/stowage.v1.BridgeService/WatchCalls',
  // A collection lists the whole store: on a big bucket it takes as long as it takes.
  '/stowage.v1.VolumeService/CollectGarbage',
]);
/** Calls that move data, or do work in proportion to the data they name. */
const TRANSFER = new Set([
  '/stowage.v1.VolumeService/PutBlob',
  '/stowage.v1.VolumeService/ReadBlob',
  '/stowage.v1.VolumeService/Commit',
  '/stowage.v1.VolumeService/RebuildIndex',
  '/stowage.v1.VolumeService/ListFiles',
  '/stowage.v1.VolumeService/PlanUpload',
  '/stowage.v1.VolumeService/PresignBlobs',
  '/stowage.v1.VolumeService/GetTreeObjects',
  // Reads every chunk of the file it names (the SDK's own reports wait only STOWAGE_TIMEOUT: blob-transport.ts reportDamaged).
  '/stowage.v1.VolumeService/ReportDamagedBlob',
  '/stowage.v1.BridgeService/Submit',
]);
/** Keepalive pings while calls are open: a connection whose peer stopped answering is closed, failing its calls as UNAVAILABLE. */
const KEEPALIVE_MS = 30_000;
const KEEPALIVE_TIMEOUT_MS = 20_000;

type UnaryMethod<Req, Res> = (
  req: Req,
  metadata: Metadata,
  options: Partial<CallOptions>,
  cb: (err: ServiceError | null, res: Res) => void,
) => ClientUnaryCall;

export interface ConnectOptions extends Partial<ClientConfig>, Partial<ClientTimeouts> {}

export class Connection {
  readonly server: string;
  /** How this connection speaks to the server: plain, TLS, or TLS with a client certificate. */
  readonly tls: ClientTlsMode;
  /** The server's data dir when it runs on this host and holds our token (see config.ts); else undefined. */
  readonly dataDir: string | undefined;
  readonly volumes: VolumeServiceClient;
  readonly dicts: DictServiceClient;
  readonly queues: QueueServiceClient;
  readonly bridge: BridgeServiceClient;
  /** Scoped tokens (admin token only). */
  readonly tokens: TokenServiceClient;
  /** Dict operations, batched over one session stream. */
  readonly dictOps: SessionBatcher<DictOp, DictResult>;
  /** Queue operations, batched over one session stream. */
  readonly queueOps: SessionBatcher<QueueOp, QueueResult>;

  readonly timeouts: ClientTimeouts;

  constructor(opts: ConnectOptions = {}) {
    const cfg = resolveClientConfig(opts);
    this.server = cfg.server;
    this.dataDir = cfg.dataDir;
    this.timeouts = resolveClientTimeouts(opts);
    const auth: Interceptor = (options, next) =>
      new InterceptingCall(next(options), {
        start(metadata, listener, nextStart) {
          metadata.set('authorization', `Bearer ${cfg.token}`);
          nextStart(metadata, listener);
        },
      });
    // One server, or a list of them spread over with round_robin (servers.ts).
    const { target, options: listOptions } = channelTarget(cfg.server);
    const options = {
      ...listOptions,
      // The server's limits, so that what it would refuse fails here, before it is sent.
      'grpc.max_send_message_length': MAX_REQUEST_BYTES,
      'grpc.max_receive_message_length': MAX_RESPONSE_BYTES,
      'grpc.keepalive_time_ms': KEEPALIVE_MS,
      'grpc.keepalive_timeout_ms': KEEPALIVE_TIMEOUT_MS,
      interceptors: [auth, deadlines(this.timeouts)],
    };
    // TLS when given a CA, a client certificate or STOWAGE_TLS=1 (common/tls.ts); the token rides inside it.
    const tls = loadClientTls(cfg);
    this.tls = clientTlsMode(tls);
    const creds = tls ? credentials.createSsl(tls.ca ?? null, tls.key ?? null, tls.cert ?? null) : credentials.createInsecure();
    this.volumes = new VolumeServiceClient(target, creds, options);
    // The clients share one connection (grpc-js pools subchannels by target and options).
    this.dicts = new DictServiceClient(target, creds, options);
    this.queues = new QueueServiceClient(target, creds, options);
    this.bridge = new BridgeServiceClient(target, creds, options);
    this.tokens = new TokenServiceClient(target, creds, options);
    this.dictOps = new SessionBatcher(() => this.dicts.session(), this.server, this.tls, {
      timeoutMs: this.timeouts.timeoutMs,
      waitOf: () => 0,
      describe: (op: DictOp) => `dict ${opName(DictOpKind[op.kind])} on ${quote(op.dict)}`,
    });
    this.queueOps = new SessionBatcher(() => this.queues.session(), this.server, this.tls, {
      timeoutMs: this.timeouts.timeoutMs,
      // A blocking get or put waits on the server up to its timeout (0: without end).
      waitOf: (op: QueueOp) => (op.block ? op.timeoutMs || Infinity : 0),
      describe: (op: QueueOp) => `queue ${opName(QueueOpKind[op.kind])} on ${quote(op.queue)}`,
    });
  }

  /** Calls a unary method and returns its response or a StowageError; `timeoutMs` overrides its default deadline. */
  unary<Req, Res>(method: UnaryMethod<Req, Res>, req: Req, opts: { timeoutMs?: number } = {}): Promise<Res> {
    const callOptions: Partial<CallOptions> = opts.timeoutMs === undefined ? {} : { deadline: Date.now() + opts.timeoutMs };
    return new Promise((resolve, reject) => {
      method(req, new Metadata(), callOptions, (err, res) => (err ? reject(fromGrpcError(err, this.server, this.tls)) : resolve(res)));
    });
  }

  /**
   * Collects every message of a server stream. A consumer that stops early
   * (a break, or a throw of its own such as a refused listing) cancels the
   * call: leaving the stream only destroys grpc-js's Readable, and the server
   * would go on sending until its deadline.
   */
  async *stream<Res>(call: ClientReadableStream<Res>): AsyncIterable<Res> {
    let ended = false;
    try {
      for await (const msg of call as AsyncIterable<Res>) yield msg;
      ended = true;
    } catch (err) {
      ended = true;
      throw fromGrpcError(err, this.server, this.tls);
    } finally {
      if (!ended) {
        // The CANCELLED status comes back as an 'error' event, which nobody else listens to any more.
        call.on('error', () => undefined);
        call.cancel();
      }
    }
  }

  /** Writes messages to a client stream and waits for its one response. */
  clientStream<Req, Res>(
    open: (cb: (err: ServiceError | null, res: Res) => void) => ClientWritableStream<Req>,
    messages: Req[],
  ): Promise<Res> {
    return new Promise((resolve, reject) => {
      const call = open((err, res) => (err ? reject(fromGrpcError(err, this.server, this.tls)) : resolve(res)));
      for (const m of messages) call.write(m);
      call.end();
    });
  }

  close(): void {
    this.dictOps.close();
    this.queueOps.close();
    this.volumes.close();
    this.dicts.close();
    this.queues.close();
    this.bridge.close();
    this.tokens.close();
  }
}

let shared: Connection | undefined;

/** The process-wide connection from STOWAGE_SERVER / STOWAGE_TOKEN (see config.ts). */
export function defaultConnection(): Connection {
  shared ??= new Connection();
  return shared;
}

/** Closes the shared connection so that a short script can exit. */
export function closeDefaultConnection(): void {
  shared?.close();
  shared = undefined;
}

/** `GET` from `DICT_OP_KIND_GET`. */
function opName(kind: string | undefined): string {
  return (kind ?? 'unknown').replace(/^(DICT|QUEUE)_OP_KIND_/, '').toLowerCase();
}

function seconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`;
}

/**
 * Gives every call that can have one a deadline (a caller's own deadline
 * stands), and makes the status of a passed deadline say which call, how long
 * it was allowed and how to allow more; fromGrpcError adds the server.
 */
function deadlines(timeouts: ClientTimeouts): Interceptor {
  return (options, next) => {
    const path = options.method_definition.path;
    const transfer = TRANSFER.has(path);
    let allowedMs: number | undefined;
    if (options.deadline !== undefined) {
      allowedMs = new Date(options.deadline).getTime() - Date.now();
    } else if (!OPEN_ENDED.has(path)) {
      allowedMs = transfer ? timeouts.transferTimeoutMs : timeouts.timeoutMs;
      options = { ...options, deadline: Date.now() + allowedMs };
    }
    const knob = transfer ? 'STOWAGE_TRANSFER_TIMEOUT (or transferTimeoutMs)' : 'STOWAGE_TIMEOUT (or timeoutMs)';
    return new InterceptingCall(next(options), {
      start(metadata, _listener, nextStart) {
        nextStart(metadata, {
          onReceiveStatus(st, pass) {
            if (st.code !== status.DEADLINE_EXCEEDED || st.metadata.get('stowage-code').length > 0 || allowedMs === undefined) return pass(st);
            pass({
              ...st,
              details: `${path} got no answer within its deadline of ${seconds(Math.max(0, Math.round(allowedMs)))} (${st.details}); the server may be overloaded or stuck: retry, or allow more time with ${knob}`,
            });
          },
        });
      },
    });
  };
}
