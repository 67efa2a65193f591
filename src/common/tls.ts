/**
 * TLS for the gRPC port (and the dashboard beside it): what a server loads
 * from --tls-cert/--tls-key/--tls-client-ca, and what a client trusts and
 * presents.
 *
 * A client speaks TLS when it is given a CA (tlsCa, --tls-ca,
 * STOWAGE_TLS_CA), a client certificate, or `tls: true` (STOWAGE_TLS=1: the
 * system trust store); otherwise it speaks plain gRPC, as the embedded
 * default on 127.0.0.1 does. With --tls-client-ca the server requires a
 * certificate signed by that CA from every client: grpc-js checks client
 * certificates all-or-nothing per port (with checking off it would not verify
 * a presented one at all), so there is no "only when presented".
 *
 * Files are read once, at start; a file that cannot be read or parsed, or a
 * key that does not match its certificate, is an InvalidArgumentError naming
 * the file (exit 2 in the CLI).
 */
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { InvalidArgumentError, messageOf } from './errors.js';

/** What a client needs to speak TLS; undefined: plain gRPC. */
export interface ClientTls {
  /** PEM of the CA(s) to trust; undefined: the system store. */
  ca?: Buffer;
  /** PEM of the client certificate and its key, for a server with --tls-client-ca. */
  cert?: Buffer;
  key?: Buffer;
}

/** How a client connects, for the messages of failed handshakes (grpc-errors.ts). */
export type ClientTlsMode = 'plain' | 'tls' | 'client-cert';

export function clientTlsMode(tls: ClientTls | undefined): ClientTlsMode {
  return !tls ? 'plain' : tls.cert ? 'client-cert' : 'tls';
}

/** What a server serves: its certificate (chain) and key, and the CA client certificates must chain to. */
export interface ServerTls {
  cert: Buffer;
  key: Buffer;
  /** Mutual TLS: every client must present a certificate signed by this CA. */
  clientCa?: Buffer;
}

/** Where a client's TLS settings come from: explicit options, else the environment (see resolveClientConfig). */
export interface ClientTlsSettings {
  /** Speak TLS with the system trust store (STOWAGE_TLS=1) when no CA is given. */
  tls?: boolean;
  /** PEM text or a file path of the CA to trust (STOWAGE_TLS_CA, --tls-ca). */
  tlsCa?: string;
  /** PEM text or file path of a client certificate, and of its key (STOWAGE_TLS_CLIENT_CERT/KEY). */
  tlsClientCert?: string;
  tlsClientKey?: string;
}

/** True for PEM text, false for a path. */
function isPem(value: string): boolean {
  return value.includes('-----BEGIN ');
}

/** A path made absolute (child processes may run elsewhere); PEM text as it is. */
export function absolutePem(value: string): string {
  return isPem(value) ? value : resolve(value);
}

/** PEM text given directly or read from a file; `what` names the setting in errors. */
export function readPem(what: string, value: string): { pem: Buffer; name: string } {
  if (isPem(value)) return { pem: Buffer.from(value), name: `${what} (PEM text)` };
  try {
    return { pem: readFileSync(value), name: value };
  } catch (err) {
    throw new InvalidArgumentError(`${what} ${value}: cannot read it (${(err as NodeJS.ErrnoException).code ?? messageOf(err)})`);
  }
}

function parseCertificate(what: string, name: string, pem: Buffer): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch (err) {
    throw new InvalidArgumentError(`${what} ${name}: not a PEM certificate (${messageOf(err)})`);
  }
}

function parseKey(what: string, name: string, pem: Buffer): KeyObject {
  try {
    return createPrivateKey(pem);
  } catch (err) {
    throw new InvalidArgumentError(`${what} ${name}: not a PEM private key (${messageOf(err)})`);
  }
}

/** Reads and checks a certificate and its key: both parse, and the key is the certificate's. */
function certAndKey(certFlag: string, certValue: string, keyFlag: string, keyValue: string): { cert: Buffer; key: Buffer } {
  const cert = readPem(certFlag, certValue);
  const key = readPem(keyFlag, keyValue);
  const x509 = parseCertificate(certFlag, cert.name, cert.pem);
  const k = parseKey(keyFlag, key.name, key.pem);
  if (!x509.checkPrivateKey(k)) {
    throw new InvalidArgumentError(`${keyFlag} ${key.name} is not the key of ${certFlag} ${cert.name}: give the key the certificate was made for`);
  }
  return { cert: cert.pem, key: key.pem };
}

/** The server's TLS from its flags; undefined when neither --tls-cert nor --tls-key is given. */
export function loadServerTls(flags: { cert?: string; key?: string; clientCa?: string }): ServerTls | undefined {
  if (!flags.cert && !flags.key) {
    if (flags.clientCa) throw new InvalidArgumentError('--tls-client-ca needs --tls-cert and --tls-key too (mutual TLS is TLS first)');
    return undefined;
  }
  if (!flags.cert || !flags.key) throw new InvalidArgumentError('give --tls-cert and --tls-key together (or STOWAGE_TLS_CERT and STOWAGE_TLS_KEY)');
  const { cert, key } = certAndKey('--tls-cert', flags.cert, '--tls-key', flags.key);
  if (!flags.clientCa) return { cert, key };
  const ca = readPem('--tls-client-ca', flags.clientCa);
  parseCertificate('--tls-client-ca', ca.name, ca.pem);
  return { cert, key, clientCa: ca.pem };
}

/** The client's TLS from its settings; undefined: plain gRPC. */
export function loadClientTls(s: ClientTlsSettings): ClientTls | undefined {
  if (!!s.tlsClientCert !== !!s.tlsClientKey) {
    throw new InvalidArgumentError('give a TLS client certificate and its key together (--tls-client-cert and --tls-client-key, or STOWAGE_TLS_CLIENT_CERT and STOWAGE_TLS_CLIENT_KEY)');
  }
  const client = s.tlsClientCert && s.tlsClientKey ? certAndKey('TLS client certificate', s.tlsClientCert, 'TLS client key', s.tlsClientKey) : undefined;
  let ca: Buffer | undefined;
  if (s.tlsCa) {
    const read = readPem('TLS CA', s.tlsCa);
    parseCertificate('TLS CA', read.name, read.pem);
    ca = read.pem;
  }
  if (!s.tls && !ca && !client) return undefined;
  return { ca, ...client };
}

/** STOWAGE_TLS: 1/true/yes turn TLS on, 0/false/no/empty leave it off. */
export function tlsFlag(value: string | undefined): boolean | undefined {
  if (value === undefined || value === '') return undefined;
  if (/^(1|true|yes|on)$/i.test(value)) return true;
  if (/^(0|false|no|off)$/i.test(value)) return false;
  throw new InvalidArgumentError(`STOWAGE_TLS=${value}: use 1 (TLS with the system trust store, or the CA of STOWAGE_TLS_CA) or 0`);
}
