/** Durations given by people: "500ms", "30s", "5m", "1h", "7d", or a number of milliseconds. */
import { InvalidArgumentError } from './errors.js';
import { quote } from './quote.js';

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

export function parseDuration(what: string, value: number | string): number {
  if (typeof value === 'number') {
    if (Number.isInteger(value) && value >= 0) return value;
  } else {
    const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(value);
    if (m) {
      const ms = Math.round(Number(m[1]) * UNIT_MS[m[2] ?? 'ms']!);
      if (Number.isSafeInteger(ms)) return ms;
    }
  }
  throw new InvalidArgumentError(`${what} ${typeof value === 'number' ? value : quote(value)} is not a duration (examples: 500ms, 30s, 5m, 1h, 7d, or milliseconds)`);
}
