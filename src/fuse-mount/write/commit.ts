/**
 * A writable mount's commit: the staged changes a snapshot froze
 * (staging.ts) become one new version of the volume through the SDK, in one
 * batch: the staged files uploaded (only chunks the store lacks move),
 * committed files under a new path or mode put as they are stored (no bytes
 * move), and removals. Every put overwrites (force): when two mounts write
 * one path, the later commit wins.
 *
 * A removal of a file the latest version no longer has (another writer
 * removed it) is dropped rather than failing the commit.
 */
import pLimit from 'p-limit';
import type { CommitResult as BatchResult, TransferProgress, Volume } from '../../client/volume.js';
import { NotFoundError } from '../../common/errors.js';
import type { Snapshot } from './staging.js';

/** Stats of removed paths in flight at once. */
const STATS_AT_ONCE = 8;

/** What asked for a commit. */
export type CommitTrigger = 'request' | 'fsync' | 'unmount';

export interface CommitResult {
  /** The version the mount served before. */
  from: number;
  /** The version the commit made; `from` when there was nothing to commit. */
  version: number;
  /** Staged files uploaded, and their bytes. */
  files: number;
  bytes: number;
  /** Committed files put again under a new path or mode (no bytes moved). */
  renamed: number;
  removed: number;
  chunksTransferred: number;
  bytesTransferred: number;
  seconds: number;
}

/** What a mount reports about its commits, as they happen. */
export type CommitEvent =
  | { kind: 'start'; trigger: CommitTrigger; files: number; bytes: number; renamed: number; removed: number }
  | { kind: 'progress'; trigger: CommitTrigger; progress: TransferProgress }
  | { kind: 'done'; trigger: CommitTrigger; result: CommitResult }
  | { kind: 'failed'; trigger: CommitTrigger; error: string; stagingDir: string };

/** Commits `snap` to `vol` as one version. */
export async function commitSnapshot(
  vol: Volume,
  snap: Snapshot,
  onProgress?: (p: TransferProgress) => void,
): Promise<BatchResult & { removed: number }> {
  const batch = vol.batchUpload({ force: true, onProgress });
  for (const p of snap.puts) batch.putFile(p.source, p.path, { mode: p.mode, mtimeMs: p.mtimeMs });
  for (const e of snap.existing) batch.putExisting(e.node.entry, e.path, { mode: e.node.mode });
  // Each removal is checked by a stat of its path (the cost of the removals, not of the volume).
  const limit = pLimit(STATS_AT_ONCE);
  const present = await Promise.all(
    snap.removes.map((r) =>
      limit(async () => {
        try {
          return (await vol.stat(r)).type === 'file';
        } catch (err) {
          if (err instanceof NotFoundError) return false;
          throw err;
        }
      }),
    ),
  );
  let removed = 0;
  snap.removes.forEach((r, i) => {
    if (!present[i]) return;
    batch.removeFile(r);
    removed++;
  });
  return { ...(await batch.commit()), removed };
}
