/**
 * DictBackend: named dicts of bytes to bytes, the storage layer under the dict
 * service. Implementations: LmdbDictBackend (embedded, durable, one process) and
 * RedisDictBackend (shared by many servers; one dict lives in one cluster slot).
 *
 * Invariants every backend keeps (the contract suite in
 * test/dict-contract.test.ts checks each of them, on every backend wrapped as
 * the server wraps it):
 * - Keys and values are bytes. A key is 1..MAX_KEY_BYTES bytes, a value
 *   0..MAX_VALUE_BYTES bytes, a dict name matches [A-Za-z0-9._-]{1,64}. Anything
 *   else is an InvalidArgumentError and changes nothing.
 *
 * Argument checks are made once, by ValidatingDictBackend (validating.ts),
 * which the server and the dict service put around every backend; it checks
 * before the backend is called, so a bad argument fails alike everywhere and
 * before any NOT_FOUND. A backend may take as checked: every dict name; every
 * key (1..MAX_KEY_BYTES bytes) and value (at most MAX_VALUE_BYTES); the number
 * of keys of getMany and entries of update (at most MAX_BATCH_ENTRIES);
 * ttlMs (1..MAX_TTL_MS, or absent); idleTimeoutMs (0, absent, or
 * MIN_IDLE_TIMEOUT_MS..MAX_TTL_MS); touch's atMs and dropIfIdle's nowMs (whole,
 * >= 0); scan's limit (1..MAX_SCAN_LIMIT) and cursor (one that decodeCursor
 * reads); incr's by (a safe integer); compareAndSet's expectedVersion (a whole
 * number >= 0). What it must still check is what only its storage knows: that
 * the dict exists, and that a value incr adds to is a counter (checks.ts has
 * the errors for both).
 * - Every operation on a dict that does not exist is a NotFoundError whose
 *   message says how to create it; it never creates the dict implicitly.
 * - Every key carries a version: 1 when the key is written while absent, and one
 *   more on every later write (put, update, incr, compareAndSet). Deleting or
 *   expiring a key forgets its version, so a re-created key starts at 1 again.
 * - A key with a TTL that has passed is absent to every read (get, getMany,
 *   contains, len, scan, pop, incr, compareAndSet); its storage is reclaimed
 *   lazily by later writes to the same dict.
 * - Every single-call operation is atomic: a concurrent reader sees all of it or
 *   none of it, and concurrent incr/compareAndSet on one key never lose updates.
 * - Writes that set a value (put, update, compareAndSet) replace the key's TTL:
 *   it expires after ttlMs if one is given and never otherwise. incr, and
 *   compareAndSet with keepTtl, keep it.
 * - A dict may have an idle timeout (0 = never; else MIN_IDLE_TIMEOUT_MS to
 *   MAX_TTL_MS). Its lastUsedMs starts at createdAtMs and only moves forward, by
 *   touch; no other operation changes it. A backend never drops an idle dict by
 *   itself: the service calls dropIfIdle, which checks and drops in one atomic
 *   step, so a touch is either before it (and the dict stays) or after it (and
 *   finds no dict).
 */

/** Longest key, in bytes. Keys are never empty. */
export const MAX_KEY_BYTES = 64 * 1024;
/** Largest value, in bytes. */
export const MAX_VALUE_BYTES = 64 * 1024 * 1024;
/** Most keys in one getMany call and most entries in one update call. */
export const MAX_BATCH_ENTRIES = 10_000;
/** Largest page scan returns. */
export const MAX_SCAN_LIMIT = 10_000;
/** Longest TTL: about ten years. */
export const MAX_TTL_MS = 10 * 365 * 24 * 3600 * 1000;
/** Shortest idle timeout of a dict; the longest is MAX_TTL_MS. */
export const MIN_IDLE_TIMEOUT_MS = 1000;

export interface DictInfo {
  name: string;
  createdAtMs: number;
  /** 0 = never expires */
  idleTimeoutMs: number;
  /** last touch (or creation) */
  lastUsedMs: number;
}

export interface VersionedValue {
  value: Buffer;
  /** 1 on the first write of the key, one more on each later write. */
  version: number;
}

export interface DictEntry extends VersionedValue {
  key: Buffer;
}

export interface ScanPage {
  /** At most `limit` live entries; may be fewer (even none) while more follow. */
  entries: DictEntry[];
  /** Opaque; pass it back to continue. Undefined when the scan is complete. */
  cursor?: string;
}

export interface CasResult {
  ok: boolean;
  /** The key's version after the call: the new one if ok, else the current one (0 if absent). */
  version: number;
}

export interface DictBackend {
  /**
   * Creates an empty dict. Returns true if it was created, false if it already
   * existed and `existOk` is set (its settings are kept, not replaced); without
   * `existOk` an existing dict is an AlreadyExistsError. `idleTimeoutMs` is 0 or
   * absent for a dict that never expires, else an integer from
   * MIN_IDLE_TIMEOUT_MS to MAX_TTL_MS (InvalidArgumentError otherwise, and
   * nothing is created).
   */
  create(name: string, opts?: { existOk?: boolean; idleTimeoutMs?: number }): Promise<boolean>;

  /** Deletes a dict and all its keys. NotFoundError if it does not exist. */
  drop(name: string): Promise<void>;

  /** All dicts, sorted by name. */
  list(): Promise<DictInfo[]>;

  /** Settings and last use of one dict. NotFoundError if it does not exist. */
  info(name: string): Promise<DictInfo>;

  /**
   * Marks a dict as used: its lastUsedMs becomes max(lastUsedMs, atMs), atMs
   * defaulting to now. NotFoundError if it does not exist.
   */
  touch(name: string, atMs?: number): Promise<void>;

  /**
   * Drops the dict with all its keys, atomically with the check, if it has an
   * idle timeout and lastUsedMs + idleTimeoutMs <= nowMs (default now). Returns
   * whether it was dropped: false for a dict that is fresh, never expires or
   * does not exist.
   */
  dropIfIdle(name: string, nowMs?: number): Promise<boolean>;

  /** Whether a dict of this name exists. Invalid names are an InvalidArgumentError. */
  exists(name: string): Promise<boolean>;

  /** The live value and version of a key, or undefined if it is absent or expired. */
  get(dict: string, key: Buffer): Promise<VersionedValue | undefined>;

  /** get for many keys at once, from one consistent view; results are in the order of `keys`. */
  getMany(dict: string, keys: readonly Buffer[]): Promise<(VersionedValue | undefined)[]>;

  /**
   * Stores a value. With `skipIfExists` nothing changes when the key is live
   * (set-if-absent). With `ttlMs` the key expires that many milliseconds from
   * now. Returns whether the value was stored.
   */
  put(dict: string, key: Buffer, value: Buffer, opts?: { skipIfExists?: boolean; ttlMs?: number }): Promise<boolean>;

  /** Whether a key is live. */
  contains(dict: string, key: Buffer): Promise<boolean>;

  /** Number of live keys (expired keys do not count, swept or not). */
  len(dict: string): Promise<number>;

  /** Stores many keys at once, atomically, without TTLs. A key given twice takes the last value. */
  update(dict: string, entries: readonly (readonly [Buffer, Buffer])[]): Promise<void>;

  /** Deletes a key and returns the value it had, or undefined if it was absent. */
  pop(dict: string, key: Buffer): Promise<Buffer | undefined>;

  /** Deletes a key. Returns whether it was live. */
  delete(dict: string, key: Buffer): Promise<boolean>;

  /** Deletes every key; the dict itself stays. */
  clear(dict: string): Promise<void>;

  /**
   * One page of a scan over the dict. Start without a cursor and pass each
   * returned cursor back until it is undefined. Each key that is live for the
   * whole scan is returned exactly once; keys written or deleted during the scan
   * may or may not be. Pages are bounded so that a scan never holds the whole
   * dict in memory. Order is the backend's (byte order of the keys, except that
   * LMDB orders keys over 1 KiB by a prefix and a hash).
   */
  scan(dict: string, opts: { cursor?: string; limit: number }): Promise<ScanPage>;

  /**
   * Adds `by` to the integer stored at a key (0 if absent) and returns the sum.
   * The value is stored as its decimal ASCII digits. FailedPreconditionError if
   * the existing value is not such an integer or the sum leaves the safe
   * integer range (±2^53-1).
   */
  incr(dict: string, key: Buffer, by?: number): Promise<number>;

  /**
   * Stores `value` only if the key's current version is `expectedVersion`
   * (0 means "the key is absent"). Atomic against every other write. With
   * `keepTtl` the key keeps the expiry it had (as incr does; `ttlMs` is then
   * ignored).
   */
  compareAndSet(
    dict: string,
    key: Buffer,
    expectedVersion: number,
    value: Buffer,
    opts?: { ttlMs?: number; keepTtl?: boolean },
  ): Promise<CasResult>;

  /** Releases connections and files. The backend is unusable afterwards. */
  close(): Promise<void>;
}
