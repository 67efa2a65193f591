/**
 * Scoped tokens end to end on a real server: made, listed and revoked through
 * the CLI and the SDK; expired and revoked tokens refused on the next call
 * with a message naming the token's id (never its secret); list filtering;
 * a dict Session whose batch holds one op outside the token's scope; the
 * dashboard with scoped tokens; a FUSE mount with a read-only token; and the
 * server's log, which must hold token ids and never a secret. The refusal of
 * every method of every service: token-scopes.test.ts.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pino } from 'pino';
import type { ServiceError } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { Connection, Dict, Queue, Volume, createToken, listTokens, revokeToken } from '../src/client/index.js';
import { StowageError } from '../src/common/errors.js';
import { DictOp, DictOpKind, type DictBatchResult } from '../src/gen/stowage/v1/dict.js';
import { QueueOp, QueueOpKind } from '../src/gen/stowage/v1/queue.js';
import { cleanUpMounts, startMountProcess, stopMount } from './support/mount.js';
import { runCli, startStowage, tempDir, uniqueName, type Stowage } from './support/processes.js';

/** The secret part of a scoped token (stw_<12 hex id>_<secret>; the secret may itself hold '_'), or the whole admin token. */
const secretOf = (token: string) => (/^stw_[0-9a-f]{12}_/.test(token) && token.length === 60 ? token.slice(17) : token);

async function refusal(p: Promise<unknown>): Promise<StowageError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(err instanceof StowageError)) throw new Error(`expected a refusal, got ${String(err)}`);
  return err;
}

describe('scoped tokens', () => {
  let stowage: Stowage;
  const logLines: string[] = [];
  const issued: string[] = [];
  const conns: Connection[] = [];
  const prefix = `${uniqueName('tok')}-`;
  const readVol = `${prefix}data`;
  const otherVol = uniqueName('elsewhere');
  const bytes = randomBytes(700_000);
  let env: Record<string, string>;

  const as = (token: string) => {
    const c = new Connection({ server: stowage.server.address, token });
    conns.push(c);
    return c;
  };
  const make = async (scopes: string[], ttlMs = 3_600_000) => {
    const { token } = await createToken({ scopes, ttlMs, connection: stowage.connection });
    issued.push(token);
    return token;
  };

  beforeAll(async () => {
    const log = pino({ level: 'debug' }, { write: (s: string) => void logLines.push(s) });
    stowage = await startStowage({ log, http: { host: '127.0.0.1', port: 0 } });
    env = { STOWAGE_SERVER: stowage.server.address, STOWAGE_TOKEN: stowage.server.token };
    for (const name of [readVol, otherVol]) {
      const v = await Volume.fromName(name, { createIfMissing: true, connection: stowage.connection });
      await v.batchUpload().putFile(bytes, 'weights/model.bin').putFile(Buffer.from('hello\n'), 'hello.txt').commit();
    }
  });

  afterAll(async () => {
    cleanUpMounts();
    for (const c of conns) c.close();
    await stowage?.stop();
  });

  it('the CLI creates, lists and revokes tokens; the secret is shown once and stored only hashed', async () => {
    const made = await runCli(['token', 'create', '--scope', `volume:${prefix}*:read`, '--scope', 'dict:cfg:write', '--ttl', '30d', '--description', 'ci reader', '--json'], env);
    expect(made.stderr).toBe('');
    expect(made.code).toBe(0);
    const out = JSON.parse(made.stdout) as { token: string; id: string; scopes: string[]; expiresAtMs: number };
    expect(out.token).toMatch(/^stw_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$/);
    expect(out.scopes).toEqual([`volume:${prefix}*:read`, 'dict:cfg:write']);
    expect(out.expiresAtMs - Date.now()).toBeGreaterThan(29 * 86_400_000);
    issued.push(out.token);
    const secret = secretOf(out.token);
    expect(readFileSync(join(stowage.dataDir, 'tokens.json'), 'utf8')).not.toContain(secret);

    const listed = await runCli(['token', 'list'], env);
    expect(listed.code).toBe(0);
    expect(listed.stdout).toContain(out.id);
    expect(listed.stdout).toContain('ci reader');
    expect(listed.stdout).not.toContain(secret);

    // The token works, then is revoked by id, and the next call is refused.
    const readOnly = { ...env, STOWAGE_TOKEN: out.token };
    expect((await runCli(['volume', 'ls', readVol], readOnly)).code).toBe(0);
    const revoked = await runCli(['token', 'revoke', out.id], env);
    expect(revoked.code).toBe(0);
    const after = await runCli(['volume', 'ls', readVol], readOnly);
    expect(after.code).toBe(7);
    expect(after.stderr).toContain(`token stw_${out.id}… was revoked at`);
    expect(after.stderr).not.toContain(secret);
    expect((await listTokens({ connection: stowage.connection })).find((t) => t.id === out.id)?.revokedAtMs).toBeGreaterThan(0);
  });

  it('refuses bad scopes, ttls and too many scopes with the syntax, and scoped tokens cannot make tokens', async () => {
    for (const scope of ['volume:datasets/*:read', 'volumes:x:read', 'volume:x:admin', 'volume::read', 'volume:a*b:read', 'volume:x']) {
      const r = await runCli(['token', 'create', '--scope', scope, '--ttl', '1d'], env);
      expect(r.code, scope).toBe(2);
      expect(r.stderr, scope).toContain('SERVICE:PATTERN:ACCESS');
    }
    for (const ttl of ['0', '400d']) {
      const r = await runCli(['token', 'create', '--scope', 'volume:x:read', '--ttl', ttl], env);
      expect(r.code, ttl).toBe(2);
      expect(r.stderr, ttl).toContain('366d');
    }
    const many = Array.from({ length: 33 }, (_, i) => ['--scope', `volume:v${i}:read`]).flat();
    expect((await runCli(['token', 'create', ...many, '--ttl', '1d'], env)).stderr).toContain('at most 32 scopes');

    const writer = as(await make(['*:*:write']));
    const err = await refusal(createToken({ scopes: ['volume:x:read'], ttlMs: 1000, connection: writer }));
    expect(err.code).toBe('PERMISSION_DENIED');
    expect(err.message).toContain('lacks the admin token');
    expect((await refusal(listTokens({ connection: writer }))).code).toBe('PERMISSION_DENIED');
  });

  it('refuses an expired token, naming its id and expiry', async () => {
    const { token, info } = await createToken({ scopes: ['volume:*:read'], ttlMs: 300, connection: stowage.connection });
    issued.push(token);
    const conn = as(token);
    expect((await Volume.list({ connection: conn })).length).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 400));
    const err = await refusal(Volume.list({ connection: conn }));
    expect(err.code).toBe('UNAUTHENTICATED');
    expect(err.message).toContain(`token stw_${info.id}… expired at ${new Date(info.expiresAtMs).toISOString()}`);
  });

  it('a revoked token is refused on its next call, on every service', async () => {
    const token = await make(['*:*:write']);
    const conn = as(token);
    const d = await Dict.fromName(uniqueName('rev'), { createIfMissing: true, connection: conn });
    await d.put('k', 1);
    const id = token.slice(4, 16);
    await revokeToken(id, { connection: stowage.connection });
    expect((await refusal(d.get('k'))).code).toBe('UNAUTHENTICATED');
    expect((await refusal(Volume.list({ connection: conn }))).message).toContain('revoked');
    expect((await refusal(Queue.fromName(uniqueName('q'), { createIfMissing: true, connection: conn }))).code).toBe('UNAUTHENTICATED');
    const fetched = await fetch(`http://${stowage.server.httpAddress}/api/whoami`, { headers: { authorization: `Bearer ${token}` } });
    expect(fetched.status).toBe(401);
  });

  it('a read token reads byte-exact, cannot write, and lists only its prefix', async () => {
    const conn = as(await make([`volume:${prefix}*:read`]));
    const v = await Volume.fromName(readVol, { connection: conn });
    expect((await v.readBytes('weights/model.bin')).equals(bytes)).toBe(true);
    const denied = await refusal(v.batchUpload().putFile(Buffer.from('x'), 'x.txt').commit());
    expect(denied.code).toBe('PERMISSION_DENIED');
    expect(denied.message).toContain(`lacks volume:${readVol}:write`);
    const names = (await Volume.list({ connection: conn })).map((i) => i.name);
    expect(names).toContain(readVol);
    expect(names).not.toContain(otherVol);
    const other = await refusal(Volume.fromName(otherVol, { connection: conn }));
    expect(other.code).toBe('PERMISSION_DENIED');
    expect(other.message).toContain(`lacks volume:${otherVol}:read`);
    expect((await refusal(Dict.list({ connection: conn }))).message).toContain('lacks a dict:…:read scope');
  });

  it('a dict Session batch with one op outside the scope is refused, naming the scope', async () => {
    const mine = `${prefix}cfg`;
    const theirs = uniqueName('cfg');
    await (await Dict.fromName<string, number>(mine, { createIfMissing: true, connection: stowage.connection })).put('a', 1);
    const secret = await Dict.fromName<string, number>(theirs, { createIfMissing: true, connection: stowage.connection });
    await secret.put('a', 2);
    const conn = as(await make([`dict:${prefix}*:write`]));
    const d = await Dict.fromName<string, number>(mine, { connection: conn });
    await d.put('b', 3);
    // A raw Session stream: each op outside the scope fails alone, naming the scope; the
    // other ops of its batch run, and the session goes on.
    const get = (dict: string): DictOp => ({ ...DictOp.decode(new Uint8Array()), kind: DictOpKind.DICT_OP_KIND_GET, dict, key: Buffer.from('raw') });
    const del = (dict: string): DictOp => ({ ...get(dict), kind: DictOpKind.DICT_OP_KIND_DELETE });
    const put = (dict: string): DictOp => ({ ...get(dict), kind: DictOpKind.DICT_OP_KIND_PUT, value: Buffer.from('v') });
    const stream = conn.dicts.session();
    const answers = new Map<number, DictBatchResult>();
    let failed: ServiceError | undefined;
    stream.on('error', (e: ServiceError) => (failed = e));
    stream.on('data', (r: DictBatchResult) => answers.set(r.id, r));
    stream.write({ id: 1, ops: [put(mine)] });
    // Batches of a session run concurrently: the put is answered before the rest is sent.
    await vi.waitFor(() => expect(answers.size).toBe(1));
    stream.write({ id: 2, ops: [get(theirs), get(mine), del(theirs), put(mine)] });
    stream.write({ id: 3, ops: [del(theirs)] });
    await vi.waitFor(() => expect(answers.size).toBe(3));
    stream.write({ id: 4, ops: [get(mine)] });
    await vi.waitFor(() => expect(answers.size).toBe(4));
    stream.end();
    expect(answers.get(1)!.results[0]!.error).toBeUndefined();
    const [theirGet, myGet, theirDel, myPut] = answers.get(2)!.results;
    expect(theirGet!.error?.code).toBe('PERMISSION_DENIED');
    expect(theirGet!.error?.message).toContain(`lacks dict:${theirs}:read`);
    expect(theirDel!.error?.message).toContain(`lacks dict:${theirs}:write`);
    expect(myGet!.error).toBeUndefined();
    expect(myGet!.item?.found).toBe(true);
    expect(myPut!.error).toBeUndefined();
    expect(myPut!.ok).toBe(true);
    expect(answers.get(3)!.results[0]!.error?.message).toContain(`lacks dict:${theirs}:write`);
    expect(answers.get(4)!.results[0]!.item?.found).toBe(true);
    expect(failed).toBeUndefined();
    // Through the SDK, ops issued at once go in one batch: only the one outside the scope fails.
    const results = await Promise.allSettled([d.get('b'), conn.dictOps.run(get(theirs)), d.get('a')]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(String((results[1] as PromiseRejectedResult).reason)).toContain(`lacks dict:${theirs}:read`);
    expect(results[0]).toEqual({ status: 'fulfilled', value: 3 });
    expect(results[2]).toEqual({ status: 'fulfilled', value: 1 });
    // Nothing of theirs changed.
    expect(await secret.get('a')).toBe(2);
    expect(await secret.len()).toBe(1);
    // Lists are filtered.
    const names = (await Dict.list({ connection: conn })).map((i) => i.name);
    expect(names).toContain(mine);
    expect(names).not.toContain(theirs);
  });

  it('a queue batch answered in parts (a blocking get) refuses only its ops outside the scope', async () => {
    const mine = `${prefix}jobs`;
    const theirs = uniqueName('jobs');
    const adminMine = await Queue.fromName(mine, { createIfMissing: true, connection: stowage.connection });
    await Queue.fromName(theirs, { createIfMissing: true, connection: stowage.connection });
    const conn = as(await make([`queue:${prefix}*:write`]));
    const op = (kind: QueueOpKind, queue: string, more: Partial<QueueOp> = {}): QueueOp => ({ ...QueueOp.decode(new Uint8Array()), kind, queue, ...more });
    // Issued at once: one batch, answered in two parts (the refused op and the len first, the get when an item comes).
    const pending = Promise.allSettled([
      conn.queueOps.run(op(QueueOpKind.QUEUE_OP_KIND_LEN, theirs)),
      conn.queueOps.run(op(QueueOpKind.QUEUE_OP_KIND_GET, mine, { block: true, timeoutMs: 10_000, max: 1 })),
      conn.queueOps.run(op(QueueOpKind.QUEUE_OP_KIND_LEN, mine)),
      conn.queueOps.run(op(QueueOpKind.QUEUE_OP_KIND_PUT, theirs, { items: [Buffer.from('x')] })),
    ]);
    await new Promise((r) => setTimeout(r, 300));
    await adminMine.put('job-1');
    const [theirLen, myGet, myLen, theirPut] = await pending;
    expect(theirLen.status).toBe('rejected');
    expect(String((theirLen as PromiseRejectedResult).reason)).toContain(`lacks queue:${theirs}:read`);
    expect(String((theirPut as PromiseRejectedResult).reason)).toContain(`lacks queue:${theirs}:write`);
    expect(myLen).toEqual({ status: 'fulfilled', value: expect.objectContaining({ number: 0 }) });
    expect(myGet.status).toBe('fulfilled');
    expect((myGet as PromiseFulfilledResult<{ items: unknown[] }>).value.items.length).toBe(1);
    expect(await (await Queue.fromName(theirs, { connection: stowage.connection })).len()).toBe(0);
  });

  it('the dashboard shows a scoped token only what it may read; /metrics needs *:*:read', async () => {
    const base = `http://${stowage.server.httpAddress}`;
    const get = async (path: string, token: string) => {
      const res = await fetch(`${base}${path}`, { headers: { authorization: `Bearer ${token}` } });
      return { status: res.status, body: (await res.json().catch(() => ({}))) as Record<string, unknown> };
    };
    const reader = await make([`volume:${prefix}*:read`]);
    const vols = await get('/api/volumes', reader);
    expect(vols.status).toBe(200);
    const names = (vols.body.volumes as { name: string }[]).map((v) => v.name);
    expect(names).toEqual([readVol]);
    expect(((await get('/api/dicts', reader)).body.dicts as unknown[]).length).toBe(0);
    expect((await get(`/api/volumes/${readVol}/files`, reader)).status).toBe(200);
    const other = await get(`/api/volumes/${otherVol}/files`, reader);
    expect(other.status).toBe(403);
    expect(String(other.body.error)).toContain(`lacks volume:${otherVol}:read`);
    const link = await fetch(`${base}/api/volumes/${otherVol}/download-link`, {
      method: 'POST',
      headers: { authorization: `Bearer ${reader}`, 'content-type': 'application/json' },
      body: JSON.stringify({ path: '/hello.txt' }),
    });
    expect(link.status).toBe(403);
    expect((await get('/api/bridge', reader)).status).toBe(403);
    expect((await get('/metrics', reader)).status).toBe(403);
    const all = await make(['*:*:read']);
    const metrics = await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${all}` } });
    expect(metrics.status).toBe(200);
    expect((await get('/api/whoami', 'stw_000000000000_' + 'A'.repeat(43))).status).toBe(401);
  });

  it('a FUSE mount with a read-only volume token reads byte-exact (and its ReportMount is allowed)', async () => {
    const work = tempDir('tok-mount');
    const token = await make([`volume:${readVol}:read`]);
    const m = await startMountProcess({
      volume: readVol,
      dir: join(work, 'mnt'),
      cacheDir: join(work, 'cache'),
      args: ['--report-interval', '200ms'],
      env: { STOWAGE_SERVER: stowage.server.address, STOWAGE_TOKEN: token },
    });
    try {
      // Asynchronously: the server answering the mount runs in this process.
      expect((await readFile(join(work, 'mnt', 'weights', 'model.bin'))).equals(bytes)).toBe(true);
      const end = Date.now() + 10_000;
      while (!stowage.server.mounts.list().some((r) => r.volume === readVol) && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
      expect(stowage.server.mounts.list().some((r) => r.volume === readVol)).toBe(true);
    } finally {
      await stopMount(m, 'SIGTERM');
    }
    expect(m.stderr()).not.toContain('PERMISSION_DENIED');
  });

  it('the server log names refused tokens by id and never holds a secret', async () => {
    const log = logLines.join('');
    expect(log).toContain('"token":"');
    for (const t of [...issued, stowage.server.token]) expect(log).not.toContain(secretOf(t));
  });
});
