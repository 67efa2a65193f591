/**
 * A BlobStore that kills its own process at a chosen point, for crash tests
 * of a real server process (as Mountpoint's failure_client wraps its S3
 * client). Chosen by STOWAGE_TEST_FAULTS, a comma-separated list of:
 *   kill-before-put:PREFIX   SIGKILL instead of the first put of a key under PREFIX
 *   kill-after-put:PREFIX    SIGKILL right after the first put of a key under PREFIX
 *   kill-after-deletes:N     SIGKILL right after the Nth delete
 * Nothing else changes; without the variable the store is used as it is.
 */
import { InvalidArgumentError } from '../../common/errors.js';
import type { BlobStore, ByteRange, StoredObject } from './interface.js';

type Rule = { when: 'before-put' | 'after-put'; prefix: string } | { when: 'after-deletes'; count: number };

function parse(spec: string): Rule[] {
  return spec
    .split(',')
    .filter(Boolean)
    .map((part): Rule => {
      const [what, arg = ''] = part.split(/:(.*)/s);
      if (what === 'kill-before-put') return { when: 'before-put', prefix: arg };
      if (what === 'kill-after-put') return { when: 'after-put', prefix: arg };
      if (what === 'kill-after-deletes' && /^\d+$/.test(arg)) return { when: 'after-deletes', count: Number(arg) };
      throw new InvalidArgumentError(`STOWAGE_TEST_FAULTS: unknown fault ${JSON.stringify(part)}`);
    });
}

function die(): never {
  process.kill(process.pid, 'SIGKILL');
  throw new Error('unreachable');
}

export function withFaults(store: BlobStore, spec: string | undefined): BlobStore {
  if (!spec) return store;
  const rules = parse(spec);
  let deletes = 0;
  const wrapped: BlobStore = {
    description: store.description,
    presignScope: store.presignScope,
    async put(key: string, data: Uint8Array) {
      if (rules.some((r) => r.when === 'before-put' && key.startsWith(r.prefix))) die();
      await store.put(key, data);
      if (rules.some((r) => r.when === 'after-put' && key.startsWith(r.prefix))) die();
    },
    get: (key: string, range?: ByteRange) => store.get(key, range),
    head: (key: string) => store.head(key),
    async delete(key: string) {
      await store.delete(key);
      deletes++;
      if (rules.some((r) => r.when === 'after-deletes' && deletes >= r.count)) die();
    },
    list: (prefix: string) => store.list(prefix),
    scan: (prefix: string): AsyncIterable<StoredObject> => store.scan(prefix),
  };
  if (store.putIfAbsent) wrapped.putIfAbsent = (key, data) => store.putIfAbsent!(key, data);
  if (store.move) wrapped.move = (from, to) => store.move!(from, to);
  if (store.presignGet) wrapped.presignGet = (key, s) => store.presignGet!(key, s);
  if (store.presignPut) wrapped.presignPut = (key, s) => store.presignPut!(key, s);
  return wrapped;
}
