/**
 * ValidatingDictBackend: the argument checks of the DictBackend contract, made
 * once, around any backend (as JuiceFS's prefix.go wraps an ObjectStorage).
 * Every check runs before the inner backend sees the call, so a bad argument
 * is the same InvalidArgumentError, with the same words, on every backend, and
 * it wins over NOT_FOUND (a bad key on an unknown dict is a bad key).
 *
 * The server and the dict service always use a backend through this wrapper
 * (validatedDictBackend), so a backend implements only what its storage does;
 * types.ts lists what it may take as checked.
 */
import * as check from './checks.js';
import type { CasResult, DictBackend, DictInfo, ScanPage, VersionedValue } from './types.js';

export class ValidatingDictBackend implements DictBackend {
  constructor(readonly inner: DictBackend) {}

  async create(name: string, opts: { existOk?: boolean; idleTimeoutMs?: number } = {}): Promise<boolean> {
    check.checkDictName(name);
    return this.inner.create(name, { existOk: opts.existOk, idleTimeoutMs: check.checkIdleTimeout(opts.idleTimeoutMs) });
  }

  async drop(name: string): Promise<void> {
    return this.inner.drop(check.checkDictName(name));
  }

  async list(): Promise<DictInfo[]> {
    return this.inner.list();
  }

  async info(name: string): Promise<DictInfo> {
    return this.inner.info(check.checkDictName(name));
  }

  async touch(name: string, atMs?: number): Promise<void> {
    return this.inner.touch(check.checkDictName(name), check.checkTime('atMs', atMs));
  }

  async dropIfIdle(name: string, nowMs?: number): Promise<boolean> {
    return this.inner.dropIfIdle(check.checkDictName(name), check.checkTime('nowMs', nowMs));
  }

  async exists(name: string): Promise<boolean> {
    return this.inner.exists(check.checkDictName(name));
  }

  async get(dict: string, key: Buffer): Promise<VersionedValue | undefined> {
    return this.inner.get(check.checkDictName(dict), check.checkKey(key));
  }

  async getMany(dict: string, keys: readonly Buffer[]): Promise<(VersionedValue | undefined)[]> {
    check.checkDictName(dict);
    check.checkBatch(keys.length, 'keys');
    keys.forEach(check.checkKey);
    return this.inner.getMany(dict, keys);
  }

  async put(dict: string, key: Buffer, value: Buffer, opts: { skipIfExists?: boolean; ttlMs?: number } = {}): Promise<boolean> {
    check.checkDictName(dict);
    check.checkKey(key);
    check.checkValue(value);
    return this.inner.put(dict, key, value, { skipIfExists: opts.skipIfExists, ttlMs: check.checkTtl(opts.ttlMs) });
  }

  async contains(dict: string, key: Buffer): Promise<boolean> {
    return this.inner.contains(check.checkDictName(dict), check.checkKey(key));
  }

  async len(dict: string): Promise<number> {
    return this.inner.len(check.checkDictName(dict));
  }

  async update(dict: string, entries: readonly (readonly [Buffer, Buffer])[]): Promise<void> {
    check.checkDictName(dict);
    check.checkBatch(entries.length, 'entries');
    for (const [k, v] of entries) {
      check.checkKey(k);
      check.checkValue(v);
    }
    return this.inner.update(dict, entries);
  }

  async pop(dict: string, key: Buffer): Promise<Buffer | undefined> {
    return this.inner.pop(check.checkDictName(dict), check.checkKey(key));
  }

  async delete(dict: string, key: Buffer): Promise<boolean> {
    return this.inner.delete(check.checkDictName(dict), check.checkKey(key));
  }

  async clear(dict: string): Promise<void> {
    return this.inner.clear(check.checkDictName(dict));
  }

  async scan(dict: string, opts: { cursor?: string; limit: number }): Promise<ScanPage> {
    check.checkDictName(dict);
    const limit = check.checkScanLimit(opts.limit);
    if (opts.cursor !== undefined) check.decodeCursor(opts.cursor);
    return this.inner.scan(dict, { cursor: opts.cursor, limit });
  }

  async incr(dict: string, key: Buffer, by = 1): Promise<number> {
    return this.inner.incr(check.checkDictName(dict), check.checkKey(key), check.checkIncrement(by));
  }

  async compareAndSet(
    dict: string,
    key: Buffer,
    expectedVersion: number,
    value: Buffer,
    opts: { ttlMs?: number; keepTtl?: boolean } = {},
  ): Promise<CasResult> {
    check.checkDictName(dict);
    check.checkKey(key);
    check.checkValue(value);
    check.checkVersion(expectedVersion);
    return this.inner.compareAndSet(dict, key, expectedVersion, value, { keepTtl: opts.keepTtl, ttlMs: check.checkTtl(opts.ttlMs) });
  }

  async close(): Promise<void> {
    return this.inner.close();
  }
}

/** `backend` behind the contract's checks; one that has them already is returned as it is. */
export function validatedDictBackend(backend: DictBackend): ValidatingDictBackend {
  return backend instanceof ValidatingDictBackend ? backend : new ValidatingDictBackend(backend);
}
