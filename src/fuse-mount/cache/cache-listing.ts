/**
 * Which chunks a host's chunk cache directory holds, read from its layout
 * (disk-cache.ts: `<dir>/chunks/<hash[0..2]>/<hash>`) without opening the
 * cache. The compute bridge's worker reports this set so that calls are placed
 * where their data is. Temporary files (writes in progress) are not chunks.
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';

const HASH_FILE = /^[0-9a-f]{64}$/;
const SHARD = /^[0-9a-f]{2}$/;

/** The hashes of the chunk files under `<cacheDir>/chunks/`; empty when there is no such directory. */
export async function listCachedChunks(cacheDir: string): Promise<Set<string>> {
  const root = join(cacheDir, 'chunks');
  const out = new Set<string>();
  const shards = await readdir(root).catch(() => [] as string[]);
  await Promise.all(
    shards
      .filter((s) => SHARD.test(s))
      .map(async (shard) => {
        for (const name of await readdir(join(root, shard)).catch(() => [] as string[])) {
          if (HASH_FILE.test(name) && name.startsWith(shard)) out.add(name);
        }
      }),
  );
  return out;
}
