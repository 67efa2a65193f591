/**
 * The scope model (common/scopes.ts) and its table (server/method-scopes.ts):
 * parsing and matching; the table covers every method of every service; and,
 * driven by that table, one real request per method of every service against
 * a real server: a read-only token is refused every write and admin method,
 * a token of another service or another prefix is refused every method that
 * names a name, revoked and expired tokens are refused everywhere, and the
 * token service refuses every scoped token.
 */
import {
  Client,
  Metadata,
  credentials,
  status,
  type MethodDefinition,
  type ServiceDefinition,
  type ServiceError,
} from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createToken, revokeToken } from '../src/client/index.js';
import { allows, formatScope, parseScope, parseScopes, patternMatches } from '../src/common/scopes.js';
import { CallInput, DeployedFunction, FunctionSpec, RegisterWorker } from '../src/gen/stowage/v1/bridge.js';
import { DictOp, DictOpKind } from '../src/gen/stowage/v1/dict.js';
import { QueueOp, QueueOpKind } from '../src/gen/stowage/v1/queue.js';
import { SCOPED_SERVICES } from '../src/server/method-scopes.js';
import { startStowage, uniqueName, type Stowage } from './support/processes.js';

describe('scope strings', () => {
  it('parse, format back, and match names and prefixes', () => {
    for (const t of ['volume:datasets-*:read', '*:*:write', 'dict:cfg:read', 'bridge:jobs.*:write', 'queue:a_b.c-d:read']) {
      expect(formatScope(parseScope(t))).toBe(t);
    }
    for (const bad of ['volume:datasets/*:read', 'volume:*x:read', 'volume:x', 'x:y:read', 'volume:x:rw', '', 'volume:x:read:extra']) {
      expect(() => parseScope(bad), bad).toThrow(/SERVICE:PATTERN:ACCESS/);
    }
    expect(() => parseScopes([])).toThrow(/at least one/);
    expect(patternMatches('datasets-*', 'datasets-2024')).toBe(true);
    expect(patternMatches('datasets-*', 'datasets')).toBe(false);
    expect(patternMatches('w', 'weights')).toBe(false);
    const s = parseScopes(['volume:w-*:write']);
    expect(allows(s, { service: 'volume', access: 'read', name: 'w-1' })).toBe(true);
    expect(allows(parseScopes(['volume:w-*:read']), { service: 'volume', access: 'write', name: 'w-1' })).toBe(false);
    expect(allows(s, { service: 'dict', access: 'read', name: 'w-1' })).toBe(false);
    expect(allows(s, { service: 'volume', access: 'read' })).toBe(true);
    expect(allows(s, { service: 'volume', access: 'read', all: true })).toBe(false);
    expect(allows(parseScopes(['*:*:read']), { service: 'bridge', access: 'read', all: true })).toBe(true);
    expect(allows(parseScopes(['*:*:write']), { service: 'volume', access: 'write', admin: true })).toBe(false);
  });
});

/** Methods a `*:tgt-*:read` token may call with the requests below (the others write, or are the admin's). */
const READS = new Set([
  'VolumeService/GetVolume', 'VolumeService/ListVolumes', 'VolumeService/ListVersions', 'VolumeService/ListFiles', 'VolumeService/Stat',
  'VolumeService/GetFile', 'VolumeService/PresignBlobs', 'VolumeService/ReadBlob', 'VolumeService/ReportDamagedBlob',
  'VolumeService/GetVersion', 'VolumeService/GetTreeObjects', 'VolumeService/ReportMount',
  'DictService/GetDict', 'DictService/ListDicts', 'DictService/Scan',
  'QueueService/GetQueue', 'QueueService/ListQueues',
  'BridgeService/WatchCalls', 'BridgeService/WatchLogs', 'BridgeService/GetCall', 'BridgeService/ListCalls', 'BridgeService/ListWorkers', 'BridgeService/ListSchedules',
  'BridgeService/GetFunction', 'BridgeService/ListFunctions',
]);
/** Methods that name no name (any scope of the service with that access will do: see method-scopes.ts). */
const NAMELESS = new Set([
  'VolumeService/ListVolumes', 'VolumeService/PresignBlobs', 'VolumeService/ReadBlob', 'VolumeService/PutBlob',
  'DictService/ListDicts', 'QueueService/ListQueues',
  'BridgeService/WatchCalls', 'BridgeService/WatchLogs', 'BridgeService/GetCall', 'BridgeService/ListCalls', 'BridgeService/ListWorkers', 'BridgeService/ListSchedules',
  'BridgeService/ListFunctions',
]);
const ADMIN_ONLY = new Set(['VolumeService/RebuildIndex', 'VolumeService/ListDamaged', 'VolumeService/CollectGarbage', 'TokenService/CreateToken', 'TokenService/ListTokens', 'TokenService/RevokeToken']);

const N = 'tgt-a';
/** A message of type `M` with `fields` over its defaults. */
const msg = <T extends object>(M: { decode(b: Uint8Array): T }, fields: Partial<T>): T => ({ ...M.decode(new Uint8Array()), ...fields });
const fn = msg(FunctionSpec, { module: 'm.mjs', function: 'tgt-f', codeVolume: 'tgt-code', bundlePath: 'b.mjs', volumes: { '/data': 'tgt-data' } });
/** One request per method (fields over the message's defaults), naming `tgt-…` names. */
const REQUESTS: Record<string, Record<string, unknown>> = {
  'VolumeService/CreateVolume': { name: N },
  'VolumeService/GetVolume': { name: N },
  'VolumeService/ListVolumes': {},
  'VolumeService/DeleteVolume': { name: N },
  'VolumeService/RenameVolume': { name: N, newName: 'tgt-b' },
  'VolumeService/Heartbeat': { name: N },
  'VolumeService/ListVersions': { name: N },
  'VolumeService/ListFiles': { volume: N },
  'VolumeService/Stat': { volume: N, path: 'x' },
  'VolumeService/GetFile': { volume: N, path: 'x' },
  'VolumeService/PresignBlobs': { blobs: [] },
  'VolumeService/PlanUpload': { volume: N },
  'VolumeService/PutBlob': { hash: 'a'.repeat(64), size: 1, data: Buffer.from('x') },
  'VolumeService/ReadBlob': { hash: 'a'.repeat(64) },
  'VolumeService/ReportDamagedBlob': { hash: 'a'.repeat(64), volume: N, path: 'x' },
  'VolumeService/Commit': { volume: N },
  'VolumeService/RebuildIndex': {},
  'VolumeService/GetVersion': { volume: N, version: 1 },
  'VolumeService/GetTreeObjects': { volume: N, hashes: [] },
  'VolumeService/SetRetention': { name: N, keepLast: 3 },
  'VolumeService/CollectGarbage': { dryRun: true },
  'VolumeService/ListDamaged': {},
  'VolumeService/ReportMount': { mountId: 'm', client: 'mount', host: 'h', volume: N },
  'DictService/CreateDict': { name: N },
  'DictService/GetDict': { name: N },
  'DictService/ListDicts': {},
  'DictService/DeleteDict': { name: N },
  'DictService/Scan': { dict: N },
  'DictService/Batch': { id: 1, ops: [msg(DictOp, { kind: DictOpKind.DICT_OP_KIND_PUT, dict: N, key: Buffer.from('k'), value: Buffer.from('v') })] },
  'DictService/Session': { id: 1, ops: [msg(DictOp, { kind: DictOpKind.DICT_OP_KIND_DELETE, dict: N, key: Buffer.from('k') })] },
  'QueueService/CreateQueue': { name: N },
  'QueueService/GetQueue': { name: N },
  'QueueService/ListQueues': {},
  'QueueService/DeleteQueue': { name: N },
  'QueueService/Batch': { id: 1, ops: [msg(QueueOp, { kind: QueueOpKind.QUEUE_OP_KIND_PUT, queue: N, items: [Buffer.from('x')] })] },
  'QueueService/Session': { id: 1, ops: [msg(QueueOp, { kind: QueueOpKind.QUEUE_OP_KIND_GET, queue: N })] },
  'BridgeService/Submit': { function: fn, calls: [msg(CallInput, {})] },
  'BridgeService/WatchCalls': { callIds: [] },
  'BridgeService/WatchLogs': { callId: 'c' },
  'BridgeService/GetCall': { callId: 'c' },
  'BridgeService/CancelCalls': { callIds: ['c'] },
  'BridgeService/ListCalls': {},
  'BridgeService/ListWorkers': {},
  'BridgeService/PutSchedule': { name: 'tgt-s', cron: '* * * * *', function: fn },
  'BridgeService/ListSchedules': {},
  'BridgeService/DeleteSchedule': { name: 'tgt-s' },
  'BridgeService/DeployApp': { app: 'tgt-app', functions: [msg(DeployedFunction, { app: 'tgt-app', name: 'f', function: fn })] },
  'BridgeService/GetFunction': { app: 'tgt-app', name: 'f' },
  'BridgeService/ListFunctions': {},
  'BridgeService/DeleteApp': { app: 'tgt-app' },
  'BridgeService/Work': { register: msg(RegisterWorker, { workerId: 'w', host: 'h', slots: 1 }) },
  'TokenService/CreateToken': { scopes: ['volume:x:read'], ttlMs: 1000 },
  'TokenService/ListTokens': {},
  'TokenService/RevokeToken': { id: 'x' },
};

const short = (path: string) => path.replace('/stowage.v1.', '');

/** A batch answer whose ops were refused (a refused batch fails its ops, not the call: method-scopes.ts). */
const refusedOps = (res: unknown) =>
  ((res as { results?: { error?: { code: string } }[] } | undefined)?.results ?? []).some((r) => r.error?.code === 'PERMISSION_DENIED');

/** Makes one call of `m` with `token`; resolves to the status code it ended with (-1 for a stream still open after 1.5 s; PERMISSION_DENIED for a batch answered with refused ops). */
function invoke(client: Client, m: MethodDefinition<object, object>, req: object, token: string): Promise<number> {
  const md = new Metadata();
  md.set('authorization', `Bearer ${token}`);
  const ser = m.requestSerialize as (v: object) => Buffer;
  const de = m.responseDeserialize as (b: Buffer) => object;
  return new Promise((resolve) => {
    const done = (err: ServiceError | null | undefined) => resolve(err ? err.code : status.OK);
    if (!m.requestStream && !m.responseStream) {
      client.makeUnaryRequest(m.path, ser, de, req, md, {}, (err, res) => (refusedOps(res) ? resolve(status.PERMISSION_DENIED) : done(err)));
      return;
    }
    if (m.requestStream && !m.responseStream) {
      const call = client.makeClientStreamRequest(m.path, ser, de, md, {}, (err) => done(err));
      call.write(req);
      call.end();
      return;
    }
    const call = m.requestStream ? client.makeBidiStreamRequest(m.path, ser, de, md, {}) : client.makeServerStreamRequest(m.path, ser, de, req, md, {});
    const timer = setTimeout(() => {
      call.cancel();
      resolve(-1);
    }, 1500);
    call.on('data', (res: unknown) => {
      if (!refusedOps(res)) return;
      clearTimeout(timer);
      call.cancel();
      resolve(status.PERMISSION_DENIED);
    });
    call.on('error', (err: ServiceError) => {
      clearTimeout(timer);
      resolve(err.code);
    });
    call.on('end', () => {
      clearTimeout(timer);
      resolve(status.OK);
    });
    if (m.requestStream) (call as unknown as { write(v: object): void }).write(req);
  });
}

describe('every method of every service has a scope, and is refused outside it', () => {
  let stowage: Stowage;
  let client: Client;
  const tokens: Record<string, string> = {};

  beforeAll(async () => {
    stowage = await startStowage();
    client = new Client(stowage.server.address, credentials.createInsecure());
    const make = async (scopes: string[]) => (await createToken({ scopes, ttlMs: 600_000, connection: stowage.connection })).token;
    tokens.read = await make(['*:tgt-*:read']);
    tokens.otherPrefix = await make(['*:zzz-*:write']);
    tokens.queueOnly = await make(['queue:*:write']);
    tokens.volumeOnly = await make(['volume:*:write']);
    tokens.revoked = await make(['*:*:write']);
    await revokeToken(tokens.revoked.slice(4, 16), { connection: stowage.connection });
    tokens.expired = (await createToken({ scopes: ['*:*:write'], ttlMs: 1, connection: stowage.connection })).token;
    await new Promise((r) => setTimeout(r, 5));
    // Something to name in the write requests an admin could make: the scoped ones never reach it.
    await stowage.connection.unary(stowage.connection.volumes.createVolume.bind(stowage.connection.volumes), { name: uniqueName('tgt'), ephemeral: false, existOk: false });
  });
  afterAll(async () => {
    client?.close();
    await stowage?.stop();
  });

  it('the table has an entry for every method, and the requests here cover every method', () => {
    const paths: string[] = [];
    for (const { definition, table } of SCOPED_SERVICES) {
      for (const [key, m] of Object.entries(definition)) {
        expect(table[key], m.path).toBeDefined();
        paths.push(short(m.path));
      }
    }
    expect(paths.sort()).toEqual(Object.keys(REQUESTS).sort());
    expect(stowage.server.services.length).toBe(4);
  });

  const cases = SCOPED_SERVICES.flatMap(({ definition }) =>
    Object.values(definition as ServiceDefinition).map((m) => ({ m: m as MethodDefinition<object, object>, name: short(m.path) })),
  );

  it.each(cases)('$name', async ({ m, name }) => {
    const full = { ...(m.requestDeserialize(Buffer.alloc(0)) as object), ...REQUESTS[name] };
    const service = name.split('/')[0]!;
    const foreign = service === 'QueueService' ? tokens.volumeOnly! : tokens.queueOnly!;
    expect(await invoke(client, m, full, tokens.revoked!), `${name} with a revoked token`).toBe(status.UNAUTHENTICATED);
    expect(await invoke(client, m, full, tokens.expired!), `${name} with an expired token`).toBe(status.UNAUTHENTICATED);
    expect(await invoke(client, m, full, foreign), `${name} with a token of another service`).toBe(status.PERMISSION_DENIED);
    const readCode = await invoke(client, m, full, tokens.read!);
    if (READS.has(name)) expect(readCode, `${name} with a read token`).not.toBe(status.PERMISSION_DENIED);
    else expect(readCode, `${name} with a read token`).toBe(status.PERMISSION_DENIED);
    const otherCode = await invoke(client, m, full, tokens.otherPrefix!);
    if (NAMELESS.has(name) && !ADMIN_ONLY.has(name)) expect(otherCode, `${name}: names no name`).not.toBe(status.PERMISSION_DENIED);
    else expect(otherCode, `${name} with a token of another prefix`).toBe(status.PERMISSION_DENIED);
  });
});
