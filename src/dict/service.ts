/**
 * The DictService gRPC handlers over one DictBackend (always behind
 * ValidatingDictBackend, whatever it is given). Operations come in
 * batches (a unary Batch call or a Session stream); each op of a batch is
 * started in order without waiting for the one before, so the backend sees
 * them back to back (LMDB folds them into one write transaction, Redis into
 * one pipeline), and each op fails on its own.
 */
import { decode, encode } from '@msgpack/msgpack';
import { FailedPreconditionError, InvalidArgumentError } from '../common/errors.js';
import { addToGroup, settleOps } from '../common/batch.js';
import { toOpError } from '../common/grpc-errors.js';
import { authCheck, session, unary } from '../common/grpc-server.js';
import type { Authenticator } from '../common/tokens.js';
import { IdleTracker, type IdleOptions } from '../common/idle.js';
import type { Logger } from '../common/logger.js';
import type { OpCounter } from '../common/metrics.js';
import {
  DictOpKind,
  type DictBatch,
  type DictBatchResult,
  type DictInfo as DictInfoMessage,
  type DictOp,
  type DictResult,
  type DictServiceServer,
  type VersionedValue as VersionedValueMessage,
} from '../gen/stowage/v1/dict.js';
import { checkKey, checkValue } from './checks.js';
import { MAX_BATCH_ENTRIES, type DictBackend, type DictInfo, type VersionedValue } from './types.js';
import { validatedDictBackend } from './validating.js';

/** The label of each op kind in the metrics (DICT_OP_KIND_GET: get). */
const KIND_LABELS = new Map<number, string>(
  Object.entries(DictOpKind)
    .filter((e): e is [string, number] => typeof e[1] === 'number')
    .map(([k, v]) => [v, k.replace('DICT_OP_KIND_', '').toLowerCase()]),
);

/** Most operations in one batch message. */
export const MAX_OPS_PER_BATCH = MAX_BATCH_ENTRIES;

const EMPTY = Buffer.alloc(0);

const result = (r: Partial<DictResult>): DictResult => ({
  error: undefined,
  item: undefined,
  items: [],
  ok: false,
  number: 0,
  ...r,
});

const versioned = (v: VersionedValue | undefined): VersionedValueMessage =>
  v ? { found: true, value: v.value, version: v.version } : { found: false, value: EMPTY, version: 0 };

const infoMessage = (i: DictInfo): DictInfoMessage => ({
  name: i.name,
  createdAtMs: i.createdAtMs,
  idleTimeoutMs: i.idleTimeoutMs,
  lastUsedMs: i.lastUsedMs,
});

/** Whether a key (value) passes the backend's checks, so folding it into a group cannot fail the others. */
const passes = (check: (b: Buffer) => unknown) => (b: Buffer) => {
  try {
    check(b);
    return true;
  } catch {
    return false;
  }
};
const validKey = passes(checkKey);
const validValue = passes(checkValue);

export class DictService {
  readonly idle: IdleTracker;
  /** The msgpack incr in progress per key (see incrMsgpack). */
  private readonly counters = new Map<string, Promise<void>>();

  private readonly backend: DictBackend;

  constructor(
    backend: DictBackend,
    private readonly log: Logger,
    idle?: IdleOptions,
    /** Told of every operation run (the server's metrics). */
    private readonly ops?: OpCounter,
  ) {
    this.backend = validatedDictBackend(backend);
    this.idle = new IdleTracker(this.backend, 'dict', log, idle);
  }

  handlers(token: Authenticator | string): DictServiceServer {
    const check = authCheck(token);
    const log = this.log;
    const b = this.backend;
    return {
      createDict: unary(check, log, async (r) => {
        await b.create(r.name, { existOk: r.existOk, idleTimeoutMs: r.idleTimeoutMs });
        return infoMessage(await b.info(r.name));
      }),
      getDict: unary(check, log, async (r) => infoMessage(await b.info(r.name))),
      listDicts: unary(check, log, async () => ({ dicts: (await b.list()).map(infoMessage) })),
      deleteDict: unary(check, log, async (r) => {
        await b.drop(r.name);
        return {};
      }),
      scan: unary(check, log, async (r) => {
        const page = await b.scan(r.dict, { cursor: r.cursor || undefined, limit: r.limit || 1000 });
        this.idle.mark(r.dict);
        return { entries: page.entries, cursor: page.cursor ?? '' };
      }),
      batch: unary(check, log, (r) => this.runBatch(r)),
      session: session(check, log, (r) => this.runBatch(r)),
    };
  }

  async runBatch(batch: DictBatch): Promise<DictBatchResult> {
    if (batch.ops.length > MAX_OPS_PER_BATCH) {
      const error = toOpError(new InvalidArgumentError(`a batch holds at most ${MAX_OPS_PER_BATCH} operations`));
      return { id: batch.id, results: batch.ops.map(() => result({ error })) };
    }
    if (this.ops) for (const op of batch.ops) this.ops.count(KIND_LABELS.get(op.kind) ?? 'unknown', op.dict);
    const results: Promise<DictResult>[] = new Array(batch.ops.length);
    // Plain gets and plain puts of one dict are folded into one getMany and one
    // update: one backend call (one LMDB transaction, one Redis script) for
    // many callers. The outcome is what the ops one by one would give: each
    // op is a get of a live key, or a put that stores and clears the TTL.
    const gets = new Map<string, number[]>();
    const puts = new Map<string, number[]>();
    batch.ops.forEach((op, i) => {
      if (op.kind === DictOpKind.DICT_OP_KIND_GET && validKey(op.key)) addToGroup(gets, op.dict, i);
      else if (op.kind === DictOpKind.DICT_OP_KIND_PUT && !op.skipIfExists && !op.ttlMs && validKey(op.key) && validValue(op.value)) {
        addToGroup(puts, op.dict, i);
      } else results[i] = this.runOp(op);
    });
    for (const [dict, idx] of gets) {
      if (idx.length === 1) results[idx[0]!] = this.runOp(batch.ops[idx[0]!]!);
      else {
        const all = this.backend.getMany(dict, idx.map((i) => batch.ops[i]!.key));
        idx.forEach((i, n) => (results[i] = all.then((vs) => result({ item: versioned(vs[n]) }))));
      }
    }
    for (const [dict, idx] of puts) {
      if (idx.length === 1) results[idx[0]!] = this.runOp(batch.ops[idx[0]!]!);
      else {
        const done = this.backend.update(dict, idx.map((i) => [batch.ops[i]!.key, batch.ops[i]!.value] as const));
        for (const i of idx) results[i] = done.then(() => result({ ok: true }));
      }
    }
    const settled = await Promise.all(settleOps(
      batch.ops.map((op) => op.dict),
      results,
      (error) => result({ error }),
      this.idle,
      this.log,
    ));
    return { id: batch.id, results: settled };
  }

  private async runOp(op: DictOp): Promise<DictResult> {
    const b = this.backend;
    const d = op.dict;
    switch (op.kind) {
      case DictOpKind.DICT_OP_KIND_GET:
        return result({ item: versioned(await b.get(d, op.key)) });
      case DictOpKind.DICT_OP_KIND_GET_MANY:
        return result({ items: (await b.getMany(d, op.keys)).map(versioned) });
      case DictOpKind.DICT_OP_KIND_PUT:
        return result({
          ok: await b.put(d, op.key, op.value, { skipIfExists: op.skipIfExists, ttlMs: op.ttlMs || undefined }),
        });
      case DictOpKind.DICT_OP_KIND_CONTAINS:
        return result({ ok: await b.contains(d, op.key) });
      case DictOpKind.DICT_OP_KIND_LEN:
        return result({ number: await b.len(d) });
      case DictOpKind.DICT_OP_KIND_UPDATE: {
        if (op.keys.length !== op.values.length) {
          throw new InvalidArgumentError(`update has ${op.keys.length} keys but ${op.values.length} values`);
        }
        await b.update(d, op.keys.map((k, i) => [k, op.values[i]!] as const));
        return result({ ok: true });
      }
      case DictOpKind.DICT_OP_KIND_POP: {
        const v = await b.pop(d, op.key);
        return result({ item: v === undefined ? versioned(undefined) : { found: true, value: v, version: 0 } });
      }
      case DictOpKind.DICT_OP_KIND_DELETE:
        return result({ ok: await b.delete(d, op.key) });
      case DictOpKind.DICT_OP_KIND_CLEAR:
        await b.clear(d);
        return result({ ok: true });
      case DictOpKind.DICT_OP_KIND_INCR:
        return result({ number: op.msgpack ? await this.incrMsgpack(d, op.key, op.by) : await b.incr(d, op.key, op.by) });
      case DictOpKind.DICT_OP_KIND_COMPARE_AND_SET: {
        const r = await b.compareAndSet(d, op.key, op.expectedVersion, op.value, { ttlMs: op.ttlMs || undefined });
        return result({ ok: r.ok, number: r.version });
      }
      case DictOpKind.DICT_OP_KIND_TOUCH:
        await b.touch(d);
        return result({ ok: true });
      default:
        throw new InvalidArgumentError(`unknown dict operation ${op.kind}; is the client newer than the server?`);
    }
  }

  /**
   * incr of a msgpack-encoded integer: read, add, compare-and-set, again on a
   * lost race (another server). Calls on one key here go one after another so
   * that concurrent increments do not all race each other.
   */
  private incrMsgpack(dict: string, key: Buffer, by: number): Promise<number> {
    const slot = `${dict}\0${key.toString('base64')}`;
    const run = (this.counters.get(slot) ?? Promise.resolve()).then(async () => {
      for (;;) {
        const cur = await this.backend.get(dict, key);
        let n = 0;
        if (cur) {
          let v: unknown;
          try {
            v = decode(cur.value);
          } catch {
            v = undefined;
          }
          if (typeof v !== 'number' || !Number.isSafeInteger(v)) {
            throw new FailedPreconditionError('incr: the value at this key is not a msgpack integer');
          }
          n = v;
        }
        const sum = n + by;
        if (!Number.isSafeInteger(sum)) throw new FailedPreconditionError(`incr: ${n} + ${by} leaves the safe integer range`);
        const r = await this.backend.compareAndSet(dict, key, cur?.version ?? 0, Buffer.from(encode(sum)), { keepTtl: true });
        if (r.ok) return sum;
      }
    });
    const settled = run.then(
      () => undefined,
      () => undefined,
    );
    this.counters.set(slot, settled);
    void settled.then(() => {
      if (this.counters.get(slot) === settled) this.counters.delete(slot);
    });
    return run;
  }

  async close(): Promise<void> {
    await this.idle.close();
  }
}
