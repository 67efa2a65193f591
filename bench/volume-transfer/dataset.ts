/**
 * The bytes every contender moves: one large file of random data and a tree of
 * small random files (100 to a directory), written once. Random, so that no
 * one gets to deduplicate or compress within a data set; checks afterwards
 * make sure every download returned exactly these bytes.
 */
import { createHash, randomFillSync } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readFile, readdir, writeFile } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import pLimit from 'p-limit';

const WRITE_BLOCK = 8 * 1024 * 1024;
const FILES_PER_DIR = 100;

export interface BigFile {
  path: string;
  size: number;
  sha256: string;
}

export async function writeBigFile(path: string, size: number): Promise<BigFile> {
  const hash = createHash('sha256');
  const buf = Buffer.allocUnsafe(WRITE_BLOCK);
  const fh = await open(path, 'w');
  try {
    for (let pos = 0; pos < size; pos += WRITE_BLOCK) {
      const block = buf.subarray(0, Math.min(WRITE_BLOCK, size - pos));
      randomFillSync(block);
      hash.update(block);
      await fh.write(block, 0, block.length, pos);
    }
  } finally {
    await fh.close();
  }
  return { path, size, sha256: hash.digest('hex') };
}

export interface SmallFiles {
  dir: string;
  /** Paths relative to dir, '/'-separated, sorted. */
  files: string[];
  fileSize: number;
}

export async function writeSmallFiles(dir: string, count: number, fileSize: number): Promise<SmallFiles> {
  const files: string[] = [];
  for (let i = 0; i < count; i++) {
    files.push(`d${String(Math.floor(i / FILES_PER_DIR)).padStart(4, '0')}/f${String(i).padStart(6, '0')}.bin`);
  }
  for (let d = 0; d * FILES_PER_DIR < count; d++) {
    await mkdir(join(dir, `d${String(d).padStart(4, '0')}`), { recursive: true });
  }
  const limit = pLimit(32);
  await Promise.all(files.map((f) => limit(() => writeFile(join(dir, f), randomFillSync(Buffer.allocUnsafe(fileSize))))));
  return { dir, files, fileSize };
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: WRITE_BLOCK })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Throws unless `path` holds exactly the big file's bytes. */
export async function checkBigFile(path: string, want: BigFile, who: string): Promise<void> {
  const got = await sha256File(path);
  if (got !== want.sha256) throw new Error(`${who}: downloaded ${path} does not match the source (sha256 ${got})`);
}

/** Throws unless `dir` holds exactly the small files, byte for byte, and nothing else. */
export async function checkSmallFiles(dir: string, want: SmallFiles, who: string): Promise<void> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  const got = entries
    .filter((e) => e.isFile())
    .map((e) => relative(dir, join(e.parentPath, e.name)).split(sep).join('/'))
    .sort();
  if (got.length !== want.files.length || got.some((f, i) => f !== want.files[i])) {
    throw new Error(`${who}: ${dir} holds ${got.length} files, not the ${want.files.length} sent`);
  }
  const limit = pLimit(32);
  const bad = await Promise.all(
    want.files.map((f) =>
      limit(async () => {
        const [a, b] = await Promise.all([readFile(join(want.dir, f)), readFile(join(dir, f))]);
        return a.equals(b) ? undefined : f;
      }),
    ),
  );
  const first = bad.find((f) => f !== undefined);
  if (first) throw new Error(`${who}: downloaded ${first} does not match the source`);
}
