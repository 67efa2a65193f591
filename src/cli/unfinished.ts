/**
 * The CLI never exits 0 without having done what it was asked.
 *
 * Node exits when nothing is left that could wake it (no socket, timer or
 * child it waits on), even while a promise is still pending; and the command
 * runs in a module that bin/stowage.js loads with import(), whose pending
 * top-level await does not make Node fail (exit 13) the way the entry
 * module's would. So a command whose call was lost (a connection that went
 * silent without closing) used to end with status 0, printing nothing. The
 * guard turns that into a non-zero exit with a message. Tested in
 * test/cli-exit.test.ts.
 */

/** Exit status of a command that ended without finishing (1: an internal fault, as for any bug). */
export const UNFINISHED_EXIT = 1;

/**
 * From now until the returned function is called, Node going idle means the
 * command `what` was lost: it prints why and exits UNFINISHED_EXIT. Commands
 * that exit on their own (process.exit) are not affected.
 */
export function guardUnfinished(what: string): () => void {
  const onIdle = () => {
    console.error(
      `error: stowage ${what} stopped before it finished: it was waiting for an answer that can no longer come. ` +
        'Whether it took effect is unknown: check before you retry it. This is a bug; please report it (STOWAGE_DEBUG=1 prints more).',
    );
    process.exit(UNFINISHED_EXIT);
  };
  process.once('beforeExit', onIdle);
  return () => process.off('beforeExit', onIdle);
}
