/**
 * Where clients find the server and its token. In order: explicit options,
 * STOWAGE_SERVER / STOWAGE_TOKEN, <data-dir>/token (the data dir of a server
 * started on this host: STOWAGE_DATA_DIR, else ./.stowage), then
 * ~/.config/stowage/config.json ({"server": "host:port", "token": "..."}).
 *
 * A client knows a local server's data dir only when that dir's token file
 * holds the very token the client uses: then, and only then, it may move
 * chunk bytes itself through file:// URLs into `<data-dir>/store`.
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { UnauthenticatedError } from './errors.js';

export const DEFAULT_PORT = 7420;
export const DEFAULT_HOST = '127.0.0.1';
export const DEFAULT_SERVER = `${DEFAULT_HOST}:${DEFAULT_PORT}`;
export const DEFAULT_DATA_DIR = '.stowage';
export const TOKEN_FILE = 'token';

export interface ClientConfig {
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
  return { server, token, dataDir: localToken === token ? resolve(localDir) : undefined };
}
