/**
 * The BridgeService gRPC handlers: the caller's unary calls and WatchCalls
 * stream over one Bridge, and each worker's Work stream handed to
 * Bridge.attachWorker. Owns the CallStore and the schedules.
 */
import type { ServerDuplexStream, ServerWritableStream } from '@grpc/grpc-js';
import { join } from 'node:path';
import { toGrpcError } from '../common/grpc-errors.js';
import { InvalidArgumentError } from '../common/errors.js';
import { authCheck, unary } from '../common/grpc-server.js';
import type { Authenticator } from '../common/tokens.js';
import type { Logger } from '../common/logger.js';
import type { BridgeMessage, BridgeServiceServer, CallResult, WatchCallsRequest, WorkerMessage } from '../gen/stowage/v1/bridge.js';
import { Bridge, type BridgeOptions } from './bridge.js';
import { Schedules } from './schedules.js';
import { LmdbCallStore } from './store.js';
import type { BridgeObserver, CallStore, VolumeResolver } from './types.js';

export class BridgeService {
  readonly bridge: Bridge;
  private readonly schedules: Schedules;
  private readonly store: CallStore;
  private readonly streams = new Set<ServerDuplexStream<WorkerMessage, BridgeMessage>>();

  /** Keeps its calls and schedules in LMDB under `<dataDir>/bridge`; `observer` is told what the bridge does (metrics). */
  constructor(dataDir: string, volumes: VolumeResolver, private readonly log: Logger, opts: BridgeOptions = {}, observer?: BridgeObserver) {
    this.store = new LmdbCallStore(join(dataDir, 'bridge'), log);
    this.bridge = new Bridge(this.store, volumes, log, opts, observer);
    this.schedules = new Schedules(
      this.store,
      (spec, args) => this.bridge.submit(spec, [{ id: '', args, reads: [] }]),
      log,
    );
    this.bridge.start();
    this.schedules.start();
  }

  handlers(token: Authenticator | string): BridgeServiceServer {
    const check = authCheck(token);
    const log = this.log;
    const bridge = this.bridge;
    return {
      submit: unary(check, log, async (req) => ({ callIds: await bridge.submit(req.function ?? missingFunction(), req.calls) })),
      watchCalls: (call: ServerWritableStream<WatchCallsRequest, CallResult>) => {
        // serverStream() without its drain wait: a caller that went away must not hold a watch open.
        const aborter = new AbortController();
        call.on('cancelled', () => aborter.abort());
        call.on('close', () => aborter.abort());
        (async () => {
          check(call);
          await bridge.watch(
            call.request.callIds,
            async (r) => {
              if (!aborter.signal.aborted) call.write(r);
            },
            aborter.signal,
          );
        })().then(
          () => call.end(),
          (err: unknown) => call.emit('error', toGrpcError(err)),
        );
      },
      getCall: unary(check, log, (req) => bridge.getCall(req.callId)),
      listCalls: unary(check, log, (req) => ({ calls: bridge.listCalls(req.schedule, req.limit) })),
      listWorkers: unary(check, log, () => ({ workers: bridge.listWorkers() })),
      putSchedule: unary(check, log, (req) => this.schedules.put(req)),
      listSchedules: unary(check, log, () => ({ schedules: this.schedules.list() })),
      deleteSchedule: unary(check, log, async (req) => {
        await this.schedules.delete(req.name);
        return {};
      }),
      work: (call: ServerDuplexStream<WorkerMessage, BridgeMessage>) => {
        try {
          check(call);
        } catch (err) {
          call.emit('error', toGrpcError(err));
          return;
        }
        this.streams.add(call);
        let open = true;
        const session = bridge.attachWorker({
          send: (msg) => {
            if (open) call.write(msg);
          },
          close: () => {
            if (!open) return;
            open = false;
            call.end();
          },
        });
        call.on('data', (msg: WorkerMessage) => session.receive(msg));
        const ended = () => {
          this.streams.delete(call);
          open = false;
          session.ended();
        };
        call.on('end', () => {
          ended();
          call.end();
        });
        call.on('cancelled', ended);
        call.on('close', ended);
        call.on('error', ended);
      },
    };
  }

  async close(): Promise<void> {
    this.schedules.stop();
    await this.bridge.close();
    for (const s of this.streams) s.end();
    await this.store.close();
  }
}

function missingFunction(): never {
  throw new InvalidArgumentError('Submit names no function');
}
