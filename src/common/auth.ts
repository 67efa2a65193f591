/** The admin token: created by the server on first start (checked with the scoped ones: tokens.ts). */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TOKEN_FILE } from './config.js';

export interface ServerToken {
  token: string;
  path: string;
  created: boolean;
}

/** Reads <dataDir>/token, creating it (mode 0600) when absent. */
export function loadOrCreateToken(dataDir: string): ServerToken {
  const path = join(dataDir, TOKEN_FILE);
  try {
    const token = readFileSync(path, 'utf8').trim();
    if (token) return { token, path, created: false };
  } catch {
    // absent: create below
  }
  mkdirSync(dataDir, { recursive: true });
  const token = `stw_${randomBytes(24).toString('base64url')}`;
  writeFileSync(path, `${token}\n`, { mode: 0o600, flag: 'w' });
  return { token, path, created: true };
}
