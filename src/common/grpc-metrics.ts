/**
 * rpcMetrics: a grpc-js server interceptor that times every call from its
 * start to its status and reports it by method and status code. It must sit
 * inside callGuard (before it in the server's `interceptors` list: grpc-js
 * wraps them in list order, the last one outermost), so that a call callGuard
 * refuses (a wrong token, an oversized message) passes its status through here
 * too. A call the client cancels (or whose deadline passes) sends no status:
 * it is counted as CANCELLED when the cancellation arrives.
 */
import { ServerInterceptingCall, status, type ServerInterceptor } from '@grpc/grpc-js';
import { performance } from 'node:perf_hooks';

/** Where finished calls go (Metrics has this shape). */
export interface RpcRecorder {
  /** `path` is "/package.Service/Method", `code` a grpc status number. */
  rpcFinished(path: string, code: number, seconds: number): void;
}

/** The interceptor (see the head of this file). */
export function rpcMetrics(recorder: RpcRecorder): ServerInterceptor {
  return (method, call) => {
    const started = performance.now();
    let done = false;
    const finish = (code: number) => {
      if (done) return;
      done = true;
      recorder.rpcFinished(method.path, code, (performance.now() - started) / 1000);
    };
    return new ServerInterceptingCall(call, {
      start(next) {
        next({ onCancel: () => finish(status.CANCELLED) });
      },
      sendStatus(s, next) {
        finish(s.code);
        next(s);
      },
    });
  };
}
