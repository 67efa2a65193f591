/**
 * `stowage dict …`: a thin layer over the SDK, following `modal dict`.
 *
 * Keys on the command line are strings (the msgpack string `dict.get('key')`
 * uses); values are strings unless --json-value. Values are always printed as
 * JSON, strings included, so output is unambiguous; bytes print as
 * {"$base64": "…"}, which --json-value reads back as bytes.
 */
import type { Command } from 'commander';
import { once } from 'node:events';
import { createInterface } from 'node:readline/promises';
import { Dict, InvalidArgumentError, NotFoundError, defaultConnection, type DictInfo } from '../client/index.js';
import { printJson } from './output.js';

interface JsonFlag {
  json?: boolean;
}

// ---- Shared with queue.ts: flags, values and streamed output. ----

/** A whole-number flag or argument, checked here so that `--ttl abc` names the flag; -Infinity as `min` allows negatives. */
export function integerArg(flag: string, raw: string | undefined, min = 1): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (raw.trim() === '' || !Number.isSafeInteger(n) || n < min) {
    const want = min === -Infinity ? 'a whole number' : `a whole number, ${min} or more`;
    throw new InvalidArgumentError(`${flag} ${JSON.stringify(raw)}: must be ${want}`);
  }
  return n;
}

/** A value from the command line: the string itself, or parsed JSON with --json-value. */
export function parseValue(raw: string, asJson: boolean | undefined): unknown {
  if (!asJson) return raw;
  try {
    return JSON.parse(raw, (_key, v: unknown) => {
      // {"$base64": "…"} (as printed for bytes) reads back as bytes.
      if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
        const keys = Object.keys(v);
        const b64 = (v as Record<string, unknown>).$base64;
        if (keys.length === 1 && typeof b64 === 'string') return Buffer.from(b64, 'base64');
      }
      return v;
    });
  } catch (err) {
    throw new InvalidArgumentError(`--json-value: ${JSON.stringify(raw)} is not valid JSON (${(err as Error).message}); nothing was written`);
  }
}

/** One value as one line of JSON; bytes become {"$base64": "…"}. */
export function formatValue(value: unknown): string {
  return JSON.stringify(value ?? null, function (this: Record<string, unknown>, key: string, v: unknown) {
    // The holder's own property: Buffer.toJSON has already run on `v`.
    const raw = this[key];
    if (raw instanceof Uint8Array) return { $base64: Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('base64') };
    if (typeof raw === 'bigint') return raw.toString();
    return v;
  });
}

/** Writes a line to stdout, waiting while its buffer is full so that long listings stream in bounded memory. */
export async function writeLine(line: string): Promise<void> {
  if (!process.stdout.write(`${line}\n`)) await once(process.stdout, 'drain');
}

/** Items one per line as JSON, or as one JSON array with `asArray` (an empty result prints nothing, or []). */
export async function printItems(items: readonly unknown[], asArray: boolean | undefined): Promise<void> {
  if (asArray) return writeLine(formatValue(items));
  for (const item of items) await writeLine(formatValue(item));
}

/** A reader that went away (`… | head`) ends the listing quietly. */
export function exitOnClosedStdout(): void {
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
}

/** Asks on the terminal unless --yes; with no terminal, --yes is required. */
export async function confirm(yes: boolean | undefined, question: string, name: string, what: string): Promise<void> {
  if (yes) return;
  if (!process.stdin.isTTY) throw new InvalidArgumentError(`${what} needs --yes when not run from a terminal`);
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  const answer = await rl.question(`${question} type its name to confirm: `);
  rl.close();
  if (answer.trim() !== name) throw new InvalidArgumentError('not confirmed; nothing was changed');
}

export const duration = (ms: number): string => (ms === 0 ? 'never' : `${ms}ms`);

// ---- The commands. ----

function dictRow(d: DictInfo): string {
  return `${d.name.padEnd(24)}  ${d.createdAt.toISOString()}  ${duration(d.idleTimeoutMs)}`;
}

/** The value at `key`; NotFoundError when absent, so scripts see exit 3. */
async function getValue(d: Dict<string, unknown>, key: string): Promise<{ value: unknown; version: number }> {
  const got = await d.getWithVersion(key);
  if (!got) throw new NotFoundError(`key ${JSON.stringify(key)} is not in dict ${d.name} (list its keys with: stowage dict items ${d.name})`);
  return got;
}

export function register(program: Command): void {
  const dict = program.command('dict').description('named key-value maps shared by many workers');

  dict
    .command('create <name>')
    .description('create a dict')
    .option('--idle-timeout <ms>', 'delete the dict after this long without use (default: never)')
    .action(async (name: string, flags: { idleTimeout?: string }) => {
      const idleTimeoutMs = integerArg('--idle-timeout', flags.idleTimeout, 0) ?? 0;
      const conn = defaultConnection();
      await conn.unary(conn.dicts.createDict.bind(conn.dicts), { name, existOk: false, idleTimeoutMs });
      console.log(`created dict ${name}`);
    });

  dict
    .command('list')
    .description('list dicts')
    .option('--json', 'print JSON')
    .action(async (flags: JsonFlag) => {
      const dicts = await Dict.list();
      if (flags.json) return printJson(dicts);
      console.log(`${'NAME'.padEnd(24)}  ${'CREATED'.padEnd(24)}  IDLE TIMEOUT`);
      for (const d of dicts) console.log(dictRow(d));
    });

  dict
    .command('get <name> <key>')
    .description('print the value at a key as JSON (exit 3 if the key is absent)')
    .option('--json', 'print {"key", "value", "version"}')
    .action(async (name: string, key: string, flags: JsonFlag) => {
      const d = await Dict.fromName<string, unknown>(name);
      const { value, version } = await getValue(d, key);
      console.log(formatValue(flags.json ? { key, value, version } : value));
    });

  dict
    .command('put <name> <key> <value>')
    .description('store a value (a string unless --json-value)')
    .option('--json-value', 'parse the value as JSON ({"$base64": "…"} is bytes)')
    .option('--skip-if-exists', 'store only if the key is absent')
    .option('--ttl <ms>', 'the key expires this long after the put')
    .option('--json', 'print {"stored": true|false}')
    .action(async (name: string, key: string, raw: string, flags: JsonFlag & { jsonValue?: boolean; skipIfExists?: boolean; ttl?: string }) => {
      const ttlMs = integerArg('--ttl', flags.ttl);
      const value = parseValue(raw, flags.jsonValue);
      const d = await Dict.fromName<string, unknown>(name);
      const stored = await d.put(key, value, { skipIfExists: flags.skipIfExists, ttlMs });
      if (flags.json) return console.log(JSON.stringify({ stored }));
      console.log(stored ? `stored ${formatValue(key)} in ${name}` : `not stored: ${formatValue(key)} already exists in ${name}`);
    });

  dict
    .command('items <name>')
    .description('print every key and value, streamed a page at a time')
    .option('--json', 'print JSON Lines: one {"key", "value"} per line')
    .action(async (name: string, flags: JsonFlag) => {
      exitOnClosedStdout();
      const d = await Dict.fromName<unknown, unknown>(name);
      for await (const [key, value] of d.items()) {
        await writeLine(flags.json ? formatValue({ key, value }) : `${formatValue(key)}\t${formatValue(value)}`);
      }
    });

  dict
    .command('len <name>')
    .description('print the number of keys')
    .option('--json', 'print {"len": N}')
    .action(async (name: string, flags: JsonFlag) => {
      const len = await (await Dict.fromName(name)).len();
      console.log(flags.json ? JSON.stringify({ len }) : String(len));
    });

  dict
    .command('incr <name> <key> [by]')
    .description('add BY (default 1, may be negative) to the integer at a key atomically and print the sum')
    .action(async (name: string, key: string, by: string | undefined) => {
      const n = integerArg('BY', by, -Infinity) ?? 1;
      const d = await Dict.fromName<string, unknown>(name);
      console.log(String(await d.incr(key, n)));
    });

  dict
    .command('clear <name>')
    .description('remove every key (the dict stays)')
    .option('-y, --yes', 'do not ask for confirmation')
    .action(async (name: string, flags: { yes?: boolean }) => {
      const d = await Dict.fromName(name);
      await confirm(flags.yes, `remove every key from dict "${name}"?`, name, `clearing dict "${name}"`);
      await d.clear();
      console.log(`cleared dict ${name}`);
    });

  dict
    .command('delete <name>')
    .description('delete a dict and everything in it')
    .option('-y, --yes', 'do not ask for confirmation')
    .action(async (name: string, flags: { yes?: boolean }) => {
      await Dict.fromName(name);
      await confirm(flags.yes, `delete dict "${name}" and everything in it?`, name, `deleting dict "${name}"`);
      await Dict.delete(name);
      console.log(`deleted dict ${name}`);
    });
}
