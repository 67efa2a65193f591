/**
 * Where clients find the server and its token. In order: explicit options,
 * STOWAGE_SERVER / STOWAGE_TOKEN, <data-dir>/token (the data dir of a server
 * started on this host: STOWAGE_DATA_DIR, else ./.stowage), then
 * ~/.config/stowage/config.json ({"server": "host:port", "token": "..."}). And
 * how long a client waits for an answer: explicit options, then
 * STOWAGE_TIMEOUT / STOWAGE_TRANSFER_TIMEOUT. And whether it speaks TLS
 * (common/tls.ts): explicit options, then STOWAGE_TLS_CA, STOWAGE_TLS,
 * STOWAGE_TLS_CLIENT_CERT / STOWAGE_TLS_CLIENT_KEY.
 *
 * A client knows a local server's data dir only when that dir's token file
 * holds the very token the client uses: then, and only then, it may move
 * chunk bytes itself through file:// URLs into `<data-dir>/store`.
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseDuration } from './duration.js';
import { InvalidArgumentError, UnauthenticatedError } from './errors.js';
import { tlsFlag, type ClientTlsSettings } from './tls.js';

export const DEFAULT_PORT = 7420;
/** `stowage serve --http` without a port: the dashboard and /metrics. */
export const DEFAULT_HTTP_PORT = 7421;
export const DEFAULT_HOST = '127.0.0.1';
export const DEFAULT_SERVER = `${DEFAULT_HOST}:${DEFAULT_PORT}`;
export const DEFAULT_DATA_DIR = '.stowage';
export const TOKEN_FILE = 'token';

export interface ClientConfig extends ClientTlsSettings {
  server: string;
  token: string;
  /**
   * The data dir of the server when it runs on this host (absolute), whose
   * store's chunk files the client may read and write itself; undefined when
   * not known, and then file:// URLs from the server are never used.
   */
  dataDir?: string;
}

interface UserConfigFile {
  server?: string;
  token?: string;
}

export function userConfigPath(): string {
  return join(process.env.XDG_CONFIG_HOME ?? join(homedir(), '.config'), 'stowage', 'config.json');
}

function readUserConfig(): UserConfigFile {
  try {
    return JSON.parse(readFileSync(userConfigPath(), 'utf8')) as UserConfigFile;
  } catch {
    return {};
  }
}

function readTokenFile(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

export function resolveClientConfig(opts: Partial<ClientConfig> = {}): ClientConfig {
  const user = readUserConfig();
  const server = opts.server ?? process.env.STOWAGE_SERVER ?? user.server ?? DEFAULT_SERVER;
  const localDir = opts.dataDir ?? (process.env.STOWAGE_DATA_DIR || DEFAULT_DATA_DIR);
  const localToken = readTokenFile(join(localDir, TOKEN_FILE));
  const token = opts.token ?? process.env.STOWAGE_TOKEN ?? localToken ?? user.token;
  if (!token) {
    throw new UnauthenticatedError(
      `no token for stowage server ${server}: set STOWAGE_TOKEN (the server writes one to <data-dir>/token on first start), or put {"token": "..."} in ${userConfigPath()}`,
    );
  }
  return {
    server,
    token,
    dataDir: localToken === token ? resolve(localDir) : undefined,
    tls: opts.tls ?? tlsFlag(process.env.STOWAGE_TLS),
    tlsCa: opts.tlsCa ?? (process.env.STOWAGE_TLS_CA || undefined),
    tlsClientCert: opts.tlsClientCert ?? (process.env.STOWAGE_TLS_CLIENT_CERT || undefined),
    tlsClientKey: opts.tlsClientKey ?? (process.env.STOWAGE_TLS_CLIENT_KEY || undefined),
  };
}

/** Default time allowed for a call that reads or changes metadata (names, listings, dict and queue operations). */
export const DEFAULT_TIMEOUT_MS = 60_000;
/** Default time allowed for a call that moves data or does work in proportion to it (blob upload and read, commit, index rebuild). */
export const DEFAULT_TRANSFER_TIMEOUT_MS = 10 * 60_000;

export interface ClientTimeouts {
  /** Deadline of a metadata call, and the margin a blocking queue operation gets beyond its own wait. */
  timeoutMs: number;
  /** Deadline of a data call. */
  transferTimeoutMs: number;
}

export function resolveClientTimeouts(opts: Partial<ClientTimeouts> = {}): ClientTimeouts {
  return {
    timeoutMs: timeout('timeoutMs', opts.timeoutMs) ?? timeout('STOWAGE_TIMEOUT', process.env.STOWAGE_TIMEOUT) ?? DEFAULT_TIMEOUT_MS,
    transferTimeoutMs:
      timeout('transferTimeoutMs', opts.transferTimeoutMs) ??
      timeout('STOWAGE_TRANSFER_TIMEOUT', process.env.STOWAGE_TRANSFER_TIMEOUT) ??
      DEFAULT_TRANSFER_TIMEOUT_MS,
  };
}

function timeout(what: string, value: number | string | undefined): number | undefined {
  if (value === undefined || value === '') return undefined;
  const ms = parseDuration(what, value);
  if (ms < 1) throw new InvalidArgumentError(`${what} must be more than 0 (a call always has a deadline)`);
  return ms;
}
