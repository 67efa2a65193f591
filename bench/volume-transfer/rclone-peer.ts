/**
 * Peer (b): `rclone copy`, the usual command-line tool, configured through
 * RCLONE_CONFIG_S3_* variables (no config file) and tuned as a user tuning
 * for throughput would: as many small files in flight as the AWS peer; the
 * big file goes up in 8 MiB parts, 8 at a time, and comes down in 8 streams.
 */
import { spawn } from 'node:child_process';
import { rename } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Contender, Detail } from './contender.js';
import type { BigFile, SmallFiles } from './dataset.js';
import { BUCKET, rcloneEnv, track } from './setup.js';

const REMOTE = `s3:${BUCKET}/peer-rclone`;
// rclone cuts a download into streams of at least --multi-thread-cutoff bytes,
// so the cutoff must come down for 8 streams to happen on 1 GiB.
export const BIG_FLAGS = [
  '--s3-chunk-size', '8M',
  '--s3-upload-concurrency', '8',
  '--multi-thread-streams', '8',
  '--multi-thread-cutoff', '64M',
];
// --s3-no-head: trust the ETag of each PUT instead of a HEAD after it (in a
// trial run one such HEAD reported a size of 0 from s3rver, failing the copy).
export const SMALL_FLAGS = ['--transfers', '16', '--checkers', '16', '--s3-no-head'];
const COMMON_FLAGS = ['--s3-no-check-bucket', '--retries', '1', '--low-level-retries', '3'];

export class RclonePeer implements Contender {
  readonly name = 'rclone';
  private bigName = '';

  constructor(private readonly endpoint: string) {}

  async putBig(file: BigFile): Promise<Detail> {
    this.bigName = basename(file.path);
    return this.copy(file.path, `${REMOTE}/big`, BIG_FLAGS);
  }

  async getBig(dest: string): Promise<Detail> {
    // rclone copies into a directory; the file keeps its name.
    const detail = await this.copy(`${REMOTE}/big/${this.bigName}`, dirname(dest), BIG_FLAGS);
    await rename(join(dirname(dest), this.bigName), dest);
    return detail;
  }

  async putSmall(set: SmallFiles): Promise<Detail> {
    return this.copy(set.dir, `${REMOTE}/small`, SMALL_FLAGS);
  }

  async getSmall(destDir: string): Promise<Detail> {
    return this.copy(`${REMOTE}/small`, destDir, SMALL_FLAGS);
  }

  private copy(from: string, to: string, flags: string[]): Promise<Detail> {
    const args = ['copy', from, to, ...flags, ...COMMON_FLAGS];
    const env = rcloneEnv(this.endpoint);
    return new Promise((resolve, reject) => {
      const child = track(spawn('rclone', args, { env, stdio: ['ignore', 'ignore', 'pipe'] }));
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.once('error', reject);
      child.once('exit', (code, signal) => {
        if (code === 0) resolve({ args: args.slice(3).join(' ') });
        else reject(new Error(`rclone ${args.join(' ')} failed (${code ?? signal}): ${stderr.trim()}`));
      });
    });
  }
}
