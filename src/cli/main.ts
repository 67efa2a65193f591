/** The `stowage` command: parses arguments, runs one command group, maps errors to exit codes. */
import { Command, CommanderError } from 'commander';
import { closeDefaultConnection } from '../client/index.js';
import { ErrorCode, StowageError, messageOf } from '../common/errors.js';
import { register as registerBridge } from './bridge.js';
import { register as registerDict } from './dict.js';
import { register as registerMount } from './mount.js';
import { register as registerQueue } from './queue.js';
import { register as registerRun } from './run.js';
import { register as registerServe } from './serve.js';
import { register as registerToken } from './token.js';
import { guardUnfinished } from './unfinished.js';
import { register as registerVolume } from './volume.js';
import { register as registerWorker } from './worker.js';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

/** Exit codes scripts can rely on. */
const EXIT: Record<ErrorCode, number> = {
  INVALID_ARGUMENT: 2,
  NOT_FOUND: 3,
  ALREADY_EXISTS: 4,
  FAILED_PRECONDITION: 5,
  UNAVAILABLE: 6,
  UNAUTHENTICATED: 7,
  INTEGRITY: 8,
  DEADLINE_EXCEEDED: 9,
  FUNCTION_ERROR: 10,
  RESOURCE_EXHAUSTED: 11,
  PERMISSION_DENIED: 12,
  INTERNAL: 1,
};

const program = new Command('stowage')
  .description('storage for serverless compute: volumes, dict, queue, and a compute bridge')
  .option('--server <host:port>', 'stowage server (default: STOWAGE_SERVER or 127.0.0.1:7420)')
  .hook('preAction', (cmd) => {
    const server = cmd.opts<{ server?: string }>().server;
    if (server) process.env.STOWAGE_SERVER = server;
  })
  .exitOverride()
  .showHelpAfterError();

registerServe(program);
registerVolume(program);
registerDict(program);
registerQueue(program);
registerMount(program);
registerRun(program);
registerWorker(program);
registerBridge(program);
registerToken(program);

// The command's words (short lowercase ones: its arguments may be anything), for the message of a lost command.
const words = process.argv.slice(2).filter((a) => /^[a-z][a-z-]{0,31}$/.test(a)).slice(0, 2).join(' ');
const finished = guardUnfinished(words || 'command');
try {
  await program.parseAsync(process.argv);
  finished();
  closeDefaultConnection();
} catch (err) {
  finished();
  closeDefaultConnection();
  if (err instanceof CommanderError) {
    process.exitCode = err.exitCode === 0 ? 0 : 2;
  } else {
    console.error(`error: ${messageOf(err)}`);
    process.exitCode = err instanceof StowageError ? EXIT[err.code] : 1;
    if (!(err instanceof StowageError) && process.env.STOWAGE_DEBUG) console.error(err);
  }
}
