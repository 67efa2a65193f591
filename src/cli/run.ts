/**
 * `stowage run MODULE#FUNCTION [JSON ARGS…]` runs one call (or one per input
 * with --map) on the compute bridge and prints the result as JSON;
 * `stowage run APP/FUNCTION …` does the same for a deployed function, without
 * its source (run-deployed.ts); `stowage deploy MODULE` registers the
 * module's functions and their schedules.
 *
 * A JavaScript module is imported here first: when FUNCTION is a handle made
 * by app.function, its volumes, reads, timeout and retries are the defaults
 * that the flags override. A TypeScript module is only bundled (Node 20 cannot
 * import it), so its settings come from the flags alone.
 *
 * While a single call runs, what its function writes to stdout and stderr is
 * copied live, as written, to this command's stderr (stdout stays the JSON
 * result); --quiet leaves it out, and `stowage bridge logs` shows it later.
 */
import type { Command } from 'commander';
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { SingleBar } from 'cli-progress';
import { InvalidArgumentError, StowageError, callLogs, defaultConnection, type Connection, type DeployResult, type FunctionOptions, type VolumeMount } from '../client/index.js';
import {
  DEFAULT_CODE_VOLUME,
  bundleModule,
  checkExport,
  functionSpec,
  submitCalls,
  uploadBundle,
  valueOf,
  watchResults,
} from '../client/internal.js';
import { codecFor } from '../client/codec.js';
import type { CallResult, FunctionSpec } from '../gen/stowage/v1/bridge.js';
import { quote } from '../common/quote.js';
import { deployLines, deployedSpec, deployedTarget } from './run-deployed.js';
import { durationArg, formatValue, integerArg } from './values.js';

const FUNCTION_BRAND = Symbol.for('stowage.function');
/** How long the output of a finished call may take to arrive after its result. */
const OUTPUT_WAIT_MS = 5000;

interface RunFlags {
  volume: string[];
  reads: string[];
  timeout?: string;
  retries?: string;
  map?: string;
  detach?: boolean;
  quiet?: boolean;
  codeVolume: string;
}

interface HandleLike {
  options: FunctionOptions<unknown[]>;
  app: { deploy(): Promise<DeployResult>; name: string };
}

const collect = (v: string, prev: string[]) => [...prev, v];

export function register(program: Command): void {
  program
    .command('run <target> [args...]')
    .description('run MODULE#FUNCTION, or the deployed APP/FUNCTION, on the compute bridge with JSON arguments and print its result as JSON')
    .option('--volume <path=volume[:rw]>', 'mount VOLUME where the function sees PATH, e.g. /data=my-dataset; VOLUME:rw is writable, committed when the call returns (repeatable)', collect, [])
    .option('--reads <glob>', 'what the call reads, for placement, e.g. /data/shards/3.bin (repeatable)', collect, [])
    .option('--timeout <duration>', 'fail the call after this long (e.g. 30s, 5m)')
    .option('--retries <n>', 'retry a call that throws or times out up to N times, 1 s apart (and one lost with its worker, at once)')
    .option('--map <file>', 'one call per element of the JSON array in FILE (- for stdin); prints the results in order')
    .option('--detach', 'print the call id and return without waiting')
    .option('-q, --quiet', "do not show the function's output (stdout and stderr) on stderr while it runs")
    .option('--code-volume <name>', 'the volume bundles go into', DEFAULT_CODE_VOLUME)
    .action(async (target: string, rawArgs: string[], flags: RunFlags) => {
      const args = rawArgs.map((a, i) => parseJson(a, `argument ${i + 1}`));
      const inputs: unknown[][] = flags.map ? (await readMapInputs(flags.map)).map((x) => [x]) : [args];
      if (flags.map && args.length) throw new InvalidArgumentError('give arguments either on the command line or with --map, not both');
      const connection = defaultConnection();
      const deployed = deployedTarget(target);
      const { spec, readsOf } = deployed
        ? { spec: await deployedSpec(connection, deployed, { ...flags, volumes: parseVolumes(flags.volume) }), readsOf: undefined }
        : await moduleSpec(target, flags, connection);
      const msgpack = codecFor('msgpack');
      const calls = inputs.map((a, i) => ({
        id: `fc-${randomUUID()}`,
        args: msgpack.encode(a, `the arguments of call ${i + 1}`),
        reads: readsOf ? readsOf(...a) : [],
      }));
      const ids = await submitCalls(connection, spec, calls);
      if (flags.detach) {
        for (const id of ids) console.log(id);
        return;
      }
      // One call's output is shown (a --map of many calls would interleave theirs: see stowage bridge logs).
      const stopOutput = new AbortController();
      const shown = flags.quiet || flags.map ? undefined : showOutput(connection, ids[0]!, stopOutput.signal);
      const bar = progress(ids.length, !!flags.map);
      const index = new Map(ids.map((id, i) => [id, i]));
      const results = new Array<unknown>(ids.length);
      let done = 0;
      const take = (r: CallResult) => {
        try {
          results[index.get(r.callId)!] = valueOf(r);
        } catch (err) {
          bar.stop();
          if (err instanceof StowageError && err.code === 'FUNCTION_ERROR' && err.stack) console.error(err.stack);
          throw err;
        }
        bar.update(++done);
      };
      try {
        if (!shown) await watchResults(connection, ids, take);
        else {
          let result: CallResult | undefined;
          await watchResults(connection, ids, (r) => (result = r));
          // The function's output ends before its result: shown before the result or its error (waited for a while).
          const late = setTimeout(() => stopOutput.abort(), OUTPUT_WAIT_MS);
          await shown;
          clearTimeout(late);
          take(result!);
        }
      } finally {
        bar.stop();
        stopOutput.abort(); // a watch that failed must not leave the output stream holding the process
      }
      console.log(flags.map ? formatValue(results) : formatValue(results[0]));
    });

  program
    .command('deploy <module>')
    .description("register a module's functions (callable as APP/FUNCTION without the source) and their schedules; replaces each app's earlier deploy")
    .action(async (module: string) => {
      const path = resolve(module);
      const mod = (await import(pathToFileURL(path).href)) as Record<string, unknown>;
      const apps = new Set<HandleLike['app']>();
      for (const v of Object.values(mod)) if (isHandle(v)) apps.add(v.app);
      if (!apps.size) throw new InvalidArgumentError(`module ${quote(module)} exports no function made with app.function`);
      for (const app of apps) for (const line of deployLines(await app.deploy())) console.log(line);
    });
}

/** Copies call `id`'s output to stderr as it comes, until the call finishes; a failure to read it is told, not fatal. */
async function showOutput(connection: Connection, id: string, signal: AbortSignal): Promise<void> {
  try {
    for await (const e of callLogs(connection, id, { follow: true, signal })) process.stderr.write(e.data);
  } catch (err) {
    process.stderr.write(`stowage: the function's output cannot be shown (${err instanceof Error ? err.message : String(err)}); see it with: stowage bridge logs ${id}\n`);
  }
}

/** MODULE#FUNCTION: the module bundled and uploaded, its declared options under the flags. */
async function moduleSpec(
  target: string,
  flags: RunFlags,
  connection: Connection,
): Promise<{ spec: FunctionSpec; readsOf: ((...a: unknown[]) => string[]) | undefined }> {
  const { modulePath, fn } = parseTarget(target);
  const declared = await declaredOptions(modulePath, fn);
  const options: FunctionOptions<unknown[]> = {
    ...declared,
    volumes: { ...declared?.volumes, ...parseVolumes(flags.volume) },
    reads: flags.reads.length ? flags.reads : declared?.reads,
    timeout: durationArg('--timeout', flags.timeout) ?? declared?.timeout,
    retries: integerArg('--retries', flags.retries, 0) ?? declared?.retries,
  };
  const bundle = await bundleModule(modulePath);
  checkExport(bundle, fn);
  await uploadBundle(connection, flags.codeVolume, bundle);
  return { spec: functionSpec(flags.codeVolume, bundle, fn, options), readsOf: typeof options.reads === 'function' ? options.reads : undefined };
}

function parseTarget(target: string): { modulePath: string; fn: string } {
  const at = target.lastIndexOf('#');
  if (at <= 0 || at === target.length - 1) {
    throw new InvalidArgumentError(`${quote(target)}: name the function as MODULE#FUNCTION (e.g. jobs.mjs#countLines), or a deployed one as APP/FUNCTION (list them with: stowage bridge functions)`);
  }
  return { modulePath: resolve(target.slice(0, at)), fn: target.slice(at + 1) };
}

/** PATH=VOLUME (read-only), PATH=VOLUME:rw (writable: committed when the call returns) or PATH=VOLUME:ro. */
function parseVolumes(specs: string[]): Record<string, VolumeMount> {
  const out: Record<string, VolumeMount> = {};
  for (const s of specs) {
    const m = /^([^=]+)=([^=:]+)(?::(rw|ro))?$/.exec(s);
    if (!m) throw new InvalidArgumentError(`--volume ${quote(s)}: use PATH=VOLUME or PATH=VOLUME:rw, e.g. /data=my-dataset or /out=results:rw`);
    out[m[1]!] = m[3] === 'rw' ? { name: m[2]!, writable: true } : m[2]!;
  }
  return out;
}

function parseJson(raw: string, what: string): unknown {
  try {
    return JSON.parse(raw);
  } catch (err) {
    throw new InvalidArgumentError(`${what} ${quote(raw)} is not JSON (${(err as Error).message}); quote strings, e.g. '"text"'`);
  }
}

async function readMapInputs(file: string): Promise<unknown[]> {
  const text = file === '-' ? await readStdin() : await readFile(file, 'utf8');
  const v = parseJson(text, `--map ${file}`);
  if (!Array.isArray(v)) throw new InvalidArgumentError(`--map ${file} must hold a JSON array (one element per call)`);
  return v;
}

async function readStdin(): Promise<string> {
  const parts: Buffer[] = [];
  for await (const p of process.stdin) parts.push(p as Buffer);
  return Buffer.concat(parts).toString('utf8');
}

function isHandle(v: unknown): v is HandleLike {
  return typeof v === 'object' && v !== null && (v as Record<symbol, unknown>)[FUNCTION_BRAND] === true;
}

/** The options of FUNCTION when it is an app.function handle of a JavaScript module; undefined otherwise. */
async function declaredOptions(modulePath: string, fn: string): Promise<FunctionOptions<unknown[]> | undefined> {
  if (!/\.(m|c)?js$/.test(modulePath)) return undefined;
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(modulePath).href)) as Record<string, unknown>;
  } catch {
    return undefined; // bundling reports what is wrong with it
  }
  const v = mod[fn];
  return isHandle(v) ? v.options : undefined;
}

function progress(total: number, enabled: boolean): { update: (n: number) => void; stop: () => void } {
  if (!enabled || !process.stderr.isTTY) return { update: () => undefined, stop: () => undefined };
  const bar = new SingleBar({ stream: process.stderr, format: 'calls [{bar}] {value}/{total} | {duration}s', hideCursor: true, barsize: 30 });
  bar.start(total, 0);
  let stopped = false;
  return {
    update: (n) => bar.update(n),
    stop: () => {
      if (!stopped) bar.stop();
      stopped = true;
    },
  };
}
