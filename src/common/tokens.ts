/**
 * Scoped tokens: issued by the admin token, kept hashed in <data-dir>/tokens.json.
 *
 * A token is `stw_<id>_<secret>`: 12 hex characters of id (how the server
 * finds the record, and what logs and refusals name) and 32 random bytes of
 * secret (base64url). Only SHA-256(secret) is stored. A plain hash is enough
 * here, where a password would need a slow one: the secret is 256 random bits,
 * so no guessing or dictionary attack on a leaked hash is possible, and a
 * fast hash keeps the check cheap on every call. The check compares hashes
 * with timingSafeEqual (equal lengths by construction). The admin token (the
 * data dir's `token` file, see auth.ts) is compared the same way.
 *
 * The file is rewritten whole and atomically (temporary file, fsync, rename)
 * on create and revoke; the server holds the data dir's lock, so it is the
 * only writer, and it keeps the records in memory: a revocation takes effect
 * on the very next call. Revoked records are kept (marked) so that a refusal
 * can say "revoked" rather than "unknown".
 *
 * With several servers sharing a bucket, the records live where the heads
 * do (`share`): in Redis (server/redis-tokens.ts) or in the bucket
 * (server/store-tokens.ts). Each server keeps a copy in memory, so a check
 * never waits on the network: a token created or revoked on one server is
 * known to the others when Redis tells them (a published message, within
 * milliseconds), and at the latest at their next full reload
 * (SHARED_RELOAD_MS; the bucket tells nobody, so there only the reload).
 * tokens.json is then not written; records it held are copied into the
 * shared records once, when the server first shares.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { FailedPreconditionError, InvalidArgumentError, NotFoundError, UnauthenticatedError, messageOf } from './errors.js';
import { formatScope, parseScopes, type Principal, type Scope } from './scopes.js';

export const TOKENS_FILE = 'tokens.json';
/** Longest life of a token: a year. */
export const MAX_TOKEN_TTL_MS = 366 * 86_400_000;
export const MAX_DESCRIPTION_CHARS = 200;

const TOKEN = /^stw_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$/;

/** How often a server sharing its records reloads them all, in case a change notice was lost. */
export const SHARED_RELOAD_MS = 5000;

/** Where records live when several servers share them. */
export interface SharedTokenRecords {
  /** Every record. */
  all(): Promise<TokenRecord[]>;
  /** Adds a record unless one with its id exists (true: added). */
  add(record: TokenRecord): Promise<boolean>;
  /** Replaces a record and tells the other servers. */
  put(record: TokenRecord): Promise<void>;
  /** Calls `changed` with a record's id whenever any server changes it. */
  watch(changed: (id: string) => void): Promise<void>;
  get(id: string): Promise<TokenRecord | undefined>;
  close(): Promise<void>;
}

export interface TokenRecord {
  id: string;
  /** Hex SHA-256 of the secret. */
  hash: string;
  scopes: string[];
  createdAtMs: number;
  expiresAtMs: number;
  description: string;
  /** 0 while in force. */
  revokedAtMs: number;
}

/** A token as ListTokens shows it: everything but the hash. */
export type TokenInfo = Omit<TokenRecord, 'hash'>;

/** Checks the `authorization` header of a call; throws UnauthenticatedError saying why a token is refused. */
export interface Authenticator {
  authenticate(header: string | undefined): Principal;
}

const sha256 = (s: string): Buffer => createHash('sha256').update(s).digest();

/** How a token is named in messages and logs: its id, never its secret. */
export function tokenLabel(id: string): string {
  return `stw_${id}…`;
}

const NO_TOKEN =
  "missing or wrong token: set STOWAGE_TOKEN to the contents of the server's <data-dir>/token, or to a token made by `stowage token create`";

/** The admin token alone (a service made without a TokenStore, as some tests do). */
export function adminOnly(adminToken: string): Authenticator {
  const want = sha256(adminToken);
  return {
    authenticate(header) {
      const given = bearer(header);
      if (given !== undefined && timingSafeEqual(sha256(given), want)) return { id: 'admin', admin: true, scopes: [] };
      throw new UnauthenticatedError(NO_TOKEN);
    },
  };
}

function bearer(header: string | undefined): string | undefined {
  return header?.startsWith('Bearer ') ? header.slice('Bearer '.length) : undefined;
}

export class TokenStore implements Authenticator {
  private readonly path: string;
  private readonly records = new Map<string, TokenRecord>();
  /** Each record's scopes, parsed once (callGuard authenticates a scoped token on every message). */
  private readonly parsed = new WeakMap<TokenRecord, Scope[]>();
  private readonly admin: Authenticator;
  private shared: SharedTokenRecords | undefined;
  private reload: NodeJS.Timeout | undefined;

  constructor(
    dataDir: string,
    adminToken: string,
    private readonly now: () => number = Date.now,
  ) {
    this.path = join(dataDir, TOKENS_FILE);
    this.admin = adminOnly(adminToken);
    let text: string | undefined;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch {
      // none issued yet
    }
    if (text !== undefined) {
      let tokens: TokenRecord[];
      try {
        ({ tokens } = JSON.parse(text) as { tokens: TokenRecord[] });
        if (!Array.isArray(tokens)) throw new Error('no "tokens" list');
      } catch (err) {
        throw new FailedPreconditionError(`${this.path} is not a token file (${messageOf(err)}): restore it, or remove it to forget every scoped token`);
      }
      for (const r of tokens) this.records.set(r.id, r);
    }
  }

  /**
   * Keeps the records in `shared` from now on (see the header): copies in
   * the ones of tokens.json it lacks, loads them all, and follows changes.
   */
  async share(shared: SharedTokenRecords, onError: (err: unknown) => void, reloadMs = SHARED_RELOAD_MS): Promise<void> {
    for (const r of this.records.values()) await shared.add(r);
    this.shared = shared;
    await shared.watch((id) => {
      shared.get(id).then((r) => r && this.records.set(r.id, r), onError);
    });
    await this.reloadAll();
    this.reload = setInterval(() => this.reloadAll().catch(onError), reloadMs).unref();
  }

  async close(): Promise<void> {
    if (this.reload) clearInterval(this.reload);
    await this.shared?.close();
  }

  private async reloadAll(): Promise<void> {
    for (const r of await this.shared!.all()) this.records.set(r.id, r);
  }

  authenticate(header: string | undefined): Principal {
    const given = bearer(header);
    const m = given === undefined ? null : TOKEN.exec(given);
    if (!m) return this.admin.authenticate(header);
    const id = m[1]!;
    const r = this.records.get(id);
    // Compared even for an unknown id, so that the time taken does not tell ids apart.
    const ok = timingSafeEqual(sha256(m[2]!), r ? Buffer.from(r.hash, 'hex') : Buffer.alloc(32));
    if (!r || !ok) throw new UnauthenticatedError(`unknown token ${tokenLabel(id)}: ${NO_TOKEN}`);
    if (r.revokedAtMs) throw new UnauthenticatedError(`token ${tokenLabel(id)} was revoked at ${new Date(r.revokedAtMs).toISOString()}`);
    if (this.now() >= r.expiresAtMs) {
      throw new UnauthenticatedError(`token ${tokenLabel(id)} expired at ${new Date(r.expiresAtMs).toISOString()}: ask for a new one (stowage token create)`);
    }
    let scopes = this.parsed.get(r);
    if (!scopes) this.parsed.set(r, (scopes = parseScopes(r.scopes)));
    return { id, admin: false, scopes };
  }

  /** Issues a token; the returned string is the only copy of its secret. */
  async create(scopeTexts: readonly string[], ttlMs: number, description = ''): Promise<{ token: string; info: TokenInfo }> {
    const scopes: Scope[] = parseScopes(scopeTexts);
    if (!Number.isSafeInteger(ttlMs) || ttlMs <= 0 || ttlMs > MAX_TOKEN_TTL_MS) {
      throw new InvalidArgumentError(`token ttl ${ttlMs} ms: give a duration over 0 and at most 366d (e.g. --ttl 30d)`);
    }
    if (description.length > MAX_DESCRIPTION_CHARS) {
      throw new InvalidArgumentError(`token description of ${description.length} characters is over the limit of ${MAX_DESCRIPTION_CHARS}`);
    }
    let id: string;
    do id = randomBytes(6).toString('hex');
    while (this.records.has(id));
    const secret = randomBytes(32).toString('base64url');
    const createdAtMs = this.now();
    const record: TokenRecord = {
      id,
      hash: sha256(secret).toString('hex'),
      scopes: scopes.map(formatScope),
      createdAtMs,
      expiresAtMs: createdAtMs + ttlMs,
      description,
      revokedAtMs: 0,
    };
    if (this.shared) {
      if (!(await this.shared.add(record))) throw new FailedPreconditionError(`token id ${id} was just taken by another server: create the token again`);
      this.records.set(id, record);
    } else {
      this.records.set(id, record);
      try {
        this.save();
      } catch (err) {
        this.records.delete(id);
        throw err;
      }
    }
    return { token: `stw_${id}_${secret}`, info: infoOf(record) };
  }

  list(): TokenInfo[] {
    return [...this.records.values()].sort((a, b) => a.createdAtMs - b.createdAtMs).map(infoOf);
  }

  /** Revokes a token by id (or by the whole token string, of which only the id is read). */
  async revoke(idOrToken: string): Promise<TokenInfo> {
    const id = TOKEN.exec(idOrToken)?.[1] ?? idOrToken.replace(/^stw_/, '').replace(/…$/, '');
    const r = this.shared ? ((await this.shared.get(id)) ?? this.records.get(id)) : this.records.get(id);
    if (!r) throw new NotFoundError(`no token with id ${JSON.stringify(id.slice(0, 40))}: see stowage token list`);
    if (this.shared) {
      if (!r.revokedAtMs) {
        const revoked = { ...r, revokedAtMs: this.now() };
        await this.shared.put(revoked);
        this.records.set(id, revoked);
        return infoOf(revoked);
      }
      return infoOf(r);
    }
    if (!r.revokedAtMs) {
      r.revokedAtMs = this.now();
      try {
        this.save();
      } catch (err) {
        r.revokedAtMs = 0;
        throw err;
      }
    }
    return infoOf(r);
  }

  private save(): void {
    const tmp = `${this.path}.${process.pid}.tmp`;
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, JSON.stringify({ tokens: [...this.records.values()] }, null, 1));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.path);
  }
}

function infoOf(r: TokenRecord): TokenInfo {
  const { hash: _hash, ...info } = r;
  return { ...info, scopes: [...r.scopes] };
}
