/**
 * One contract suite for every BlobStore (src/volume-server/store/interface.ts),
 * run unchanged on the local-directory store and on the S3 store against
 * s3rver: whole and ranged reads, head, delete, lexical listing with paging,
 * idempotent and atomic puts, NotFoundError for a missing key,
 * UnavailableError naming the store when it cannot be reached, and presigned
 * URLs. Then what only the local store promises.
 *
 * A point of the contract a store fails today is listed in its setup's
 * `fails` set; that test runs as `it.fails` (green while the store is wrong,
 * red once it is fixed: then drop the entry) and has a TODO naming the defect.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pLimit from 'p-limit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NotFoundError, UnavailableError } from '../src/common/errors.js';
import { readChunkFile, writeChunkFile } from '../src/client/local-files.js';
import type { BlobStore } from '../src/volume-server/store/interface.js';
import { LocalBlobStore } from '../src/volume-server/store/local.js';
import { S3BlobStore } from '../src/volume-server/store/s3.js';
import { failureOf } from './support/checks.js';
import { removeDir, startS3rver, tempDir, uniqueName, type S3Server } from './support/processes.js';

/** A way to make a store unreachable, and to undo it. */
interface Outage {
  name: string;
  begin(): Promise<void>;
  end(): Promise<void>;
}

interface StoreSetup {
  name: string;
  /** Whom presigned URLs serve: 'any' client, or only the server's host. */
  presignScope: 'any' | 'local-host';
  /** Contract tests this store fails today (see the TODO at each). */
  fails: ReadonlySet<string>;
  start(): Promise<void>;
  /** Ways this store can become unreachable (see `fresh`). */
  outages: string[];
  /** A store of its own (a new directory, or a new prefix in the bucket), and its outages by name. */
  fresh(): { store: BlobStore; outage(name: string): Outage };
  /** LIST requests the backing service has answered so far (S3 only). */
  listRequests?(): Promise<number>;
  stop(): Promise<void>;
}

function localSetup(): StoreSetup {
  let base = '';
  return {
    name: 'local directory',
    presignScope: 'local-host',
    fails: new Set(),
    outages: ['data dir removed', 'data dir not a directory'],
    async start() {
      base = tempDir('blob-store');
    },
    fresh() {
      const root = join(base, uniqueName('store'));
      mkdirSync(root);
      const restore = async () => {
        rmSync(root, { recursive: true, force: true });
        mkdirSync(root);
      };
      const outages: Outage[] = [
        {
          name: 'data dir removed',
          begin: async () => rmSync(root, { recursive: true, force: true }),
          end: restore,
        },
        {
          // Unwritable even for root (a mode of 0o000 stops only other users).
          name: 'data dir not a directory',
          begin: async () => {
            rmSync(root, { recursive: true, force: true });
            writeFileSync(root, 'not a directory');
          },
          end: restore,
        },
      ];
      return { store: new LocalBlobStore(root), outage: (name) => outages.find((o) => o.name === name)! };
    },
    async stop() {
      if (base) removeDir(base);
    },
  };
}

function s3Setup(): StoreSetup {
  let s3: S3Server | undefined;
  return {
    name: 'S3 (s3rver)',
    presignScope: 'any',
    fails: new Set(),
    outages: ['S3 server stopped'],
    async start() {
      s3 = await startS3rver();
    },
    fresh() {
      const server = s3!;
      return {
        store: new S3BlobStore(server.storeOptions()),
        outage: (name) => ({ name, begin: () => server.stop(), end: () => server.restart() }),
      };
    },
    async listRequests() {
      // A listing is a GET of the bucket; its path names no known kind.
      return (await s3!.stats())['GET other'] ?? 0;
    },
    async stop() {
      await s3?.stop();
      if (s3) removeDir(s3.dir);
    },
  };
}

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

async function keysOf(store: BlobStore, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const k of store.list(prefix)) keys.push(k);
  return keys;
}

/** Byte order of UTF-8, as S3 sorts keys (the same as UTF-16 order for ASCII keys). */
const lexical = (keys: string[]) => [...keys].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));

describe.each([localSetup(), s3Setup()])('BlobStore contract: $name', (setup) => {
  /** `it`, or `it.fails` (its name marked) for a point of the contract this store fails today. */
  const check = (name: string, fn: () => Promise<void>, timeout?: number) =>
    setup.fails.has(name) ? it.fails(`${name} [fails today: TODO]`, fn, timeout) : it(name, fn, timeout);

  beforeAll(() => setup.start());
  afterAll(() => setup.stop());

  check('put then get returns the bytes whole, and head their size', async () => {
    const { store } = setup.fresh();
    for (const size of [0, 1, 1000, 1024 * 1024 + 3]) {
      const data = randomBytes(size);
      const key = `objects/${size}`;
      await store.put(key, data);
      const got = await store.get(key);
      expect(Buffer.isBuffer(got), key).toBe(true);
      expect(got.length, key).toBe(size);
      expect(sha(got), key).toBe(sha(data));
      expect(await store.head(key), key).toBe(size);
    }
  });

  check('get reads a range: offset and length, offset to the end, a range running past the end', async () => {
    const { store } = setup.fresh();
    const data = randomBytes(1000);
    await store.put('ranged', data);
    const cases: [number, number | undefined][] = [
      [0, 10],
      [10, 100],
      [990, 10],
      [999, 1],
      [995, 100],
      [500, undefined],
      [999, undefined],
      [0, undefined],
      [0, 1000],
      [7, 0],
    ];
    for (const [offset, length] of cases) {
      const got = await store.get('ranged', { offset, length });
      const want = data.subarray(offset, length === undefined ? undefined : offset + length);
      expect(got.equals(want), `offset ${offset} length ${length}: ${got.length} bytes, want ${want.length}`).toBe(true);
    }
  });

  check('a range that starts at the end of the object reads no bytes', async () => {
    const { store } = setup.fresh();
    await store.put('ten', randomBytes(10));
    await store.put('empty', Buffer.alloc(0));
    expect((await store.get('ten', { offset: 10 })).length).toBe(0);
    expect((await store.get('ten', { offset: 10, length: 5 })).length).toBe(0);
    expect((await store.get('empty', { offset: 0 })).length).toBe(0);
  });

  check('head of an absent key is undefined; get of one is NotFoundError naming the key', async () => {
    const { store } = setup.fresh();
    const key = `absent/${uniqueName()}`;
    expect(await store.head(key)).toBeUndefined();
    for (const range of [undefined, { offset: 0 }, { offset: 3, length: 5 }]) {
      const err = await failureOf(() => store.get(key, range));
      expect(err, `range ${JSON.stringify(range)}: ${String(err)}`).toBeInstanceOf(NotFoundError);
      expect((err as Error).message).toContain(key);
    }
  });

  check('a zero-length range of an absent key is NotFoundError', async () => {
    const { store } = setup.fresh();
    const err = await failureOf(() => store.get(`absent/${uniqueName()}`, { offset: 0, length: 0 }));
    expect(err, String(err)).toBeInstanceOf(NotFoundError);
  });

  check('delete removes the object and no other; deleting an absent key is not an error', async () => {
    const { store } = setup.fresh();
    await store.put('dir/a', Buffer.from('a'));
    await store.put('dir/b', Buffer.from('b'));
    await store.delete('dir/a');
    expect(await store.head('dir/a')).toBeUndefined();
    expect(await failureOf(() => store.get('dir/a'))).toBeInstanceOf(NotFoundError);
    expect(await keysOf(store, 'dir/')).toEqual(['dir/b']);
    expect((await store.get('dir/b')).toString()).toBe('b');
    await store.delete('dir/a');
    await store.delete(`never/${uniqueName()}`);
    expect(await keysOf(store, '')).toEqual(['dir/b']);
  });

  check('a put of an existing key with the same bytes is harmless, also two at once', async () => {
    const { store } = setup.fresh();
    const data = randomBytes(200_000);
    await store.put('same', data);
    await store.put('same', data);
    await Promise.all([store.put('same', data), store.put('same', data)]);
    expect(sha(await store.get('same'))).toBe(sha(data));
    expect(await store.head('same')).toBe(data.length);
    expect(await keysOf(store, '')).toEqual(['same']);
  });

  // Not in the interface's words, but the catalogue relies on it: volume
  // records (volumes/<id>.json) are rewritten in place on rename and delete.
  check('a put of an existing key with other bytes replaces the object whole', async () => {
    const { store } = setup.fresh();
    await store.put('record', randomBytes(5000));
    const next = randomBytes(300);
    await store.put('record', next);
    expect((await store.get('record')).equals(next)).toBe(true);
    expect(await store.head('record')).toBe(300);
  });

  check('list yields the keys under a prefix in lexical order', async () => {
    const { store } = setup.fresh();
    // '-' < '.' < '/' < '0' < 'b' < 'z': keys whose order differs from a walk
    // of directories. No key is also the prefix of a deeper key: a directory
    // store cannot hold both, and stowage never makes both.
    const keys = ['p/a-b', 'p/a/b', 'p/a0', 'p/ab/c', 'p/b', 'p.x', 'pz', 'q/x', 'p-'];
    for (const k of lexical(keys).reverse()) await store.put(k, Buffer.from(k));
    expect(await keysOf(store, '')).toEqual(lexical(keys));
    expect(await keysOf(store, 'p/')).toEqual(['p/a-b', 'p/a/b', 'p/a0', 'p/ab/c', 'p/b']);
    expect(await keysOf(store, 'p')).toEqual(['p-', 'p.x', 'p/a-b', 'p/a/b', 'p/a0', 'p/ab/c', 'p/b', 'pz']);
    expect(await keysOf(store, 'p/a')).toEqual(['p/a-b', 'p/a/b', 'p/a0', 'p/ab/c']);
    expect(await keysOf(store, 'p/a/')).toEqual(['p/a/b']);
    expect(await keysOf(store, 'p/ab/c')).toEqual(['p/ab/c']);
    expect(await keysOf(store, 'nothing/')).toEqual([]);
    expect(await keysOf(store, 'q')).toEqual(['q/x']);
  });

  check(
    'list pages through more than 1000 keys, in order',
    async () => {
      const { store } = setup.fresh();
      const keys = Array.from({ length: 1100 }, (_, i) => `many/k${String(i).padStart(4, '0')}`);
      const limit = pLimit(16);
      // Put in a scrambled order so that the listing's order is the store's doing.
      await Promise.all(lexical(keys).reverse().map((k) => limit(() => store.put(k, Buffer.from(k)))));
      await store.put('manz', Buffer.from('after the prefix'));
      const before = await setup.listRequests?.();
      expect(await keysOf(store, 'many/')).toEqual(keys);
      const after = await setup.listRequests?.();
      // S3 answers at most 1000 keys per LIST: the store must have asked again.
      if (before !== undefined && after !== undefined) expect(after - before).toBeGreaterThanOrEqual(2);
      expect(await keysOf(store, 'many/k10')).toEqual(keys.slice(1000, 1100));
      expect(await keysOf(store, 'man')).toEqual([...keys, 'manz']);
    },
    120_000,
  );

  check('a reader racing a put sees the whole object or NotFoundError, never a prefix', async () => {
    const { store } = setup.fresh();
    for (let round = 0; round < 3; round++) {
      const data = randomBytes(8 * 1024 * 1024);
      const want = sha(data);
      for (const what of ['new key', 'same bytes again'] as const) {
        const key = `race/${round}`;
        const seen = new Map<string, number>();
        let done = false;
        const put = store.put(key, data).finally(() => (done = true));
        const reader = async () => {
          // At least one read after the put returned, so every reader reads the whole object once.
          for (let last = false; !last; ) {
            last = done;
            let saw: string;
            try {
              const got = await store.get(key);
              saw = got.length === data.length && sha(got) === want ? 'whole' : `${got.length} wrong bytes`;
            } catch (err) {
              saw = err instanceof NotFoundError && what === 'new key' ? 'absent' : String(err);
            }
            seen.set(saw, (seen.get(saw) ?? 0) + 1);
          }
        };
        await Promise.all([put, reader(), reader(), reader()]);
        const wrong = [...seen.keys()].filter((s) => s !== 'whole' && s !== 'absent');
        expect(wrong, `${what}, round ${round}: ${JSON.stringify([...seen])}`).toEqual([]);
        expect(seen.get('whole')).toBeGreaterThanOrEqual(3);
      }
    }
  });

  check('presigned URLs put and get the bytes without the store', async () => {
    const { store } = setup.fresh();
    expect(store.presignScope ?? 'any').toBe(setup.presignScope);
    expect(store.presignPut).toBeTypeOf('function');
    expect(store.presignGet).toBeTypeOf('function');
    const data = randomBytes(70_000);
    const putUrl = await store.presignPut!('signed/up', 300);
    if (setup.presignScope === 'local-host') {
      // file:// URLs, used the way the client's local-files.ts uses them.
      expect(putUrl.startsWith('file:')).toBe(true);
      await writeChunkFile(fileURLToPath(putUrl), data);
    } else {
      const res = await fetch(putUrl, { method: 'PUT', body: data });
      expect(res.status, await res.text()).toBe(200);
    }
    expect(sha(await store.get('signed/up'))).toBe(sha(data));
    expect(await keysOf(store, 'signed/')).toEqual(['signed/up']);

    const other = randomBytes(5000);
    await store.put('signed/down', other);
    const getUrl = await store.presignGet!('signed/down', 300);
    let got: Buffer;
    if (setup.presignScope === 'local-host') {
      expect(getUrl.startsWith('file:')).toBe(true);
      got = await readChunkFile(fileURLToPath(getUrl), 0, other.length + 10);
    } else {
      const res = await fetch(getUrl);
      expect(res.status).toBe(200);
      got = Buffer.from(await res.arrayBuffer());
    }
    expect(sha(got)).toBe(sha(other));
  });

  // Each operation while the store cannot be reached: UnavailableError, naming
  // the store (its description), never a backend's own error type.
  const ops: [string, (s: BlobStore) => Promise<unknown>][] = [
    ['put', (s) => s.put('k2', Buffer.from('x'))],
    ['get', (s) => s.get('k')],
    ['head', (s) => s.head('k')],
    ['delete', (s) => s.delete('k')],
    ['list', (s) => keysOf(s, '')],
  ];
  for (const outageName of setup.outages) {
    for (const [op, run] of ops) {
      check(`${outageName}: ${op}`, async () => {
        const { store, outage: outageNamed } = setup.fresh();
        const outage = outageNamed(outageName);
        await store.put('k', Buffer.from('there before'));
        await outage.begin();
        let err: unknown;
        try {
          err = await failureOf(() => run(store));
        } finally {
          await outage.end();
        }
        expect(err, String(err)).toBeInstanceOf(UnavailableError);
        expect((err as Error).message).toContain(store.description);
      });
    }
  }
});

describe('BlobStore: what only the local directory store promises', () => {
  it('a temporary file left by an interrupted put is no object', async () => {
    const root = join(tempDir('blob-store'), 'store');
    const store = new LocalBlobStore(root);
    await store.put('chunks/ab/whole', Buffer.from('whole'));
    // What writeFileAtomic leaves when the process dies before its rename.
    writeFileSync(join(root, 'chunks', 'ab', 'torn.tmp-0123456789ab'), 'to');
    expect(await keysOf(store, '')).toEqual(['chunks/ab/whole']);
    expect(await store.head('chunks/ab/torn')).toBeUndefined();
    expect(await failureOf(() => store.get('chunks/ab/torn'))).toBeInstanceOf(NotFoundError);
    expect(store.description).toContain(root);
    const url = await store.presignGet('chunks/ab/whole');
    expect(fileURLToPath(url)).toBe(join(root, 'chunks', 'ab', 'whole'));
  });
});
