/**
 * BlobStore: where immutable chunks, packs, tree objects, version records and volume records live.
 *
 * Invariants every implementation keeps:
 * - put is atomic: a reader sees the whole object or no object, never a prefix.
 * - put of a key that exists with the same bytes is harmless (all calls are
 *   idempotent), so a retried or repeated upload never corrupts anything.
 * - Failures to reach the backing service are UnavailableError naming it; a
 *   missing key is NotFoundError. Nothing else leaks backend error types.
 * test/blob-store-contract.test.ts checks these on every store.
 */
export interface ByteRange {
  offset: number;
  /** Bytes to read from offset; undefined reads to the end. */
  length?: number;
}

export interface StoredObject {
  key: string;
  size: number;
  modifiedMs: number;
}

export interface BlobStore {
  /** Human-readable location, for messages: "s3://bucket/prefix (endpoint)" or a directory. */
  readonly description: string;
  /** Writes the object whole. */
  put(key: string, data: Uint8Array): Promise<void>;
  /** Reads the object or a range of it. NotFoundError when absent. */
  get(key: string, range?: ByteRange): Promise<Buffer>;
  /** The object's size, or undefined when absent. */
  head(key: string): Promise<number | undefined>;
  /** Removes the object; absent is not an error. */
  delete(key: string): Promise<void>;
  /** Keys under a prefix, in lexical order. */
  list(prefix: string): AsyncIterable<string>;
  /**
   * Objects under a prefix with their size and last change (garbage
   * collection keeps what is younger than its grace period), in lexical order.
   */
  scan(prefix: string): AsyncIterable<StoredObject>;
  /**
   * Writes the object whole only if no object has the key (S3 PutObject with
   * If-None-Match: *; an exclusive create in a directory): true when this
   * call created it, false when one was there. Of several concurrent calls
   * for one key, one gets true. An S3 that ignores If-None-Match (s3rver)
   * answers true every time: shared heads in the store probe for that at
   * start (store-heads.ts) and refuse it. Stores that cannot leave it undefined.
   */
  putIfAbsent?(key: string, data: Uint8Array): Promise<boolean>;
  /**
   * Renames an object within the store, atomically, replacing `to`; stores
   * that cannot rename leave it undefined (the caller copies and deletes).
   */
  move?(from: string, to: string): Promise<void>;
  /**
   * Presigned URLs let clients move bytes without passing through the server.
   * Stores that cannot presign (the local directory) leave these undefined.
   */
  presignPut?(key: string, expiresInSeconds: number): Promise<string>;
  presignGet?(key: string, expiresInSeconds: number): Promise<string>;
  /**
   * Who can use those URLs: 'any' client (S3), or only clients on the
   * server's host ('local-host': file:// URLs into the local directory).
   */
  readonly presignScope?: 'any' | 'local-host';
}

/** Key of a blob (chunk or pack) by its SHA-256. Only bytes checked against the hash are ever stored under it. */
export function blobKey(hash: string): string {
  return `chunks/${hash.slice(0, 2)}/${hash}`;
}

/**
 * Where a client on the server's host writes a blob itself (a file:// URL of
 * the local store): the server checks the bytes against the hash before it
 * moves them to blobKey, at the commit that first uses them.
 */
export function incomingKey(hash: string): string {
  return `incoming/${hash.slice(0, 2)}/${hash}`;
}
