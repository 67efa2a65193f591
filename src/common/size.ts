/** Sizes as flags and options give them: "512MiB", "10GiB", "1.5G", "500MB" or bytes. */
import { InvalidArgumentError } from './errors.js';
import { quote } from './quote.js';

const UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1000,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1000 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1000 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1000 ** 4,
  tib: 1024 ** 4,
};

/** "512MiB", "10GiB", "1.5G" (binary), "500MB" (decimal) or bytes; 0 only with `allowZero`. */
export function parseSize(flag: string, text: string, opts: { allowZero?: boolean } = {}): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  const unit = m ? UNITS[m[2]!.toLowerCase()] : undefined;
  const n = m && unit ? Math.floor(Number(m[1]) * unit) : NaN;
  if (!Number.isSafeInteger(n) || n < (opts.allowZero ? 0 : 1)) {
    throw new InvalidArgumentError(`${flag} ${quote(text)} is not a size (examples: 512MiB, 10GiB, 1000000)`);
  }
  return n;
}

