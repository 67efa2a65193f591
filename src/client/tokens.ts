/**
 * Scoped tokens (the model: common/scopes.ts). Only the admin token may call
 * these; `stowage token create`, `list` and `revoke` do.
 */
import { parseScopes } from '../common/scopes.js';
import type { TokenInfo } from '../gen/stowage/v1/token.js';
import { defaultConnection, type Connection } from './connection.js';

export type { TokenInfo };

export interface CreateTokenOptions {
  /** SERVICE:PATTERN:ACCESS each, e.g. volume:datasets-*:read. */
  scopes: string[];
  /** How long the token lasts (over 0, at most 366 days). */
  ttlMs: number;
  description?: string;
  connection?: Connection;
}

/** Issues a token. The returned `token` is the only copy of its secret: the server keeps a hash. */
export async function createToken(opts: CreateTokenOptions): Promise<{ token: string; info: TokenInfo }> {
  // Checked here too, so that a typo fails before a call (the server checks again).
  parseScopes(opts.scopes);
  const conn = opts.connection ?? defaultConnection();
  const res = await conn.unary(conn.tokens.createToken.bind(conn.tokens), {
    scopes: opts.scopes,
    ttlMs: opts.ttlMs,
    description: opts.description ?? '',
  });
  return { token: res.token, info: res.info! };
}

/** Every token issued (revoked and expired ones too), without secrets. */
export async function listTokens(opts: { connection?: Connection } = {}): Promise<TokenInfo[]> {
  const conn = opts.connection ?? defaultConnection();
  return (await conn.unary(conn.tokens.listTokens.bind(conn.tokens), {})).tokens;
}

/** Revokes a token by id: the next call made with it is refused. */
export async function revokeToken(id: string, opts: { connection?: Connection } = {}): Promise<TokenInfo> {
  const conn = opts.connection ?? defaultConnection();
  return conn.unary(conn.tokens.revokeToken.bind(conn.tokens), { id });
}
