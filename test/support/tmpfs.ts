/**
 * A small tmpfs of a test's own (the tests run as root), to fill a disk for
 * real: ENOSPC from the kernel, not from a wrapper. Unmounted by the test's
 * afterAll (unmountAll), lazily when something still holds files there, and
 * on worker exit as a backstop; tempDir's clean-up then removes the
 * directory (it leaves mounted ones alone).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir, uniqueName } from './processes.js';

export interface Tmpfs {
  dir: string;
  /** Writes a file of `bytes` zeros here (to take space that deleting it gives back); returns its path. */
  fill(bytes: number): string;
  unmount(): void;
}

const mounted = new Set<string>();
process.on('exit', () => {
  for (const dir of mounted) spawnSync('umount', ['-l', dir], { stdio: 'ignore' });
});

function isMounted(dir: string): boolean {
  return readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[1] === dir);
}

function unmountDir(dir: string): void {
  if (!mounted.delete(dir)) return;
  // Lazily when a process (a server being killed) still holds files there.
  if (spawnSync('umount', [dir], { stdio: 'ignore' }).status !== 0 && isMounted(dir)) {
    spawnSync('umount', ['-l', dir], { stdio: 'ignore' });
  }
}

/** Mounts a tmpfs of `bytes` on a fresh temp dir. */
export function mountTmpfs(label: string, bytes: number): Tmpfs {
  const dir = tempDir(label);
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${bytes},mode=0755`, 'tmpfs', dir]);
  mounted.add(dir);
  return {
    dir,
    fill(n) {
      const path = join(dir, uniqueName('filler'));
      writeFileSync(path, Buffer.alloc(n));
      return path;
    },
    unmount: () => unmountDir(dir),
  };
}

/** Unmounts every tmpfs this process mounted (afterAll). */
export function unmountAll(): void {
  for (const dir of [...mounted]) unmountDir(dir);
}
