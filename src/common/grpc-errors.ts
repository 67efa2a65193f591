/**
 * The one place where StowageError and gRPC status meet. The INTEGRITY code
 * has no gRPC twin, so it travels as DATA_LOSS; the original code also rides in
 * the `stowage-code` trailer so the client restores the exact class.
 */
import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { ErrorCode, StowageError, errorForCode, messageOf } from './errors.js';

const toStatus: Record<ErrorCode, status> = {
  INVALID_ARGUMENT: status.INVALID_ARGUMENT,
  NOT_FOUND: status.NOT_FOUND,
  ALREADY_EXISTS: status.ALREADY_EXISTS,
  FAILED_PRECONDITION: status.FAILED_PRECONDITION,
  UNAVAILABLE: status.UNAVAILABLE,
  UNAUTHENTICATED: status.UNAUTHENTICATED,
  INTEGRITY: status.DATA_LOSS,
  DEADLINE_EXCEEDED: status.DEADLINE_EXCEEDED,
  // UNKNOWN: "an error raised by an API that does not return enough error information", i.e. the user's code.
  FUNCTION_ERROR: status.UNKNOWN,
  RESOURCE_EXHAUSTED: status.RESOURCE_EXHAUSTED,
  INTERNAL: status.INTERNAL,
};

const fromStatus = new Map<status, ErrorCode>([
  [status.INVALID_ARGUMENT, ErrorCode.INVALID_ARGUMENT],
  [status.OUT_OF_RANGE, ErrorCode.INVALID_ARGUMENT],
  [status.NOT_FOUND, ErrorCode.NOT_FOUND],
  [status.ALREADY_EXISTS, ErrorCode.ALREADY_EXISTS],
  [status.FAILED_PRECONDITION, ErrorCode.FAILED_PRECONDITION],
  [status.UNAVAILABLE, ErrorCode.UNAVAILABLE],
  [status.DEADLINE_EXCEEDED, ErrorCode.UNAVAILABLE],
  [status.UNAUTHENTICATED, ErrorCode.UNAUTHENTICATED],
  [status.DATA_LOSS, ErrorCode.INTEGRITY],
  [status.RESOURCE_EXHAUSTED, ErrorCode.RESOURCE_EXHAUSTED],
]);

export interface GrpcStatusError {
  code: status;
  details: string;
  metadata: Metadata;
}

/** Server side: any thrown value becomes a status for the caller. */
export function toGrpcError(err: unknown): GrpcStatusError {
  const metadata = new Metadata();
  if (err instanceof StowageError) {
    metadata.set('stowage-code', err.code);
    return { code: toStatus[err.code], details: err.message, metadata };
  }
  metadata.set('stowage-code', ErrorCode.INTERNAL);
  return { code: status.INTERNAL, details: `internal error: ${messageOf(err)}`, metadata };
}

/** Client side: a failed call becomes the StowageError the server threw. */
export function fromGrpcError(err: unknown, server: string): StowageError {
  if (err instanceof StowageError) return err;
  const e = err as Partial<ServiceError>;
  if (typeof e.code !== 'number') return new StowageError(ErrorCode.INTERNAL, messageOf(err));
  const sent = e.metadata?.get('stowage-code')[0];
  const code =
    typeof sent === 'string' && sent in ErrorCode
      ? (sent as ErrorCode)
      : (fromStatus.get(e.code) ?? ErrorCode.INTERNAL);
  if (sent === undefined && e.code === status.UNAVAILABLE) {
    return errorForCode(
      code,
      `stowage server at ${server} is unreachable (${(e.details ?? '').replace(/\.?\s*Resolution note:\s*$/, '')}); start it with: stowage serve, or set STOWAGE_SERVER`,
    );
  }
  return errorForCode(code, e.details ?? messageOf(err));
}

export interface OpErrorMessage {
  code: string;
  message: string;
}

/** Server side: a failed operation inside a batch, reported without failing the batch. */
export function toOpError(err: unknown): OpErrorMessage {
  if (err instanceof StowageError) return { code: err.code, message: err.message };
  return { code: ErrorCode.INTERNAL, message: `internal error: ${messageOf(err)}` };
}

/** Client side: the StowageError a batch reported for one operation. */
export function fromOpError(e: OpErrorMessage): StowageError {
  const code = e.code in ErrorCode ? (e.code as ErrorCode) : ErrorCode.INTERNAL;
  return errorForCode(code, e.message);
}
