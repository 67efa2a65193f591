/** The `stowage` command: parses arguments, runs one command group, maps errors to exit codes. */
import { Command, CommanderError, Help, Option } from 'commander';
import { closeDefaultConnection } from '../client/index.js';
import { ErrorCode, StowageError, messageOf } from '../common/errors.js';
import { absolutePem } from '../common/tls.js';
import { stowageVersion } from '../common/version.js';
import { register as registerBridge } from './bridge.js';
import { register as registerCerts } from './certs.js';
import { register as registerCompletion } from './completion.js';
import { register as registerDict } from './dict.js';
import { register as registerMount } from './mount.js';
import { register as registerQueue } from './queue.js';
import { register as registerRun } from './run.js';
import { register as registerServe } from './serve.js';
import { register as registerToken } from './token.js';
import { guardUnfinished } from './unfinished.js';
import { register as registerVolume } from './volume.js';
import { register as registerWorker } from './worker.js';

// Node 20 reached end of life in April 2026, and AWS SDK releases from January 2027 need
// Node 22: say so in one line on stderr (never stdout, which --json owns). The SDK's own
// multi-line warning (NodeVersionSupportWarning, once per process that makes an S3 client)
// is left alone. STOWAGE_NODE_WARNED is inherited by the stowage processes this one starts
// (a worker's mounts), so a process tree says it once.
if (Number(process.versions.node.split('.')[0]) < 22 && !process.env.STOWAGE_NODE_WARNED) {
  process.env.STOWAGE_NODE_WARNED = '1';
  process.stderr.write(
    `stowage: Node ${process.version} is past its end of life (Node 20 reached it in April 2026); AWS SDK releases from January 2027 need Node 22 or newer: use Node 22 or 24\n`,
  );
}
// grpc-js names an IP address target as the TLS ServerName, and Node warns about that
// (DEP0123) once per process; the certificate is still checked against the address.
const emitWarning = process.emitWarning.bind(process);
process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
  if (rest.includes('DEP0123')) return;
  (emitWarning as (w: string | Error, ...r: unknown[]) => void)(warning, ...rest);
}) as typeof process.emitWarning;

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
  CANCELLED: 13,
  INTERNAL: 1,
};

// -V/--version is answered before parsing, and only as the first argument: commander
// reads a program's options anywhere on the line, so its .version() would take the
// --version N of `volume ls|get|warmup` and `mount`. It is listed in the help all the same.
const VERSION_OPTION = new Option('-V, --version', "print stowage's version");

const program = new Command('stowage')
  .description('storage for serverless compute: volumes, dict, queue, and a compute bridge')
  .configureHelp({
    visibleOptions(this: Help, cmd: Command): Option[] {
      const options = Help.prototype.visibleOptions.call(this, cmd);
      return cmd === program ? [VERSION_OPTION, ...options] : options;
    },
  })
  .option('--server <host:port>', 'stowage server (default: STOWAGE_SERVER or 127.0.0.1:7420)')
  .option('--tls-ca <file>', "speak TLS to the server and trust this CA's certificates (default: STOWAGE_TLS_CA; STOWAGE_TLS=1: the system store)")
  .option('--tls-client-cert <file>', 'mutual TLS: present this client certificate (default: STOWAGE_TLS_CLIENT_CERT)')
  .option('--tls-client-key <file>', 'the key of --tls-client-cert (default: STOWAGE_TLS_CLIENT_KEY)')
  .hook('preAction', (cmd) => {
    const o = cmd.opts<{ server?: string; tlsCa?: string; tlsClientCert?: string; tlsClientKey?: string }>();
    // Through the environment, so that the mounts and function processes a command starts (stowage worker) inherit them.
    if (o.server) process.env.STOWAGE_SERVER = o.server;
    if (o.tlsCa) process.env.STOWAGE_TLS_CA = absolutePem(o.tlsCa);
    if (o.tlsClientCert) process.env.STOWAGE_TLS_CLIENT_CERT = absolutePem(o.tlsClientCert);
    if (o.tlsClientKey) process.env.STOWAGE_TLS_CLIENT_KEY = absolutePem(o.tlsClientKey);
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
registerCerts(program);
registerToken(program);
registerCompletion(program);

// The command's words (short lowercase ones: its arguments may be anything), for the message of a lost command.
const words = process.argv.slice(2).filter((a) => /^[a-z][a-z-]{0,31}$/.test(a)).slice(0, 2).join(' ');
const finished = guardUnfinished(words || 'command');
try {
  const first = process.argv[2];
  if (first === '--version' || first === '-V') console.log(stowageVersion());
  else await program.parseAsync(process.argv);
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
