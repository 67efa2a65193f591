/**
 * LMDB (lmdb-js) as every stowage store opens and writes it: the dict, the
 * queue, the bridge's calls and the volume index. One job: a write that fails to commit (the disk is full) fails the
 * call that made it with an error naming the store and what to do, reads go
 * on working, and writes work again by themselves once space comes back.
 *
 * lmdb-js 3.5 stands in the way three times; each is handled here, not in the
 * backends:
 * - With event-turn batching (its default) each batch of writes carries a
 *   promise of lmdb-js's own that no caller holds. A failed commit rejects it:
 *   an unhandled rejection, which ends the process. Environments are opened
 *   with `eventTurnBatching: false`; writes still group, as transaction()
 *   callbacks queued while a commit runs share the next one.
 * - The caller's error says only "Commit failed"; the cause (ENOSPC, EIO…) is
 *   in its `commitError`, a second promise that rejects just after and ends
 *   the process too unless someone handles it. `lmdbWriteError` always does.
 * - A plain `db.put()` outside a transaction whose commit fails corrupts the
 *   write buffers of lmdb-js (glibc aborts the process at the next write). So
 *   every write goes through `LmdbEnv.transaction`, never a bare put/remove.
 *
 * An LMDB commit that hits a full disk is reported as ENOSPC, or as EIO when
 * the write came up short ("short write, filesystem full?" in mdb.c): an EIO
 * with under LOW_SPACE_BYTES free is taken for a full disk too.
 *
 * Files are private to the server's user: the environment's directory is made
 * 0700 and its files (data.mdb, lock.mdb) 0600, whatever the umask.
 */
import { statfs } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { open, type RootDatabase, type RootDatabaseOptionsWithPath } from 'lmdb';
import { ResourceExhaustedError, StowageError, UnavailableError, messageOf } from './errors.js';
import { PRIVATE, ensureDir } from './file-modes.js';
import type { Logger } from './logger.js';

/** Free space under which an EIO from a commit is taken for a full disk. */
const LOW_SPACE_BYTES = 64 * 1024 * 1024;
/** How long to wait for `commitError` to settle (it does in the same turn; this only bounds a surprise). */
const CAUSE_WAIT_MS = 1000;

const ENOSPC = 28;
const EDQUOT = 122;
const EIO = 5;
const MDB_MAP_FULL = -30792;

export interface LmdbEnvOptions {
  /** The environment's directory (created 0700 if missing). */
  dir: string;
  /** What it holds, for messages: "dict store", "queue store", … */
  what: string;
  log: Logger;
}

/** One LMDB environment and the only way to write to it. */
export class LmdbEnv {
  readonly root: RootDatabase;
  readonly dir: string;
  readonly what: string;
  private readonly log: Logger;
  /** Whether the last write failed for lack of space (so that the change is logged once each way). */
  private exhausted = false;

  constructor(opts: LmdbEnvOptions) {
    this.dir = opts.dir;
    this.what = opts.what;
    this.log = opts.log;
    try {
      ensureDir(opts.dir, PRIVATE);
      const options: RootDatabaseOptionsWithPath & { permissionsMode: number } = {
        path: opts.dir,
        compression: false,
        eventTurnBatching: false,
        permissionsMode: PRIVATE.file,
      };
      this.root = open(options);
    } catch (err) {
      throw describeFailure(err, this.what, this.dir, undefined) ?? err;
    }
  }

  /**
   * Runs `fn` in a write transaction and resolves with its result once the
   * transaction is committed. `fn` runs synchronously inside it; its puts and
   * removes are applied at once (`void db.put(…)` is right there). If `fn`
   * throws, its error is the result, and the writes it made before throwing
   * are kept (lmdb-js does not roll a throwing callback back): check first,
   * then write. If the commit fails, none of the transaction's writes is kept
   * and the promise rejects with ResourceExhaustedError (no space) or
   * UnavailableError (another I/O failure), both naming this store.
   */
  async transaction<T>(fn: () => T): Promise<T> {
    let result: T;
    try {
      result = await this.root.transaction(fn);
    } catch (err) {
      const failure = await lmdbWriteError(err, this.what, this.dir);
      if (failure instanceof ResourceExhaustedError && !this.exhausted) {
        this.exhausted = true;
        this.log.warn({ dir: this.dir }, failure.message);
      }
      throw failure;
    }
    if (this.exhausted) {
      this.exhausted = false;
      this.log.info({ dir: this.dir }, `the ${this.what} in ${this.dir} can be written again`);
    }
    return result;
  }

  async close(): Promise<void> {
    await this.root.close();
  }
}

/**
 * The error to report for `err`, thrown by an lmdb-js write: a
 * ResourceExhaustedError when the disk (or the LMDB map) is full, an
 * UnavailableError for another failed commit, and anything else unchanged
 * (a StowageError thrown by the transaction's own checks, a bug). Handles the
 * error's `commitError` promise, so that it never becomes an unhandled
 * rejection.
 */
export async function lmdbWriteError(err: unknown, what: string, dir: string): Promise<unknown> {
  if (err instanceof StowageError) return err;
  const commitError = (err as { commitError?: unknown } | undefined)?.commitError;
  let cause = err;
  if (commitError instanceof Promise) {
    cause = await Promise.race([
      commitError.then(
        () => err,
        (c: unknown) => c,
      ),
      sleep(CAUSE_WAIT_MS, err, { ref: false }),
    ]);
  }
  const free = errnoOf(cause) === EIO ? await freeBytes(dir) : undefined;
  const described = describeFailure(cause, what, dir, free);
  if (described) return described;
  if (commitError instanceof Promise) {
    return new UnavailableError(`cannot write the ${what} in ${dir}: the commit failed (${messageOf(cause)}); check that disk, then retry`, { cause });
  }
  return err;
}

function describeFailure(cause: unknown, what: string, dir: string, free: number | undefined): StowageError | undefined {
  const code = errnoOf(cause);
  const retry = 'free space on that disk, then retry';
  if (code === ENOSPC || code === EDQUOT) {
    return new ResourceExhaustedError(`no space left for the ${what} in ${dir}: ${code === ENOSPC ? 'ENOSPC' : 'EDQUOT, over quota'} (${retry})`, { cause });
  }
  if (code === MDB_MAP_FULL) {
    return new ResourceExhaustedError(`no space left for the ${what} in ${dir}: its LMDB map is full, MDB_MAP_FULL (${retry})`, { cause });
  }
  if (code === EIO && free !== undefined && free < LOW_SPACE_BYTES) {
    return new ResourceExhaustedError(`no space left for the ${what} in ${dir}: EIO with ${free} bytes free (${retry})`, { cause });
  }
  if (code === EIO) {
    return new UnavailableError(`cannot write the ${what} in ${dir}: EIO, an input/output error (check that disk, then retry)`, { cause });
  }
  return undefined;
}

/** lmdb-js errors carry a numeric errno (or an MDB_ code) in `code`; Node's fs errors a name. */
function errnoOf(err: unknown): number | undefined {
  const code = (err as { code?: unknown } | undefined)?.code;
  if (typeof code === 'number') return code;
  if (code === 'ENOSPC') return ENOSPC;
  if (code === 'EDQUOT') return EDQUOT;
  if (code === 'EIO') return EIO;
  return undefined;
}

async function freeBytes(dir: string): Promise<number | undefined> {
  try {
    const s = await statfs(dir);
    return s.bavail * s.bsize;
  } catch {
    return undefined;
  }
}
