/**
 * Volumes at their declared paths: each runner process (runners.ts) is
 * started in a mount namespace of its own (`unshare --mount --propagation
 * slave`, util-linux), where the runner binds the worker's mounts at the
 * paths its call declared ('/data') and unbinds them after the call
 * (runner-binds.ts). Nothing of that is seen outside the runner: several
 * workers on one host may each bind a different volume at '/data'.
 *
 * The worker's FUSE mounts are made in the host's namespace, also after a
 * runner was started; a runner sees them only if they propagate into its
 * namespace. So the worker makes `<work-dir>/mounts` a shared mount (a bind
 * of itself, `--make-shared`): mounts made below it reach every runner's
 * namespace (a slave copy), and their unmounts too. A worker that is killed
 * leaves that bind behind; the next worker on the same work dir reuses it,
 * and `umount <work-dir>/mounts` removes it.
 *
 * It takes root (CAP_SYS_ADMIN) and `unshare`; where either is missing, or
 * the worker is started with --no-volume-paths, functions find their volumes
 * through `volumePath()` only (the mounts stay under the work dir).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

export type VolumePathSupport =
  | { ok: true; /** The command a runner is started under (fork's execPath and execArgv before node). */ execPath: string; execArgv: string[] }
  | { ok: false; why: string };

/** Whether runners can get namespaces of their own; makes `mountsDir` (an existing directory) a shared mount when they can. */
export function setUpVolumePaths(mountsDir: string, disabled: boolean): VolumePathSupport {
  if (disabled) return { ok: false, why: 'started with --no-volume-paths' };
  if (process.getuid?.() !== 0) return { ok: false, why: 'the worker does not run as root, so it cannot make mount namespaces' };
  const probe = spawnSync('unshare', ['--mount', '--propagation', 'slave', 'true'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) {
    return { ok: false, why: `unshare --mount failed (${probe.error?.message ?? probe.stderr.trim() ?? `exit ${probe.status}`}); util-linux unshare and CAP_SYS_ADMIN are needed` };
  }
  if (!isMountPoint(mountsDir)) {
    const bind = spawnSync('mount', ['--bind', mountsDir, mountsDir], { encoding: 'utf8' });
    if (bind.status !== 0) return { ok: false, why: `cannot bind ${mountsDir} onto itself: ${bind.stderr.trim() || bind.error?.message}` };
  }
  const shared = spawnSync('mount', ['--make-shared', mountsDir], { encoding: 'utf8' });
  if (shared.status !== 0) return { ok: false, why: `cannot make ${mountsDir} a shared mount: ${shared.stderr.trim() || shared.error?.message}` };
  return { ok: true, execPath: 'unshare', execArgv: ['--mount', '--propagation', 'slave', process.execPath, ...process.execArgv] };
}

/** Undoes setUpVolumePaths' bind of `mountsDir` (after the mounts below it are gone); lazily, so a straggler does not keep it. */
export function tearDownVolumePaths(mountsDir: string): void {
  if (isMountPoint(mountsDir)) spawnSync('umount', ['-l', mountsDir], { stdio: 'ignore' });
}

/** Whether `dir` (an absolute, real path) is a mount point in this process's namespace. */
function isMountPoint(dir: string): boolean {
  const unescape = (f: string): string => f.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((line) => unescape(line.split(' ')[4] ?? '') === dir);
}
