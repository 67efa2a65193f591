/**
 * A BlobStore that counts its operations (kind and outcome) and the bytes
 * they move, for the server's metrics; the store underneath is used as it is
 * (as faults.ts wraps it for crash tests). A list or scan counts once, when
 * its iteration ends (S3 pages are not counted apart); a head of an absent
 * key, like a get of one, is `not_found`. Presigning makes no request, but
 * is counted: how many URLs the server hands out is what it tells.
 * test/metrics.test.ts ("the BlobStore wrapper") checks the counts.
 */
import { NotFoundError } from '../../common/errors.js';
import type { StoreOp, StoreOutcome } from '../../common/metrics.js';
import type { BlobStore, ByteRange, StoredObject } from './interface.js';

/** Where the counts go (Metrics has this shape). */
export interface StoreRecorder {
  /** One operation; `bytesIn` were written to the store, `bytesOut` read from it. */
  storeRequest(op: StoreOp, outcome: StoreOutcome, bytesIn?: number, bytesOut?: number): void;
}

const outcomeOf = (err: unknown): StoreOutcome => (err instanceof NotFoundError ? 'not_found' : 'error');

/** `store`, with each operation told to `recorder` once it ends (see the head of this file). */
export function withMetrics(store: BlobStore, recorder: StoreRecorder): BlobStore {
  const counted = async <T>(op: StoreOp, run: () => Promise<T>, moved: (r: T) => [number, number] = () => [0, 0]): Promise<T> => {
    let r: T;
    try {
      r = await run();
    } catch (err) {
      recorder.storeRequest(op, outcomeOf(err));
      throw err;
    }
    const [bytesIn, bytesOut] = moved(r);
    recorder.storeRequest(op, 'ok', bytesIn, bytesOut);
    return r;
  };
  async function* iterated<T>(op: StoreOp, items: AsyncIterable<T>): AsyncGenerator<T> {
    let outcome: StoreOutcome = 'ok';
    try {
      yield* items;
    } catch (err) {
      outcome = outcomeOf(err);
      throw err;
    } finally {
      recorder.storeRequest(op, outcome);
    }
  }
  const wrapped: BlobStore = {
    description: store.description,
    presignScope: store.presignScope,
    put: (key: string, data: Uint8Array) => counted('put', () => store.put(key, data), () => [data.length, 0]),
    get: (key: string, range?: ByteRange) => counted('get', () => store.get(key, range), (b) => [0, b.length]),
    async head(key: string) {
      let size: number | undefined;
      try {
        size = await store.head(key);
      } catch (err) {
        recorder.storeRequest('head', outcomeOf(err));
        throw err;
      }
      recorder.storeRequest('head', size === undefined ? 'not_found' : 'ok');
      return size;
    },
    delete: (key: string) => counted('delete', () => store.delete(key)),
    list: (prefix: string) => iterated('list', store.list(prefix)),
    scan: (prefix: string): AsyncIterable<StoredObject> => iterated('scan', store.scan(prefix)),
  };
  if (store.putIfAbsent) wrapped.putIfAbsent = (key, data) => counted('put', () => store.putIfAbsent!(key, data), () => [data.length, 0]);
  if (store.move) wrapped.move = (from, to) => counted('move', () => store.move!(from, to));
  if (store.presignGet) wrapped.presignGet = (key, s) => counted('presign_get', () => store.presignGet!(key, s));
  if (store.presignPut) wrapped.presignPut = (key, s) => counted('presign_put', () => store.presignPut!(key, s));
  return wrapped;
}
