/**
 * One gRPC channel to a stowage server, with the bearer token on every call
 * and failures turned back into StowageError. Shared by every SDK object made
 * without an explicit connection.
 */
import {
  InterceptingCall,
  Metadata,
  credentials,
  type CallOptions,
  type ClientReadableStream,
  type ClientUnaryCall,
  type ClientWritableStream,
  type Interceptor,
  type ServiceError,
} from '@grpc/grpc-js';
import { resolveClientConfig, type ClientConfig } from '../common/config.js';
import { fromGrpcError } from '../common/grpc-errors.js';
import { BridgeServiceClient } from '../gen/stowage/v1/bridge.js';
import { DictServiceClient, type DictOp, type DictResult } from '../gen/stowage/v1/dict.js';
import { QueueServiceClient, type QueueOp, type QueueResult } from '../gen/stowage/v1/queue.js';
import { VolumeServiceClient } from '../gen/stowage/v1/volume.js';
import { SessionBatcher } from './session.js';

export const GRPC_MESSAGE_LIMIT = 256 * 1024 * 1024;

type UnaryMethod<Req, Res> = (
  req: Req,
  metadata: Metadata,
  options: Partial<CallOptions>,
  cb: (err: ServiceError | null, res: Res) => void,
) => ClientUnaryCall;

export interface ConnectOptions extends Partial<ClientConfig> {}

export class Connection {
  readonly server: string;
  /** The server's data dir when it runs on this host and holds our token (see config.ts); else undefined. */
  readonly dataDir: string | undefined;
  readonly volumes: VolumeServiceClient;
  readonly dicts: DictServiceClient;
  readonly queues: QueueServiceClient;
  readonly bridge: BridgeServiceClient;
  /** Dict operations, batched over one session stream. */
  readonly dictOps: SessionBatcher<DictOp, DictResult>;
  /** Queue operations, batched over one session stream. */
  readonly queueOps: SessionBatcher<QueueOp, QueueResult>;

  constructor(opts: ConnectOptions = {}) {
    const cfg = resolveClientConfig(opts);
    this.server = cfg.server;
    this.dataDir = cfg.dataDir;
    const auth: Interceptor = (options, next) =>
      new InterceptingCall(next(options), {
        start(metadata, listener, nextStart) {
          metadata.set('authorization', `Bearer ${cfg.token}`);
          nextStart(metadata, listener);
        },
      });
    const options = {
      'grpc.max_receive_message_length': GRPC_MESSAGE_LIMIT,
      'grpc.max_send_message_length': GRPC_MESSAGE_LIMIT,
      interceptors: [auth],
    };
    this.volumes = new VolumeServiceClient(cfg.server, credentials.createInsecure(), options);
    // The clients share one connection (grpc-js pools subchannels by target and options).
    this.dicts = new DictServiceClient(cfg.server, credentials.createInsecure(), options);
    this.queues = new QueueServiceClient(cfg.server, credentials.createInsecure(), options);
    this.bridge = new BridgeServiceClient(cfg.server, credentials.createInsecure(), options);
    this.dictOps = new SessionBatcher(() => this.dicts.session(), this.server);
    this.queueOps = new SessionBatcher(() => this.queues.session(), this.server);
  }

  /** Calls a unary method and returns its response or a StowageError. */
  unary<Req, Res>(method: UnaryMethod<Req, Res>, req: Req): Promise<Res> {
    return new Promise((resolve, reject) => {
      method(req, new Metadata(), {}, (err, res) => (err ? reject(fromGrpcError(err, this.server)) : resolve(res)));
    });
  }

  /** Collects every message of a server stream. */
  async *stream<Res>(call: ClientReadableStream<Res>): AsyncIterable<Res> {
    try {
      for await (const msg of call as AsyncIterable<Res>) yield msg;
    } catch (err) {
      throw fromGrpcError(err, this.server);
    }
  }

  /** Writes messages to a client stream and waits for its one response. */
  clientStream<Req, Res>(
    open: (cb: (err: ServiceError | null, res: Res) => void) => ClientWritableStream<Req>,
    messages: Req[],
  ): Promise<Res> {
    return new Promise((resolve, reject) => {
      const call = open((err, res) => (err ? reject(fromGrpcError(err, this.server)) : resolve(res)));
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
