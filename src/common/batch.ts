/**
 * What the dict and queue services share in running a batch: grouping op
 * indexes by a key (ops that one backend call can serve together), and
 * settling every op's promise into a result, a failure becoming that op's
 * error rather than the batch's.
 */
import { toOpError, type OpErrorMessage } from './grpc-errors.js';
import type { IdleTracker } from './idle.js';
import type { Logger } from './logger.js';

export function addToGroup(groups: Map<string, number[]>, key: string, index: number): void {
  const g = groups.get(key);
  if (g) g.push(index);
  else groups.set(key, [index]);
}

/**
 * Each op's outcome, never rejecting. A success marks the op's dict or queue as used; a
 * failure becomes `failed(error)`, and one that is not a StowageError (a bug,
 * not the caller's mistake) is logged.
 */
export function settleOps<R>(
  names: readonly string[],
  results: readonly Promise<R>[],
  failed: (error: OpErrorMessage) => R,
  idle: IdleTracker,
  log: Logger,
): Promise<R>[] {
  return results.map((p, i) =>
      p.then(
        (r) => {
          idle.mark(names[i]!);
          return r;
        },
        (err: unknown) => {
          if ((err as { code?: string }).code === undefined) log.warn({ err }, 'operation failed');
          return failed(toOpError(err));
        },
      ),
  );
}
