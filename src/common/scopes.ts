/**
 * The scope model of tokens: what a token may touch.
 *
 * A scope is `SERVICE:PATTERN:ACCESS`:
 * - SERVICE is `volume`, `dict`, `queue`, `bridge`, or `*` (all four);
 * - PATTERN is a name, or a prefix followed by `*`: `weights` matches the one
 *   name `weights`, `datasets-*` every name that starts with `datasets-`, `*`
 *   every name. Names allow only `A-Z a-z 0-9 . _ -` (validate.ts checkName),
 *   so a pattern holds only those characters and one trailing `*`: the issue's
 *   `datasets/*` is refused (no name contains `/`) and is written `datasets-*`
 *   or `datasets*`. A prefix matches by plain string comparison, nothing else
 *   (no globbing inside a pattern);
 * - ACCESS is `read` or `write`; write implies read.
 * For the bridge the names are function names (Submit) and schedule names
 * (PutSchedule, DeleteSchedule); see src/server/method-scopes.ts.
 *
 * Invariants (test/token-scopes.test.ts, "scope strings"; the table of
 * methods and its enforcement on a real server: the rest of that file):
 * - parseScope(formatScope(s)) equals s, and formatScope(parseScope(t)) is t
 *   for every valid t; an invalid string throws InvalidArgumentError naming the syntax;
 * - allows() is monotone: adding a scope never takes a permission away;
 * - a write scope allows the read of the same names, never the reverse;
 * - a need with `name: undefined` ("any name") is met by any scope of that
 *   service and access; a need with `all: true` only by a scope whose pattern is `*`.
 */
import { InvalidArgumentError } from './errors.js';
import { quote } from './quote.js';

export const SCOPE_SERVICES = ['volume', 'dict', 'queue', 'bridge'] as const;
export type ScopeService = (typeof SCOPE_SERVICES)[number];
export type Access = 'read' | 'write';

export interface Scope {
  /** One service, or '*' for all of them. */
  service: ScopeService | '*';
  /** A name, or a prefix ending in '*'. */
  pattern: string;
  access: Access;
}

/** What one request needs of its token. */
export interface Need {
  service: ScopeService;
  access: Access;
  /** The name the request touches; undefined when it names none (any scope on the service will do). */
  name?: string;
  /** The request touches every name of the service (only a `SERVICE:*:ACCESS` scope will do). */
  all?: boolean;
  /** Only the admin token may make this request. */
  admin?: boolean;
}

/** Most scopes in one token. */
export const MAX_SCOPES = 32;

export const SCOPE_SYNTAX =
  'a scope is SERVICE:PATTERN:ACCESS, SERVICE one of volume, dict, queue, bridge, *; PATTERN a name or a prefix ending in * (names use A-Z a-z 0-9 . _ -); ACCESS read or write (e.g. volume:datasets-*:read)';

const PATTERN = /^[A-Za-z0-9._-]{0,64}\*?$/;

export function parseScope(text: string): Scope {
  const parts = typeof text === 'string' ? text.split(':') : [];
  const [service, pattern, access] = parts;
  if (
    parts.length !== 3 ||
    !(service === '*' || (SCOPE_SERVICES as readonly string[]).includes(service!)) ||
    !pattern ||
    !PATTERN.test(pattern) ||
    (access !== 'read' && access !== 'write')
  ) {
    throw new InvalidArgumentError(`invalid scope ${quote(String(text))}: ${SCOPE_SYNTAX}`);
  }
  return { service: service as Scope['service'], pattern, access };
}

export function formatScope(s: Scope): string {
  return `${s.service}:${s.pattern}:${s.access}`;
}

/** Parses a token's scopes: at least one, at most MAX_SCOPES, each valid. */
export function parseScopes(texts: readonly string[]): Scope[] {
  if (texts.length === 0) throw new InvalidArgumentError(`a token needs at least one scope: ${SCOPE_SYNTAX}`);
  if (texts.length > MAX_SCOPES) throw new InvalidArgumentError(`a token holds at most ${MAX_SCOPES} scopes, not ${texts.length}`);
  return texts.map(parseScope);
}

export function patternMatches(pattern: string, name: string): boolean {
  return pattern.endsWith('*') ? name.startsWith(pattern.slice(0, -1)) : name === pattern;
}

function meets(s: Scope, need: Need): boolean {
  if (need.admin) return false;
  if (s.service !== '*' && s.service !== need.service) return false;
  if (need.access === 'write' && s.access !== 'write') return false;
  if (need.all) return s.pattern === '*';
  return need.name === undefined || patternMatches(s.pattern, need.name);
}

export function allows(scopes: readonly Scope[], need: Need): boolean {
  return scopes.some((s) => meets(s, need));
}

/** The scope a refusal names: the narrowest one that would have met `need`. */
export function describeNeed(need: Need): string {
  if (need.admin) return 'the admin token';
  if (need.all) return `${need.service}:*:${need.access}`;
  if (need.name === undefined) return `a ${need.service}:…:${need.access} scope`;
  return `${need.service}:${need.name}:${need.access}`;
}

/** Who made a call: the admin token (every scope, and token management) or a scoped token. */
export interface Principal {
  /** 'admin', or the token's id. */
  id: string;
  admin: boolean;
  scopes: readonly Scope[];
}

/** The first need `p` does not meet, or undefined when it meets them all. */
export function firstUnmet(p: Principal, needs: readonly Need[]): Need | undefined {
  if (p.admin) return undefined;
  return needs.find((n) => !allows(p.scopes, n));
}

/**
 * What the server checks of one gRPC method (src/server/method-scopes.ts holds
 * one for every method). `needs` runs on every request message (each message
 * of a client or bidi stream); `filter` on every response message, for list
 * methods, keeping what the caller may read.
 */
export interface MethodScope<Req = never, Res = never> {
  needs(req: Req): Need[];
  filter?(res: Res, readable: (service: ScopeService, name: string) => boolean): Res;
  /** For batches of ops (dict and queue Batch and Session): each op is refused on its own. */
  batch?: BatchScope<Req, Res>;
}

/** An op's failure as a batch answer carries it (common.proto OpError). */
export interface OpFailure {
  code: string;
  message: string;
}

/**
 * How callGuard refuses the ops of a batch one by one: the handler gets the
 * batch without the refused ops (`keep`), and its answer is given back the
 * refused ops' errors at their places (`merge`). A batch whose every op is
 * refused never reaches the handler: `refuseAll` answers it (sent by
 * grpc-server.ts `unary` and `session`, which the handler must be made with).
 */
export interface BatchScope<Req, Res> {
  /** The need of each op, in the batch's order (one each). */
  opNeeds(req: Req): Need[];
  id(msg: Req | Res): number;
  /** The batch with only the ops at `kept` (a Req; typed unknown so that tables of any method fit one map). */
  keep(req: Req, kept: readonly number[]): unknown;
  refuseAll(req: Req, errors: readonly OpFailure[]): Res;
  /**
   * `res` (the handler's answer for the kept ops, or one part of it) as the
   * answer of the whole batch; `refused` (op index -> error) goes into the
   * first part only (`first`).
   */
  merge(res: Res, kept: readonly number[], refused: ReadonlyMap<number, OpFailure>, first: boolean): Res;
  /** How many kept ops `res` answers (to know when the batch is done). */
  answered(res: Res, kept: readonly number[]): number;
}

/** Whether `p` may read `name` of `service` (the filter of list methods). */
export function canRead(p: Principal, service: ScopeService, name: string): boolean {
  return p.admin || allows(p.scopes, { service, access: 'read', name });
}
