/**
 * Errors shared by every service. Each carries a code that all backends agree
 * on; the server turns it into a gRPC status and the client turns the status
 * back into the same class (see grpc-errors.ts), nowhere else.
 */
export const ErrorCode = {
  INVALID_ARGUMENT: 'INVALID_ARGUMENT',
  NOT_FOUND: 'NOT_FOUND',
  ALREADY_EXISTS: 'ALREADY_EXISTS',
  FAILED_PRECONDITION: 'FAILED_PRECONDITION',
  UNAVAILABLE: 'UNAVAILABLE',
  UNAUTHENTICATED: 'UNAUTHENTICATED',
  /** A valid token without the scope the call needs (the message names it). */
  PERMISSION_DENIED: 'PERMISSION_DENIED',
  /** Bytes that do not match their hash. Never returned as data. */
  INTEGRITY: 'INTEGRITY',
  /** A function call ran past its timeout. */
  DEADLINE_EXCEEDED: 'DEADLINE_EXCEEDED',
  /** A function's own code threw (its message and stack come along). */
  FUNCTION_ERROR: 'FUNCTION_ERROR',
  /** A function call was cancelled (call.cancel(), stowage bridge cancel) before it finished. */
  CANCELLED: 'CANCELLED',
  /**
   * The server ran out of something it needs for the call: disk space mostly
   * (the call may work once it is freed), or a message over its size limit.
   */
  RESOURCE_EXHAUSTED: 'RESOURCE_EXHAUSTED',
  INTERNAL: 'INTERNAL',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/**
 * Whether a code from the wire is one of ours. An own-property test: `in`
 * would also accept inherited names (`toString`, `constructor`), and
 * errorForCode would then construct Object.prototype's functions.
 */
export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.hasOwn(ErrorCode, code);
}

export class StowageError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

export class InvalidArgumentError extends StowageError {
  constructor(message: string) {
    super(ErrorCode.INVALID_ARGUMENT, message);
  }
}
export class NotFoundError extends StowageError {
  constructor(message: string) {
    super(ErrorCode.NOT_FOUND, message);
  }
}
export class AlreadyExistsError extends StowageError {
  constructor(message: string) {
    super(ErrorCode.ALREADY_EXISTS, message);
  }
}
export class FailedPreconditionError extends StowageError {
  constructor(message: string) {
    super(ErrorCode.FAILED_PRECONDITION, message);
  }
}
export class UnavailableError extends StowageError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCode.UNAVAILABLE, message, options);
  }
}
export class UnauthenticatedError extends StowageError {
  constructor(message: string) {
    super(ErrorCode.UNAUTHENTICATED, message);
  }
}
export class PermissionDeniedError extends StowageError {
  constructor(message: string) {
    super(ErrorCode.PERMISSION_DENIED, message);
  }
}
export class IntegrityError extends StowageError {
  constructor(message: string) {
    super(ErrorCode.INTEGRITY, message);
  }
}
export class DeadlineExceededError extends StowageError {
  constructor(message: string) {
    super(ErrorCode.DEADLINE_EXCEEDED, message);
  }
}
export class FunctionError extends StowageError {
  constructor(message: string) {
    super(ErrorCode.FUNCTION_ERROR, message);
  }
}
export class CancelledError extends StowageError {
  constructor(message: string) {
    super(ErrorCode.CANCELLED, message);
  }
}
export class ResourceExhaustedError extends StowageError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCode.RESOURCE_EXHAUSTED, message, options);
  }
}
export class InternalError extends StowageError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCode.INTERNAL, message, options);
  }
}

const byCode: Record<ErrorCode, new (message: string) => StowageError> = {
  INVALID_ARGUMENT: InvalidArgumentError,
  NOT_FOUND: NotFoundError,
  ALREADY_EXISTS: AlreadyExistsError,
  FAILED_PRECONDITION: FailedPreconditionError,
  UNAVAILABLE: UnavailableError,
  UNAUTHENTICATED: UnauthenticatedError,
  PERMISSION_DENIED: PermissionDeniedError,
  INTEGRITY: IntegrityError,
  DEADLINE_EXCEEDED: DeadlineExceededError,
  FUNCTION_ERROR: FunctionError,
  CANCELLED: CancelledError,
  RESOURCE_EXHAUSTED: ResourceExhaustedError,
  INTERNAL: InternalError,
};

export function errorForCode(code: ErrorCode, message: string): StowageError {
  return new byCode[code](message);
}

export function isStowageError(err: unknown, code?: ErrorCode): err is StowageError {
  return err instanceof StowageError && (code === undefined || err.code === code);
}

export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
