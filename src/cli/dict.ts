/**
 * `stowage dict …`: a thin layer over the SDK, following `modal dict`.
 *
 * Keys on the command line are strings (the msgpack string `dict.get('key')`
 * uses); values are strings unless --json-value. Values are always printed as
 * JSON, strings included, so output is unambiguous; bytes print as
 * {"$base64": "…"}, which --json-value reads back as bytes.
 */
import type { Command } from 'commander';
import { Dict, NotFoundError, defaultConnection, type DictInfo } from '../client/index.js';
import { printJson } from './output.js';
import { quote } from '../common/quote.js';
import { checkName } from '../common/validate.js';
import {
  ALLOW_MISSING_FLAGS,
  ALLOW_MISSING_HELP,
  allowMissing,
  confirm,
  countArg,
  duration,
  durationArg,
  exitOnClosedStdout,
  formatValue,
  integerArg,
  parseValue,
  writeLine,
} from './values.js';

interface JsonFlag {
  json?: boolean;
}

function dictRow(d: DictInfo): string {
  return `${d.name.padEnd(24)}  ${d.createdAt.toISOString()}  ${duration(d.idleTimeoutMs)}`;
}

/** The value at `key`; NotFoundError when absent, so scripts see exit 3. */
async function getValue(d: Dict<string, unknown>, key: string): Promise<{ value: unknown; version: number }> {
  const got = await d.getWithVersion(key);
  if (!got) throw new NotFoundError(`key ${quote(key)} is not in dict ${d.name} (list its keys with: stowage dict items ${d.name})`);
  return got;
}

export function register(program: Command): void {
  const dict = program.command('dict').description('named key-value maps shared by many workers');

  dict
    .command('create <name>')
    .description('create a dict')
    .option('--idle-timeout <duration>', 'delete the dict after this long without use, e.g. 1h, 7d (default: never)')
    .action(async (name: string, flags: { idleTimeout?: string }) => {
      const idleTimeoutMs = durationArg('--idle-timeout', flags.idleTimeout) ?? 0;
      checkName('dict', name);
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
    .option('--ttl <duration>', 'the key expires this long after the put, e.g. 30s, 5m')
    .option('--json', 'print {"stored": true|false}')
    .action(async (name: string, key: string, raw: string, flags: JsonFlag & { jsonValue?: boolean; skipIfExists?: boolean; ttl?: string }) => {
      const ttlMs = durationArg('--ttl', flags.ttl, 1);
      const value = parseValue(raw, flags.jsonValue);
      const d = await Dict.fromName<string, unknown>(name);
      const stored = await d.put(key, value, { skipIfExists: flags.skipIfExists, ttlMs });
      if (flags.json) return console.log(JSON.stringify({ stored }));
      console.log(stored ? `stored ${formatValue(key)} in ${name}` : `not stored: ${formatValue(key)} already exists in ${name}`);
    });

  dict
    .command('items <name> [n]')
    .description('print every key and value (at most N), streamed a page at a time')
    .option('--json', 'print JSON Lines: one {"key", "value"} per line')
    .action(async (name: string, n: string | undefined, flags: JsonFlag) => {
      const most = countArg(n, undefined) ?? Infinity;
      exitOnClosedStdout();
      const d = await Dict.fromName<unknown, unknown>(name);
      let printed = 0;
      for await (const [key, value] of d.items()) {
        await writeLine(flags.json ? formatValue({ key, value }) : `${formatValue(key)}\t${formatValue(value)}`);
        if (++printed >= most) break;
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
    .option(ALLOW_MISSING_FLAGS, ALLOW_MISSING_HELP)
    .action(async (name: string, flags: { yes?: boolean; allowMissing?: boolean }) => {
      await allowMissing(flags.allowMissing, `dict ${name}`, async () => {
        await Dict.fromName(name);
        await confirm(flags.yes, `delete dict "${name}" and everything in it?`, name, `deleting dict "${name}"`);
        await Dict.delete(name);
        console.log(`deleted dict ${name}`);
      });
    });
}
