/**
 * `stowage certs create`: a self-signed CA and the certificates of a private
 * cluster signed by it: one server certificate (its names: the hosts given,
 * plus localhost and 127.0.0.1) and, optionally, one client certificate for
 * mutual TLS.
 *
 * Keys are RSA 2048, made by node:crypto (native, fast); node-forge builds
 * and signs the X.509 certificates (no hand-written ASN.1 here). Every file
 * is checked for before any is written: without `force`, an existing file
 * refuses the whole run and nothing is written. Keys are written 0600,
 * certificates 0644.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import forge from 'node-forge';
import { AlreadyExistsError, InvalidArgumentError } from '../common/errors.js';

export interface CertsOptions {
  dir: string;
  /** Names clients reach the server by (DNS names or IP addresses), besides localhost and 127.0.0.1. */
  hosts?: readonly string[];
  /** Days every certificate is valid (default 365). */
  days?: number;
  /** Also make a client certificate with this common name (for --tls-client-ca). */
  client?: string;
  /** Overwrite files that exist. */
  force?: boolean;
}

export interface CreatedFile {
  path: string;
  what: string;
  mode: number;
}

export const DEFAULT_CERT_DAYS = 365;
const ALWAYS = ['localhost', '127.0.0.1'];

interface Pair {
  key: forge.pki.rsa.PrivateKey;
  publicKey: forge.pki.rsa.PublicKey;
  keyPem: string;
}

function keyPair(): Pair {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const key = forge.pki.privateKeyFromPem(keyPem) as forge.pki.rsa.PrivateKey;
  return { key, publicKey: forge.pki.setRsaPublicKey(key.n, key.e), keyPem };
}

function newCertificate(subject: Pair, cn: string, days: number): forge.pki.Certificate {
  const cert = forge.pki.createCertificate();
  cert.publicKey = subject.publicKey;
  const serial = randomBytes(16);
  serial[0] = serial[0]! & 0x7f; // a positive serial number
  cert.serialNumber = serial.toString('hex');
  const now = Date.now();
  // A minute back: a peer whose clock is a little behind still accepts it.
  cert.validity.notBefore = new Date(now - 60_000);
  cert.validity.notAfter = new Date(now + days * 86_400_000);
  cert.setSubject([{ name: 'commonName', value: cn }, { name: 'organizationName', value: 'stowage' }]);
  return cert;
}

function sign(cert: forge.pki.Certificate, issuer: forge.pki.Certificate, issuerKey: Pair): string {
  cert.setIssuer(issuer.subject.attributes);
  cert.sign(issuerKey.key, forge.md.sha256.create());
  return forge.pki.certificateToPem(cert);
}

/** The server certificate's subject alternative names: the given hosts, localhost and 127.0.0.1, once each. */
export function serverNames(hosts: readonly string[]): string[] {
  for (const h of hosts) {
    if (!isIP(h) && !/^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$/.test(h)) {
      throw new InvalidArgumentError(`--host ${JSON.stringify(h)}: give a DNS name or an IP address`);
    }
  }
  return [...new Set([...hosts, ...ALWAYS])];
}

/** Writes ca.pem, ca-key.pem, server.pem, server-key.pem (and client.pem, client-key.pem) into `dir`. */
export function createCerts(opts: CertsOptions): CreatedFile[] {
  const days = opts.days ?? DEFAULT_CERT_DAYS;
  if (!Number.isInteger(days) || days < 1) throw new InvalidArgumentError(`--days ${days}: give a whole number of days, 1 or more`);
  const names = serverNames(opts.hosts ?? []);
  if (opts.client !== undefined && !/^[\x21-\x7e][\x20-\x7e]{0,63}$/.test(opts.client)) {
    throw new InvalidArgumentError(`--client ${JSON.stringify(opts.client)}: give a name of 1 to 64 printable ASCII characters`);
  }
  const files = [
    { name: 'ca.pem', what: 'CA certificate: clients trust it (--tls-ca); mutual TLS servers check clients with it (--tls-client-ca)', mode: 0o644 },
    { name: 'ca-key.pem', what: 'CA key: signs certificates; keep it off the servers', mode: 0o600 },
    { name: 'server.pem', what: `server certificate for ${names.join(', ')} (--tls-cert)`, mode: 0o644 },
    { name: 'server-key.pem', what: 'server key (--tls-key)', mode: 0o600 },
    ...(opts.client === undefined
      ? []
      : [
          { name: 'client.pem', what: `client certificate for ${opts.client} (--tls-client-cert)`, mode: 0o644 },
          { name: 'client-key.pem', what: 'client key (--tls-client-key)', mode: 0o600 },
        ]),
  ];
  const existing = files.map((f) => join(opts.dir, f.name)).filter((p) => existsSync(p));
  if (existing.length && !opts.force) {
    throw new AlreadyExistsError(`${existing.join(', ')} already exist${existing.length === 1 ? 's' : ''}: give --force to replace them (clients that trust the old CA will no longer connect), or another --dir`);
  }

  const caKey = keyPair();
  const ca = newCertificate(caKey, 'stowage CA', days);
  ca.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  const caPem = sign(ca, ca, caKey);

  const leaf = (pair: Pair, cn: string, usage: { serverAuth?: boolean; clientAuth?: boolean }, altNames: string[]) => {
    const cert = newCertificate(pair, cn, days);
    cert.setExtensions([
      { name: 'basicConstraints', cA: false, critical: true },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
      { name: 'extKeyUsage', ...usage },
      ...(altNames.length ? [{ name: 'subjectAltName', altNames: altNames.map((n) => (isIP(n) ? { type: 7, ip: n } : { type: 2, value: n })) }] : []),
      { name: 'subjectKeyIdentifier' },
      { name: 'authorityKeyIdentifier', keyIdentifier: ca.generateSubjectKeyIdentifier().getBytes() },
    ]);
    return sign(cert, ca, caKey);
  };
  const serverKey = keyPair();
  const contents: Record<string, string> = {
    'ca.pem': caPem,
    'ca-key.pem': caKey.keyPem,
    'server.pem': leaf(serverKey, names[0]!, { serverAuth: true }, names),
    'server-key.pem': serverKey.keyPem,
  };
  if (opts.client !== undefined) {
    const clientKey = keyPair();
    contents['client.pem'] = leaf(clientKey, opts.client, { clientAuth: true }, []);
    contents['client-key.pem'] = clientKey.keyPem;
  }

  mkdirSync(opts.dir, { recursive: true, mode: 0o700 });
  return files.map((f) => {
    const path = join(opts.dir, f.name);
    writeFileSync(path, contents[f.name]!, { mode: f.mode, flag: opts.force ? 'w' : 'wx' });
    // An overwritten file keeps its old mode; and the umask may have taken bits off a new one.
    chmodSync(path, f.mode);
    return { path, what: f.what, mode: f.mode };
  });
}
