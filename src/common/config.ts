/**
 * Where clients find the server and its token. In order: explicit options,
 * STOWAGE_SERVER / STOWAGE_TOKEN, ./.stowage/token (the default data dir of a
 * server started here), then ~/.config/stowage/config.json
 * ({"server": "host:port", "token": "..."}).
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { UnauthenticatedError } from './errors.js';

export const DEFAULT_PORT = 7420;
export const DEFAULT_HOST = '127.0.0.1';
export const DEFAULT_SERVER = `${DEFAULT_HOST}:${DEFAULT_PORT}`;
export const DEFAULT_DATA_DIR = '.stowage';
export const TOKEN_FILE = 'token';

export interface ClientConfig {
  server: string;
  token: string;
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
  const token =
    opts.token ??
    process.env.STOWAGE_TOKEN ??
    readTokenFile(join(DEFAULT_DATA_DIR, TOKEN_FILE)) ??
    user.token;
  if (!token) {
    throw new UnauthenticatedError(
      `no token for stowage server ${server}: set STOWAGE_TOKEN (the server writes one to <data-dir>/token on first start), or put {"token": "..."} in ${userConfigPath()}`,
    );
  }
  return { server, token };
}
