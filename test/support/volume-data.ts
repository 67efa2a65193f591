/**
 * Test data for volume tests: random files and trees on disk, and hashes to
 * compare what went in with what came out.
 */
import { createHash, randomBytes, randomInt } from 'node:crypto';
import { createReadStream, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';

export const KiB = 1024;
export const MiB = 1024 * KiB;

export function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

export async function hashFile(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const part of createReadStream(path, { highWaterMark: 4 * MiB })) h.update(part as Buffer);
  return h.digest('hex');
}

/** Writes `size` random bytes to `path` without holding them all; returns their SHA-256. */
export async function writeRandomFile(path: string, size: number): Promise<string> {
  mkdirSync(dirname(path), { recursive: true });
  const h = createHash('sha256');
  const fh = await open(path, 'w');
  try {
    for (let done = 0; done < size; ) {
      const piece = randomBytes(Math.min(8 * MiB, size - done));
      h.update(piece);
      await fh.write(piece);
      done += piece.length;
    }
  } finally {
    await fh.close();
  }
  return h.digest('hex');
}

/**
 * Writes `count` files of random bytes and random sizes in [minSize, maxSize]
 * below `dir`, spread over subdirectories; returns their bytes by relative
 * '/'-separated path.
 */
export function writeRandomTree(dir: string, count: number, minSize: number, maxSize: number): Map<string, Buffer> {
  const files = new Map<string, Buffer>();
  const perDir = Math.ceil(Math.sqrt(count));
  for (let i = 0; i < count; i++) {
    const rel = `d${String(Math.floor(i / perDir)).padStart(3, '0')}/f${String(i).padStart(5, '0')}.bin`;
    const data = randomBytes(randomInt(minSize, maxSize + 1));
    mkdirSync(join(dir, dirname(rel)), { recursive: true });
    writeFileSync(join(dir, rel), data);
    files.set(rel, data);
  }
  return files;
}

/** Every regular file below `dir`, by relative '/'-separated path. */
export function readTree(dir: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const d of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!d.isFile()) continue;
    const full = join(d.parentPath, d.name);
    out.set(relative(dir, full).split(sep).join('/'), readFileSync(full));
  }
  return out;
}

/** Paths whose bytes differ between two trees, and paths only one of them has. */
export function treeDifferences(want: Map<string, Buffer>, got: Map<string, Buffer>): string[] {
  const diffs: string[] = [];
  for (const [path, data] of want) {
    const other = got.get(path);
    if (!other) diffs.push(`missing ${path}`);
    else if (!other.equals(data)) diffs.push(`differs ${path}`);
  }
  for (const path of got.keys()) if (!want.has(path)) diffs.push(`extra ${path}`);
  return diffs;
}
