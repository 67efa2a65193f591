/**
 * A contender moves the same two data sets up to s3rver and back down. Each
 * method does one whole transfer and returns facts worth keeping (chunk
 * counts, the flags used); the caller does the timing, so that every
 * contender is timed the same way.
 */
import type { BigFile, SmallFiles } from './dataset.js';

export type Detail = Record<string, string | number | boolean>;

export interface Contender {
  readonly name: string;
  /** Uploads the big file. */
  putBig(file: BigFile): Promise<Detail>;
  /** Downloads the big file to `dest`. */
  getBig(dest: string): Promise<Detail>;
  /** Uploads the tree of small files. */
  putSmall(set: SmallFiles): Promise<Detail>;
  /** Downloads the tree of small files below `destDir`, keeping relative paths. */
  getSmall(destDir: string): Promise<Detail>;
}
