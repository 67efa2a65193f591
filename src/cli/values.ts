/**
 * What the CLI's command groups share (`stowage dict` and `stowage queue`
 * most): number flags checked with the flag's name in the error, values in
 * and out as JSON, listings streamed in bounded memory, and the confirmation
 * before a destructive command.
 */
import { once } from 'node:events';
import { createInterface } from 'node:readline/promises';
import { parseDuration } from '../common/duration.js';
import { InvalidArgumentError, isStowageError } from '../common/errors.js';
import { quote } from '../common/quote.js';

/** The largest value of a uint32 proto field (--keep-last, counts). */
export const UINT32_MAX = 4_294_967_295;

/**
 * A whole-number flag or argument in decimal digits, checked here so that
 * `--ttl abc` names the flag (Number() alone would take '', '1e3' and '0x10');
 * -Infinity as `min` allows negatives, `max` bounds what a proto field holds.
 */
export function integerArg(flag: string, raw: string | undefined, min = 1, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (raw === undefined) return undefined;
  const digits = raw.trim();
  const n = Number(digits);
  if (!/^-?\d+$/.test(digits) || !Number.isSafeInteger(n) || n < min || n > max) {
    const want =
      max < Number.MAX_SAFE_INTEGER
        ? `a whole number from ${min === -Infinity ? Number.MIN_SAFE_INTEGER : min} to ${max}`
        : min === -Infinity
          ? 'a whole number'
          : `a whole number, ${min} or more`;
    throw new InvalidArgumentError(`${flag} ${quote(raw)}: must be ${want}`);
  }
  return n;
}

/**
 * A time flag (`--ttl 30s`): a duration as parseDuration reads it, plain
 * numbers being milliseconds, so that every flag that takes a time takes the
 * same syntax; `min` 1 refuses 0 where it would not mean "never".
 */
export function durationArg(flag: string, raw: string | undefined, min = 0): number | undefined {
  if (raw === undefined) return undefined;
  const ms = parseDuration(flag, raw);
  if (ms < min) throw new InvalidArgumentError(`${flag} ${quote(raw)}: must be at least ${min}ms (examples: 500ms, 30s, 5m, 1h)`);
  return ms;
}

/** A positional count (`dict items NAME 10`) or its flag (`-n 10`), not both; `fallback` when neither is given. */
export function countArg(positional: string | undefined, flag: string | undefined, fallback?: number): number | undefined {
  if (positional !== undefined && flag !== undefined) throw new InvalidArgumentError(`give the count either as N or as -n, not both (got ${quote(positional)} and -n ${quote(flag)})`);
  if (positional !== undefined) return integerArg('N', positional);
  return integerArg('-n', flag) ?? fallback;
}

/** `--allow-missing` as on Modal's delete commands. */
export const ALLOW_MISSING_FLAGS = '--allow-missing';
export const ALLOW_MISSING_HELP = 'succeed (exit 0) when it does not exist';

/** Runs a delete; with --allow-missing, a NOT_FOUND ends it quietly with a line that says so. */
export async function allowMissing(allowed: boolean | undefined, what: string, run: () => Promise<void>): Promise<void> {
  try {
    await run();
  } catch (err) {
    if (!allowed || !isStowageError(err, 'NOT_FOUND')) throw err;
    console.log(`${what} does not exist; nothing to delete`);
  }
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
    throw new InvalidArgumentError(`--json-value: ${quote(raw)} is not valid JSON (${(err as Error).message}); nothing was written`);
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
