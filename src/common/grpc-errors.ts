/**
 * The one place where StowageError and gRPC status meet. The INTEGRITY code
 * has no gRPC twin, so it travels as DATA_LOSS; the original code also rides in
 * the `stowage-code` trailer so the client restores the exact class.
 *
 * Status messages are bounded (MAX_STATUS_MESSAGE_BYTES), here, whatever the
 * thrower put in them. The message travels percent-encoded (spaces and
 * non-ASCII bytes take 3 bytes each) in the `grpc-message` trailer, and Node's
 * HTTP/2 (nghttp2) cannot send a header block over 64 KiB after HPACK
 * compression, even with the send limit grpc-js raises (Node 20: a header of
 * 104,800 "a"s goes, 104,900 do not). Over that, the server's HTTP/2 session
 * fails with a compression error and closes, and the client never takes it
 * in (its socket sits half-closed with the server's last frames unread): the
 * call, and every later call on that connection, waits forever. On Node 22
 * and 24 the client's HTTP/2 resets the stream instead ("Received RST_STREAM
 * with code 2 triggered by internal client error: Protocol error"), and the
 * call fails at once (test/cli-exit.test.ts checks both).
 */
import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { ErrorCode, StowageError, errorForCode, isErrorCode, messageOf } from './errors.js';
import { truncateMessage } from './quote.js';
import type { ClientTlsMode } from './tls.js';

/** Longest status message sent or believed (UTF-8 bytes; up to 3 times that percent-encoded on the wire). */
export const MAX_STATUS_MESSAGE_BYTES = 4096;

const toStatus: Record<ErrorCode, status> = {
  INVALID_ARGUMENT: status.INVALID_ARGUMENT,
  NOT_FOUND: status.NOT_FOUND,
  ALREADY_EXISTS: status.ALREADY_EXISTS,
  FAILED_PRECONDITION: status.FAILED_PRECONDITION,
  UNAVAILABLE: status.UNAVAILABLE,
  UNAUTHENTICATED: status.UNAUTHENTICATED,
  PERMISSION_DENIED: status.PERMISSION_DENIED,
  INTEGRITY: status.DATA_LOSS,
  DEADLINE_EXCEEDED: status.DEADLINE_EXCEEDED,
  // UNKNOWN: "an error raised by an API that does not return enough error information", i.e. the user's code.
  FUNCTION_ERROR: status.UNKNOWN,
  CANCELLED: status.CANCELLED,
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
  [status.PERMISSION_DENIED, ErrorCode.PERMISSION_DENIED],
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
    return { code: toStatus[err.code], details: truncateMessage(err.message, MAX_STATUS_MESSAGE_BYTES), metadata };
  }
  metadata.set('stowage-code', ErrorCode.INTERNAL);
  return { code: status.INTERNAL, details: truncateMessage(`internal error: ${messageOf(err)}`, MAX_STATUS_MESSAGE_BYTES), metadata };
}

/** Client side: a failed call becomes the StowageError the server threw; `tls`: how the client connects (for handshake failures). */
export function fromGrpcError(err: unknown, server: string, tls?: ClientTlsMode): StowageError {
  if (err instanceof StowageError) return err;
  const e = err as Partial<ServiceError>;
  if (typeof e.code !== 'number') return new StowageError(ErrorCode.INTERNAL, messageOf(err));
  const sent = e.metadata?.get('stowage-code')[0];
  const code = isErrorCode(sent) ? sent : (fromStatus.get(e.code) ?? ErrorCode.INTERNAL);
  // A server is trusted no more than its input: its message is cut like ours.
  const details = truncateMessage(e.details ?? messageOf(err), MAX_STATUS_MESSAGE_BYTES);
  if (sent === undefined && e.code === status.UNAVAILABLE) {
    const handshake = tlsFailure(details, server, tls);
    if (handshake) return errorForCode(code, handshake);
    return errorForCode(
      code,
      `stowage server at ${server} is unreachable (${details.replace(/\.?\s*Resolution note:\s*$/, '')}); start it with: stowage serve, or set STOWAGE_SERVER`,
    );
  }
  // Deadlines are set by the client (connection.ts), whose interceptor names the call and the time allowed.
  if (sent === undefined && e.code === status.DEADLINE_EXCEEDED) {
    return errorForCode(code, `stowage server at ${server} did not answer in time: ${details}`);
  }
  // A stream reset by HTTP/2 (a status message grpc-js reports as INTERNAL, with no stowage-code): say whose.
  if (sent === undefined && e.code === status.INTERNAL && /^Received RST_STREAM\b/.test(details)) {
    return errorForCode(code, `the call to stowage server at ${server} was reset (${details})`);
  }
  // grpc-js's own size limits: "Received message larger than max (N vs M)" (either side), "Attempted to send message with a size larger than M" (client).
  const size = sent === undefined && e.code === status.RESOURCE_EXHAUSTED ? /larger than (?:max \((\d+) vs\.? (\d+)\)|(\d+))/.exec(details) : null;
  if (size) {
    const bytes = size[1] === undefined ? '' : ` of ${size[1]} bytes`;
    return errorForCode(
      code,
      `a gRPC message${bytes} is over the limit of ${size[2] ?? size[3]} bytes for one message to or from stowage server at ${server}: send or ask for less in one call`,
    );
  }
  return errorForCode(code, details);
}

/**
 * A connection that failed at its TLS handshake, in words, or undefined for
 * any other UNAVAILABLE. grpc-js reports these (test/tls.test.ts checks each):
 * an untrusted certificate as Node's verify error ("unable to verify the
 * first certificate", "self-signed certificate", ERR_TLS_CERT_ALTNAME_INVALID);
 * a TLS client at a plain server as OpenSSL's "wrong version number"; a
 * client without a certificate at a mutual-TLS server as "alert certificate
 * required"; and a plain client at a TLS server, or a client certificate the
 * server's CA did not sign, only as "Failed to connect" or, for the latter,
 * "read ECONNRESET" (the server closed the connection during its setup;
 * which of the two comes is a race), told apart by how this client connects.
 */
function tlsFailure(details: string, server: string, tls: ClientTlsMode | undefined): string | undefined {
  const at = `cannot connect to ${server}`;
  // The reason without grpc-js's wrapping, OpenSSL's error-code prefix and file position.
  const reason = (/SSL routines:[^:]*:([^:]+)/.exec(details)?.[1] ?? details.replace(/^.*Last error: (Error(\s*\[\w+\])?: )?/s, '').replace(/\s*\(\d{4}-[\d:.TZ-]+\)\s*$/, ''))
    .replace(/\.?\s*Resolution note:\s*$/, '')
    .trim();
  if (/ERR_TLS_CERT_ALTNAME_INVALID|does not match certificate's altnames/.test(details)) {
    return `${at}: the server's TLS certificate is not trusted: it is not made out for the name or address connected to (${reason}); connect by a name it holds, or make it for this one (stowage certs create --host NAME)`;
  }
  if (/unable to verify|self[- ]signed certificate|unable to get (local )?issuer certificate|certificate has expired|certificate is not yet valid|CERT_/i.test(details)) {
    return `${at}: the server's TLS certificate is not trusted (${reason}); give its CA with --tls-ca or STOWAGE_TLS_CA`;
  }
  if (/wrong version number|packet length too long|http request/i.test(details)) {
    return `${at}: this client speaks TLS (--tls-ca, STOWAGE_TLS_CA or STOWAGE_TLS) but the server does not (${reason}); drop those, or start the server with --tls-cert and --tls-key`;
  }
  if (/certificate required|alert (bad|unknown|unsupported) certificate|alert unknown ca/i.test(details)) {
    return `${at}: the server requires a client certificate signed by its CA (mutual TLS) and refused this client (${reason}); give one with --tls-client-cert and --tls-client-key, or STOWAGE_TLS_CLIENT_CERT and STOWAGE_TLS_CLIENT_KEY`;
  }
  const closed = /Failed to connect/.test(details);
  const reset = /No connection established/.test(details) && /ECONNRESET|socket disconnected before secure TLS|socket hang up/.test(details);
  if (!closed && !reset) return undefined;
  const how = closed ? 'Failed to connect' : reason;
  if (tls === 'client-cert' || (tls === 'tls' && reset)) {
    const refused = tls === 'client-cert' ? 'whose client certificate its CA did not sign: give one it signed' : 'without a client certificate: give one';
    return `${at}: the server closed the TLS connection during its setup (${how}); a server with mutual TLS closes those ${refused} with --tls-client-cert and --tls-client-key`;
  }
  return (
    `${at}: the server closed the connection during its setup (${how}); ` +
    'a server with TLS closes plain connections (give its CA with --tls-ca or STOWAGE_TLS_CA, or STOWAGE_TLS=1 for the system store)' +
    (tls === 'tls' ? ', and one with mutual TLS those without a client certificate (give one with --tls-client-cert and --tls-client-key)' : '')
  );
}

export interface OpErrorMessage {
  code: string;
  message: string;
}

/** Server side: a failed operation inside a batch, reported without failing the batch. */
export function toOpError(err: unknown): OpErrorMessage {
  if (err instanceof StowageError) return { code: err.code, message: truncateMessage(err.message, MAX_STATUS_MESSAGE_BYTES) };
  return { code: ErrorCode.INTERNAL, message: truncateMessage(`internal error: ${messageOf(err)}`, MAX_STATUS_MESSAGE_BYTES) };
}

/** Client side: the StowageError a batch reported for one operation. */
export function fromOpError(e: OpErrorMessage): StowageError {
  const code = isErrorCode(e.code) ? e.code : ErrorCode.INTERNAL;
  return errorForCode(code, truncateMessage(e.message, MAX_STATUS_MESSAGE_BYTES));
}
