/** The TokenService gRPC handlers: issue, list and revoke scoped tokens (admin token only: see method-scopes.ts). */
import { authCheck, unary } from '../common/grpc-server.js';
import type { Logger } from '../common/logger.js';
import type { TokenInfo, TokenStore } from '../common/tokens.js';
import type { TokenInfo as TokenInfoMessage, TokenServiceServer } from '../gen/stowage/v1/token.js';

const message = (i: TokenInfo): TokenInfoMessage => ({ ...i });

export function tokenService(tokens: TokenStore, log: Logger): TokenServiceServer {
  const check = authCheck(tokens);
  return {
    createToken: unary(check, log, async (r) => {
      const { token, info } = await tokens.create(r.scopes, r.ttlMs, r.description);
      // The id only: the secret never reaches a log.
      log.info({ token: info.id, scopes: info.scopes, expiresAtMs: info.expiresAtMs }, 'token created');
      return { token, info: message(info) };
    }),
    listTokens: unary(check, log, () => ({ tokens: tokens.list().map(message) })),
    revokeToken: unary(check, log, async (r) => {
      const info = await tokens.revoke(r.id);
      log.info({ token: info.id }, 'token revoked');
      return message(info);
    }),
  };
}
