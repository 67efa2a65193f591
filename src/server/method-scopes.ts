/**
 * What each gRPC method needs of a scoped token (the scope model:
 * common/scopes.ts; the check: callGuard in common/grpc-server.ts). The type
 * of each service's table has one key per method of its generated service
 * definition, so a new method does not compile without an entry here, and
 * test/token-scopes.test.ts checks that every method of every hosted service
 * has one at run time (a method without one is refused to scoped tokens).
 *
 * Decisions worth knowing:
 * - Blobs (chunks, packs) are named by their SHA-256 and hold no volume name:
 *   PutBlob needs write on some volume, ReadBlob and PresignBlobs read on some
 *   volume. A hash is a capability: it comes from reading a file of a volume
 *   the token may read, or from holding the bytes themselves.
 * - Commit: the first message names the volume (write); later messages may
 *   not name one (the handler refuses them), so each later message needs only
 *   write on some volume.
 * - ReportMount needs read on the mounted volume: a read-only mount reports.
 * - Heartbeat keeps an ephemeral volume alive: write.
 * - Admin only: RebuildIndex, ListDamaged, CollectGarbage over every volume
 *   (with a volume named, write on it), and all of TokenService.
 * - Dict and queue Batch and Session: each op needs read (dict get, get-many,
 *   contains, len; queue len, peek) or write (everything else, queue get
 *   included: it takes items) on its dict or queue. An op outside the scope
 *   fails alone with PERMISSION_DENIED naming the scope (it never reaches the
 *   service); the other ops of its batch run, and the session goes on.
 * - Bridge: Submit needs write on the function's name and read on its code
 *   volume and every volume it mounts (else a bridge token would read any
 *   volume through a function), and write on every volume it mounts writable;
 *   PutSchedule the same on the schedule's name;
 *   DeleteSchedule write on the schedule's name; CancelCalls bridge:*:write (a
 *   call id names no function the scope could be checked against); the read
 *   methods (GetCall, ListCalls, WatchCalls, WatchLogs, ListWorkers,
 *   ListSchedules) read on the bridge.
 *   Work (the worker stream) needs bridge:*:write: a worker runs any function.
 *   Deployed functions are named `APP.NAME` (as their schedules; names hold
 *   no '/'): DeployApp needs write on the app's name (it may remove any of
 *   its functions) and on each `APP.NAME` it deploys, with the reads of each
 *   spec; DeleteApp write on the app's name; GetFunction read on `APP.NAME`;
 *   ListFunctions read on the bridge, answering only the readable names.
 * - List methods (ListVolumes, ListDicts, ListQueues) need read on the service
 *   and answer only the names the token may read.
 */
import type { MethodDefinition, ServiceDefinition } from '@grpc/grpc-js';
import type { MethodScopes } from '../common/grpc-server.js';
import type { Access, MethodScope, Need, ScopeService } from '../common/scopes.js';
import { BridgeServiceService, type FunctionSpec } from '../gen/stowage/v1/bridge.js';
import type { OpError } from '../gen/stowage/v1/common.js';
import { DictOpKind, DictServiceService, type DictBatch, type DictBatchResult, type DictResult } from '../gen/stowage/v1/dict.js';
import { QueueOpKind, QueueServiceService, type QueueBatch, type QueueBatchResult, type QueueResult } from '../gen/stowage/v1/queue.js';
import { TokenServiceService } from '../gen/stowage/v1/token.js';
import { VolumeServiceService } from '../gen/stowage/v1/volume.js';

type Table<S extends ServiceDefinition> = {
  [K in keyof S]: S[K] extends MethodDefinition<infer Req, infer Res> ? MethodScope<Req, Res> : never;
};

const need = (service: ScopeService, access: Access, name?: string): Need => ({ service, access, name });
const ADMIN: Need[] = [{ service: 'volume', access: 'write', admin: true }];
const admin = { needs: () => ADMIN };

const vol = (access: Access, pick: (r: { volume: string }) => string = (r) => r.volume) => ({
  needs: (r: { volume: string }) => [need('volume', access, pick(r))],
});
const volByName = (access: Access) => ({ needs: (r: { name: string }) => [need('volume', access, r.name)] });
const anyVolume = (access: Access) => ({ needs: () => [need('volume', access)] });

export const VOLUME_SCOPES: Table<typeof VolumeServiceService> = {
  createVolume: volByName('write'),
  getVolume: volByName('read'),
  listVolumes: {
    needs: () => [need('volume', 'read')],
    filter: (res, readable) => ({ ...res, volumes: res.volumes.filter((v) => readable('volume', v.name)) }),
  },
  deleteVolume: volByName('write'),
  renameVolume: { needs: (r) => [need('volume', 'write', r.name), need('volume', 'write', r.newName)] },
  heartbeat: volByName('write'),
  listVersions: volByName('read'),
  listFiles: vol('read'),
  stat: vol('read'),
  getFile: vol('read'),
  presignBlobs: anyVolume('read'),
  planUpload: vol('write'),
  putBlob: anyVolume('write'),
  readBlob: anyVolume('read'),
  reportDamagedBlob: { needs: (r) => [need('volume', 'read', r.volume || undefined)] },
  commit: { needs: (r) => [need('volume', 'write', r.volume || undefined)] },
  rebuildIndex: admin,
  getVersion: vol('read'),
  getTreeObjects: vol('read'),
  setRetention: volByName('write'),
  collectGarbage: { needs: (r) => (r.volume ? [need('volume', 'write', r.volume)] : ADMIN) },
  listDamaged: admin,
  reportMount: vol('read'),
};

const DICT_READS: ReadonlySet<DictOpKind> = new Set([
  DictOpKind.DICT_OP_KIND_GET,
  DictOpKind.DICT_OP_KIND_GET_MANY,
  DictOpKind.DICT_OP_KIND_CONTAINS,
  DictOpKind.DICT_OP_KIND_LEN,
]);
const dictResult = (error: OpError | undefined): DictResult => ({ error, item: undefined, items: [], ok: false, number: 0 });
/** A dict batch is answered in one message, in op order. */
const dictBatch: MethodScope<DictBatch, DictBatchResult> = {
  needs: (b) => dictBatch.batch!.opNeeds(b),
  batch: {
    opNeeds: (b) => b.ops.map((op) => need('dict', DICT_READS.has(op.kind) ? 'read' : 'write', op.dict)),
    id: (m) => m.id,
    keep: (b, kept): typeof b => ({ ...b, ops: kept.map((i) => b.ops[i]!) }),
    refuseAll: (b, errors) => ({ id: b.id, results: errors.map(dictResult) }),
    merge: (res, kept, refused) => {
      const results: DictResult[] = new Array(kept.length + refused.size);
      kept.forEach((orig, i) => (results[orig] = res.results[i] ?? dictResult({ code: 'INTERNAL', message: 'no answer for this op' })));
      for (const [i, e] of refused) results[i] = dictResult(e);
      return { ...res, results };
    },
    answered: (_res, kept) => kept.length,
  },
};

export const DICT_SCOPES: Table<typeof DictServiceService> = {
  createDict: { needs: (r) => [need('dict', 'write', r.name)] },
  getDict: { needs: (r) => [need('dict', 'read', r.name)] },
  listDicts: {
    needs: () => [need('dict', 'read')],
    filter: (res, readable) => ({ ...res, dicts: res.dicts.filter((d) => readable('dict', d.name)) }),
  },
  deleteDict: { needs: (r) => [need('dict', 'write', r.name)] },
  scan: { needs: (r) => [need('dict', 'read', r.dict)] },
  batch: dictBatch,
  session: dictBatch,
};

const QUEUE_READS: ReadonlySet<QueueOpKind> = new Set([QueueOpKind.QUEUE_OP_KIND_LEN, QueueOpKind.QUEUE_OP_KIND_PEEK]);
const queueResult = (error: OpError | undefined): QueueResult => ({ error, items: [], number: 0, cursor: '' });
/**
 * A queue batch may be answered in parts (`indexes` says which ops each
 * answers): the handler's indexes are renumbered to the whole batch's, and
 * the refused ops are answered with the first part.
 */
const queueBatch: MethodScope<QueueBatch, QueueBatchResult> = {
  needs: (b) => queueBatch.batch!.opNeeds(b),
  batch: {
    opNeeds: (b) => b.ops.map((op) => need('queue', QUEUE_READS.has(op.kind) ? 'read' : 'write', op.queue)),
    id: (m) => m.id,
    keep: (b, kept): typeof b => ({ ...b, ops: kept.map((i) => b.ops[i]!) }),
    refuseAll: (b, errors) => ({ id: b.id, results: errors.map(queueResult), indexes: [] }),
    merge: (res, kept, refused, first) => {
      const theirs = res.indexes.length ? res.indexes.map((i) => kept[i]!) : kept;
      const extra = first ? [...refused] : [];
      return {
        id: res.id,
        results: [...extra.map(([, e]) => queueResult(e)), ...res.results],
        indexes: [...extra.map(([i]) => i), ...theirs],
      };
    },
    answered: (res, kept) => (res.indexes.length ? res.indexes.length : kept.length),
  },
};

export const QUEUE_SCOPES: Table<typeof QueueServiceService> = {
  createQueue: { needs: (r) => [need('queue', 'write', r.name)] },
  getQueue: { needs: (r) => [need('queue', 'read', r.name)] },
  listQueues: {
    needs: () => [need('queue', 'read')],
    filter: (res, readable) => ({ ...res, queues: res.queues.filter((q) => readable('queue', q.name)) }),
  },
  deleteQueue: { needs: (r) => [need('queue', 'write', r.name)] },
  batch: queueBatch,
  session: queueBatch,
};

/** What running `fn` reads: its code volume and every volume it mounts. */
/** What running `fn` touches: read on its code volume and every volume it mounts, write on those it mounts writable. */
const functionReads = (fn: FunctionSpec | undefined): Need[] =>
  fn
    ? [
        ...[fn.codeVolume, ...Object.values(fn.volumes)].filter((v) => v).map((v) => need('volume', 'read', v)),
        ...fn.writable.map((path) => fn.volumes[path]).filter((v): v is string => !!v).map((v) => need('volume', 'write', v)),
      ]
    : [];
const bridgeRead = { needs: () => [need('bridge', 'read')] };

export const BRIDGE_SCOPES: Table<typeof BridgeServiceService> = {
  submit: { needs: (r) => [need('bridge', 'write', r.function?.function ?? ''), ...functionReads(r.function)] },
  watchCalls: bridgeRead,
  watchLogs: bridgeRead,
  getCall: bridgeRead,
  // Calls carry no scope of their own: cancelling any of them takes a bridge-wide write scope.
  cancelCalls: { needs: () => [{ service: 'bridge', access: 'write', all: true }] },
  listCalls: bridgeRead,
  listWorkers: bridgeRead,
  putSchedule: { needs: (r) => [need('bridge', 'write', r.name), ...functionReads(r.function)] },
  listSchedules: bridgeRead,
  deleteSchedule: { needs: (r) => [need('bridge', 'write', r.name)] },
  work: { needs: () => [{ service: 'bridge', access: 'write', all: true }] },
  deployApp: {
    needs: (r) => [
      need('bridge', 'write', r.app),
      ...r.functions.flatMap((f) => [need('bridge', 'write', `${r.app}.${f.name}`), ...functionReads(f.function)]),
    ],
  },
  getFunction: { needs: (r) => [need('bridge', 'read', `${r.app}.${r.name}`)] },
  listFunctions: {
    needs: () => [need('bridge', 'read')],
    filter: (res, readable) => ({ ...res, functions: res.functions.filter((f) => readable('bridge', `${f.app}.${f.name}`)) }),
  },
  deleteApp: { needs: (r) => [need('bridge', 'write', r.app)] },
};

export const TOKEN_SCOPES: Table<typeof TokenServiceService> = {
  createToken: admin,
  listTokens: admin,
  revokeToken: admin,
};

/** Every table with its service definition, for the scope map and the test that it covers every method. */
export const SCOPED_SERVICES: readonly { definition: ServiceDefinition; table: Record<string, MethodScope<never, unknown>> }[] = [
  { definition: VolumeServiceService, table: VOLUME_SCOPES },
  { definition: DictServiceService, table: DICT_SCOPES },
  { definition: QueueServiceService, table: QUEUE_SCOPES },
  { definition: BridgeServiceService, table: BRIDGE_SCOPES },
  { definition: TokenServiceService, table: TOKEN_SCOPES },
];

/** The table callGuard reads, by method path. */
export function methodScopes(): MethodScopes {
  const map = new Map<string, MethodScope<never, unknown>>();
  for (const { definition, table } of SCOPED_SERVICES) {
    for (const [key, method] of Object.entries(definition)) {
      const rule = table[key];
      if (rule) map.set(method.path, rule);
    }
  }
  return map;
}
