/**
 * One run of the active bridge on this server: a Bridge and its Schedules
 * over one CallStore, the BridgeService handlers that reach them, and every
 * stream those handlers hold open. Without a lease a server has one term for
 * its whole life; with one, a term begins when the server wins the lease
 * (its store fenced by that lease value) and ends when it loses it.
 *
 * Starting loads every call and schedule from the store (Bridge.start: the
 * restart recovery); no handler of the term is reached before it is done.
 * Ending with a reason (the lease was lost) stops the bridge at once and
 * ends every stream with UNAVAILABLE saying why: workers reconnect, callers
 * retry, and both find the next leader.
 */
import type { ServerDuplexStream, ServerWritableStream } from '@grpc/grpc-js';
import { InvalidArgumentError, UnavailableError } from '../common/errors.js';
import { toGrpcError } from '../common/grpc-errors.js';
import { authCheck, unary } from '../common/grpc-server.js';
import type { Logger } from '../common/logger.js';
import type { Authenticator } from '../common/tokens.js';
import type { BridgeMessage, BridgeServiceServer, CallResult, LogEntry, WatchCallsRequest, WatchLogsRequest, WorkerMessage } from '../gen/stowage/v1/bridge.js';
import { Bridge, type BridgeOptions } from './bridge.js';
import { FOLLOWER_BUFFER_BYTES } from './logs.js';
import { Deployments } from './deployments.js';
import { Schedules } from './schedules.js';
import type { BridgeObserver, CallStore, VolumeResolver } from './types.js';

export class BridgeTerm {
  readonly bridge: Bridge;
  private readonly schedules: Schedules;
  private readonly deployments: Deployments;
  /** Ends each open stream: with UNAVAILABLE(why), or a plain end when no reason is given. */
  private readonly streams = new Set<(why: string | undefined) => void>();
  private endedWhy: string | undefined;
  private closed = false;

  constructor(
    private readonly store: CallStore,
    volumes: VolumeResolver,
    private readonly log: Logger,
    opts: BridgeOptions,
    observer: BridgeObserver | undefined,
  ) {
    this.bridge = new Bridge(store, volumes, log, opts, observer);
    this.schedules = new Schedules(store, (spec, args) => this.bridge.submit(spec, [{ id: '', args, reads: [] }]), log);
    this.deployments = new Deployments(store, this.schedules);
  }

  /** Loads the kept calls, schedules and deploys (rejects when the store cannot be read). */
  async start(): Promise<void> {
    await Promise.all([this.bridge.start(), this.schedules.start(), this.deployments.start()]);
  }

  /** Stops the bridge and ends its streams: with UNAVAILABLE saying `why` when given (the lease was lost). */
  async close(why?: string): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.endedWhy = why;
    this.schedules.stop();
    await this.bridge.close();
    for (const end of [...this.streams]) end(why);
    this.streams.clear();
    await this.store.close();
  }

  /**
   * A server stream that `run` fills and then ends; serverStream() without
   * its drain wait: a caller that went away must not hold a watch open.
   */
  private watchStream<Req, Res>(call: ServerWritableStream<Req, Res>, run: (signal: AbortSignal) => Promise<void>): void {
    const aborter = new AbortController();
    call.on('cancelled', () => aborter.abort());
    call.on('close', () => aborter.abort());
    const end = (why: string | undefined) => {
      aborter.abort();
      call.emit('error', toGrpcError(new UnavailableError(why ?? 'the compute bridge on this server is shutting down; retry')));
    };
    this.streams.add(end);
    (async () => run(aborter.signal))().then(
      () => {
        this.streams.delete(end);
        if (!aborter.signal.aborted) call.end();
      },
      (err: unknown) => {
        this.streams.delete(end);
        call.emit('error', toGrpcError(err));
      },
    );
  }

  handlers(token: Authenticator | string): BridgeServiceServer {
    const check = authCheck(token);
    const log = this.log;
    const bridge = this.bridge;
    return {
      submit: unary(check, log, async (req) => ({ callIds: await bridge.submit(req.function ?? missingFunction(), req.calls) })),
      watchCalls: (call: ServerWritableStream<WatchCallsRequest, CallResult>) =>
        this.watchStream(call, (signal) => {
          check(call);
          return bridge.watch(
            call.request.callIds,
            async (r) => {
              if (!signal.aborted) call.write(r);
            },
            signal,
          );
        }),
      watchLogs: (call: ServerWritableStream<WatchLogsRequest, LogEntry>) =>
        this.watchStream(call, (signal) => {
          check(call);
          // A reader that does not keep up loses entries (told how many bytes), rather than growing this buffer.
          const sink = (e: LogEntry) => {
            if (signal.aborted || call.writableLength >= FOLLOWER_BUFFER_BYTES) return false;
            call.write(e);
            return true;
          };
          return bridge.watchLogs(call.request.callId, call.request.follow, sink, signal);
        }),
      getCall: unary(check, log, (req) => bridge.getCall(req.callId)),
      cancelCalls: unary(check, log, (req) => ({ cancelled: bridge.cancel(req.callIds, req.ignoreFinished) })),
      listCalls: unary(check, log, (req) => ({ calls: bridge.listCalls(req.schedule, req.limit) })),
      listWorkers: unary(check, log, () => ({ workers: bridge.listWorkers() })),
      putSchedule: unary(check, log, (req) => this.schedules.put(req)),
      listSchedules: unary(check, log, () => ({ schedules: this.schedules.list() })),
      deleteSchedule: unary(check, log, async (req) => {
        await this.schedules.delete(req.name);
        return {};
      }),
      deployApp: unary(check, log, (req) => this.deployments.deploy(req)),
      getFunction: unary(check, log, (req) => this.deployments.get(req)),
      listFunctions: unary(check, log, (req) => ({ functions: this.deployments.list(req.app) })),
      deleteApp: unary(check, log, async (req) => ({ removed: await this.deployments.deleteApp(req.app) })),
      work: (call: ServerDuplexStream<WorkerMessage, BridgeMessage>) => {
        try {
          check(call);
        } catch (err) {
          call.emit('error', toGrpcError(err));
          return;
        }
        let open = true;
        const end = (why: string | undefined) => {
          if (!open) return;
          open = false;
          if (why === undefined) call.end();
          else call.emit('error', toGrpcError(new UnavailableError(why)));
        };
        this.streams.add(end);
        // A worker stream closed by the bridge while the term ends gets the term's reason.
        const session = bridge.attachWorker({
          send: (msg) => {
            if (open) call.write(msg);
          },
          close: () => end(this.closed ? this.endedWhy : undefined),
        });
        call.on('data', (msg: WorkerMessage) => session.receive(msg));
        const ended = () => {
          this.streams.delete(end);
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
}

function missingFunction(): never {
  throw new InvalidArgumentError('Submit names no function');
}
