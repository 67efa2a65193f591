/**
 * Scoped-token records in the bucket, for servers that share their volumes'
 * heads there (`--heads s3`, volume-server/store-heads.ts): one object per
 * token, `heads/tokens/<id>.json` (the secret's hash only), created with a
 * conditional write. The store tells nobody of a change, so the other servers
 * learn of one at their next full reload (common/tokens.ts SHARED_RELOAD_MS),
 * and a server asked to revoke reads the record from the store first.
 */
import { NotFoundError } from '../common/errors.js';
import type { SharedTokenRecords, TokenRecord } from '../common/tokens.js';
import type { BlobStore } from '../volume-server/store/interface.js';

const PREFIX = 'heads/tokens/';
const keyOf = (id: string) => `${PREFIX}${id}.json`;

export class StoreTokenRecords implements SharedTokenRecords {
  constructor(private readonly store: BlobStore & { putIfAbsent: NonNullable<BlobStore['putIfAbsent']> }) {}

  async all(): Promise<TokenRecord[]> {
    const out: TokenRecord[] = [];
    for await (const key of this.store.list(PREFIX)) {
      if (!key.endsWith('.json')) continue;
      const r = await this.get(key.slice(PREFIX.length, -'.json'.length));
      if (r) out.push(r);
    }
    return out;
  }

  async get(id: string): Promise<TokenRecord | undefined> {
    try {
      return JSON.parse((await this.store.get(keyOf(id))).toString('utf8')) as TokenRecord;
    } catch (err) {
      if (err instanceof NotFoundError) return undefined;
      throw err;
    }
  }

  add(record: TokenRecord): Promise<boolean> {
    return this.store.putIfAbsent(keyOf(record.id), Buffer.from(JSON.stringify(record)));
  }

  async put(record: TokenRecord): Promise<void> {
    await this.store.put(keyOf(record.id), Buffer.from(JSON.stringify(record)));
  }

  async watch(): Promise<void> {
    // No change notices from a bucket: the reloads carry them.
  }

  async close(): Promise<void> {
    // Nothing held open.
  }
}
