/** `stowage token create|list|revoke`: scoped tokens, made and managed with the admin token. */
import type { Command } from 'commander';
import { createToken, listTokens, revokeToken, type TokenInfo } from '../client/index.js';
import { parseDuration } from '../common/duration.js';
import { printJson } from './output.js';

const iso = (ms: number) => new Date(ms).toISOString();

function state(t: TokenInfo, now: number): string {
  if (t.revokedAtMs) return `revoked ${iso(t.revokedAtMs)}`;
  return t.expiresAtMs <= now ? `expired ${iso(t.expiresAtMs)}` : `expires ${iso(t.expiresAtMs)}`;
}

export function register(program: Command): void {
  const token = program.command('token').description('scoped, expiring tokens (made with the admin token: <data-dir>/token)');

  token
    .command('create')
    .description('issue a token limited to SCOPEs (SERVICE:PATTERN:ACCESS, e.g. volume:datasets-*:read); printed once, stored only hashed')
    .requiredOption('--scope <scope>', 'SERVICE:PATTERN:ACCESS; SERVICE volume|dict|queue|bridge|*, PATTERN a name or prefix*, ACCESS read|write (repeat for more)', (v: string, prev: string[] = []) => [...prev, v])
    .requiredOption('--ttl <duration>', 'how long it lasts, e.g. 12h, 30d (at most 366d)')
    .option('--description <text>', 'what it is for, shown by token list')
    .option('--json', 'print JSON')
    .action(async (flags: { scope: string[]; ttl: string; description?: string; json?: boolean }) => {
      const { token: t, info } = await createToken({
        scopes: flags.scope,
        ttlMs: parseDuration('--ttl', flags.ttl),
        description: flags.description,
      });
      if (flags.json) return printJson({ token: t, ...info });
      console.log(t);
      console.error(`token ${info.id}: ${info.scopes.join(' ')}, expires ${iso(info.expiresAtMs)} (shown once: the server keeps only a hash)`);
    });

  token
    .command('list')
    .description('every token issued: id, scopes, expiry, state (never a secret)')
    .option('--json', 'print JSON')
    .action(async (flags: { json?: boolean }) => {
      const tokens = await listTokens();
      if (flags.json) return printJson(tokens);
      const now = Date.now();
      for (const t of tokens) {
        console.log([t.id, t.scopes.join(','), state(t, now), iso(t.createdAtMs), t.description].join('\t'));
      }
    });

  token
    .command('revoke <id>')
    .description('revoke a token by id: its next call is refused')
    .action(async (id: string) => {
      const t = await revokeToken(id);
      console.log(`revoked token ${t.id}`);
    });
}
