/** Other processes of this host, as /proc and kill(2) tell them. */
import { readFileSync } from 'node:fs';

/** Whether process `pid` exists (EPERM: it does, under another user). */
export function alive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** When a process started (clock ticks after boot, /proc/PID/stat field 22): with its pid, it names one process even after the pid is reused; '' when it is gone. */
export function startTimeOf(pid: number): string {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? '';
  } catch {
    return '';
  }
}
