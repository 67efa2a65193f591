/**
 * Shared heads kept in the store itself, for servers over one bucket without
 * a Redis (`--heads s3`): an S3 that enforces conditional writes
 * (PutObject with If-None-Match: *) decides every race. The version record is
 * the compare-and-swap: a commit that built on version N lands by creating
 * `versions/<id>/<N+1>.json`, which only one writer can create. A name is
 * `heads/names/<name>.json` ({id}), created the same way; the volume record
 * stays `volumes/<id>.json`. A volume's head is found by asking for the
 * record after the newest one the server knows (one HEAD request, and a GET
 * per version it did not know). So a read of a volume's latest version costs
 * two or three requests to the store (name, record, the next version) where
 * Redis costs one round trip; reads of a known version cost none.
 *
 * The commit lock (`heads/locks/<id>.json`, with a holder and an expiry)
 * only keeps commits to one volume from racing and retrying: two holders at
 * once (an expired lock taken twice) cost a retry, never a version.
 *
 * An S3 that ignores If-None-Match would let two servers both create version
 * N+1, so `open` probes for it: it creates one key twice and refuses the
 * store when the second create succeeds. s3rver is such a store.
 */
import { randomUUID } from 'node:crypto';
import { FailedPreconditionError, NotFoundError, UnavailableError } from '../common/errors.js';
import type { SharedHeads, SharedVolume } from './shared.js';
import type { BlobStore } from './store/interface.js';
import { parseVersionRecord, versionKey, volumeRecordKey, type VersionRecord } from './versions.js';

const nameKey = (name: string) => `heads/names/${encodeURIComponent(name)}.json`;
const lockKey = (id: string) => `heads/locks/${id}.json`;
const heartbeatKey = (id: string) => `heads/heartbeats/${id}.json`;
const NAMES = 'heads/names/';
const HEARTBEATS = 'heads/heartbeats/';

type ConditionalStore = BlobStore & { putIfAbsent: NonNullable<BlobStore['putIfAbsent']> };

export class StoreSharedHeads implements SharedHeads {
  private constructor(private readonly store: ConditionalStore) {}

  /** Shared heads in `store`, after checking that it enforces conditional writes (FailedPreconditionError saying why not). */
  static async open(store: BlobStore): Promise<StoreSharedHeads> {
    const refuse = (why: string) =>
      new FailedPreconditionError(
        `--heads s3 needs a store that enforces conditional writes, and ${store.description} ${why}; without them two servers could both land version N of a volume: share the heads in Redis instead (--redis-url)`,
      );
    if (!store.putIfAbsent) throw refuse('cannot make them');
    const probe = `heads/probe/${randomUUID()}`;
    const first = await store.putIfAbsent(probe, Buffer.from('1'));
    const second = await store.putIfAbsent(probe, Buffer.from('2'));
    await store.delete(probe);
    if (!first || second) throw refuse('does not enforce them (a second PutObject with If-None-Match: * of one key succeeded)');
    return new StoreSharedHeads(store as ConditionalStore);
  }

  describe(): string {
    return `${this.store.description} (conditional writes)`;
  }

  async sync(name: string, known: (id: string) => number): Promise<SharedVolume | undefined> {
    const id = await this.idOf(name);
    if (!id) return undefined;
    const text = await this.getText(volumeRecordKey(id));
    const stored = text === undefined ? undefined : (JSON.parse(text) as { name: string; deletedAtMs?: number });
    if (!stored || stored.deletedAtMs !== undefined) return undefined;
    // The name object decides: a rename moves it before the record is rewritten.
    const record = JSON.stringify({ ...stored, name });
    let v = known(id);
    while ((await this.store.head(versionKey(id, v + 1))) !== undefined) v++;
    if (v === known(id)) return { record };
    const key = versionKey(id, v);
    return { record, head: parseVersionRecord(key, await this.store.get(key)) };
  }

  async all(known: (id: string) => number): Promise<SharedVolume[]> {
    const out: SharedVolume[] = [];
    for await (const key of this.store.list(NAMES)) {
      if (!key.endsWith('.json')) continue;
      const found = await this.sync(decodeURIComponent(key.slice(NAMES.length, -'.json'.length)), known);
      if (found) out.push(found);
    }
    return out;
  }

  create(name: string, id: string): Promise<boolean> {
    return this.store.putIfAbsent(nameKey(name), Buffer.from(JSON.stringify({ id })));
  }

  seed(name: string, id: string): Promise<boolean> {
    return this.create(name, id);
  }

  async rename(name: string, newName: string, id: string): Promise<'ok' | 'gone' | 'taken'> {
    if ((await this.idOf(name)) !== id) return 'gone';
    if (!(await this.create(newName, id))) return 'taken';
    await this.store.delete(nameKey(name));
    return 'ok';
  }

  async update(name: string, id: string): Promise<boolean> {
    return (await this.idOf(name)) === id;
  }

  async remove(name: string, id: string): Promise<boolean> {
    if ((await this.idOf(name)) !== id) return false;
    await this.store.delete(nameKey(name));
    await this.store.delete(heartbeatKey(id));
    return true;
  }

  async lock(id: string, token: string, ttlMs: number): Promise<boolean> {
    const mine = Buffer.from(JSON.stringify({ token, expiresAtMs: Date.now() + ttlMs }));
    if (await this.store.putIfAbsent(lockKey(id), mine)) return true;
    const held = await this.getText(lockKey(id));
    const cur = held === undefined ? undefined : (JSON.parse(held) as { token: string; expiresAtMs: number });
    if (cur?.token === token) {
      await this.store.put(lockKey(id), mine);
      return true;
    }
    if (cur && cur.expiresAtMs > Date.now()) return false;
    // Expired (its holder died) or just released: take it over.
    await this.store.delete(lockKey(id));
    return this.store.putIfAbsent(lockKey(id), mine);
  }

  async unlock(id: string, token: string): Promise<void> {
    const held = await this.getText(lockKey(id));
    if (held !== undefined && (JSON.parse(held) as { token: string }).token === token) await this.store.delete(lockKey(id));
  }

  async advance(name: string, id: string, expected: number, head: VersionRecord): Promise<void> {
    if (!(await this.store.putIfAbsent(versionKey(id, expected + 1), Buffer.from(JSON.stringify(head))))) {
      throw new UnavailableError(
        `commit to volume "${name}" did not land: another commit landed version ${expected + 1} meanwhile; nothing of it is visible, retry it`,
      );
    }
  }

  async heartbeat(id: string, atMs: number): Promise<void> {
    await this.store.put(heartbeatKey(id), Buffer.from(String(atMs)));
  }

  async heartbeats(): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    for await (const key of this.store.list(HEARTBEATS)) {
      const at = await this.getText(key);
      if (at !== undefined) out.set(key.slice(HEARTBEATS.length, -'.json'.length), Number(at));
    }
    return out;
  }

  async close(): Promise<void> {
    // Nothing held open.
  }

  private async idOf(name: string): Promise<string | undefined> {
    const text = await this.getText(nameKey(name));
    return text === undefined ? undefined : (JSON.parse(text) as { id: string }).id;
  }

  private async getText(key: string): Promise<string | undefined> {
    try {
      return (await this.store.get(key)).toString('utf8');
    } catch (err) {
      if (err instanceof NotFoundError) return undefined;
      throw err;
    }
  }
}
