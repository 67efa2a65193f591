/**
 * The stowage server under test: `node bin/stowage.js serve` as a child
 * process on the embedded default (local directory store + LMDB index, no
 * S3) in its own --data-dir, so that its CPU seconds and memory are its own
 * and can be read from /proc/PID. It binds 127.0.0.1 on a port it picks
 * (--port 0) and says which on stderr. Stopped by PID: SIGTERM, SIGKILL after
 * STOP_MS; the exit backstop of setup.ts SIGKILLs it if this process dies
 * first. A restart starts a new process on the same data dir.
 */
import { spawn } from 'node:child_process';
import { lstatSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Connection } from '../../src/client/index.js';
import { ROOT, processCpuSeconds, processMemory, track, type ProcessMemory } from '../volume-transfer/setup.js';

const READY_MS = 120_000;
const STOP_MS = 30_000;

export interface ServeProcess {
  readonly pid: number;
  /** host:port */
  readonly address: string;
  readonly token: string;
  readonly dataDir: string;
  /** An SDK connection to it, closed by stop(). */
  readonly connection: Connection;
  cpuSeconds(): number;
  memory(): ProcessMemory;
  /** SIGTERM, then SIGKILL after a while; resolves once the process is gone. */
  stop(): Promise<void>;
}

export async function startServe(dataDir: string): Promise<ServeProcess> {
  const child = track(
    spawn(process.execPath, [join(ROOT, 'bin', 'stowage.js'), 'serve', '--data-dir', dataDir, '--host', '127.0.0.1', '--port', '0'], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, STOWAGE_LOG_LEVEL: 'warn' },
    }),
  );
  const gone = () => child.exitCode !== null || child.signalCode !== null;
  const exited = new Promise<void>((resolve) => (gone() ? resolve() : child.once('exit', () => resolve())));
  let stderr = '';
  const address = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`stowage serve printed no address within ${READY_MS / 1000} s: ${stderr.trim()}`)), READY_MS);
    child.stderr!.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-16 * 1024);
      const m = /stowage serving on (\S+)/.exec(stderr);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`stowage serve exited (${code ?? signal}) before serving: ${stderr.trim()}`));
    });
  });
  const token = readFileSync(join(dataDir, 'token'), 'utf8').trim();
  const connection = new Connection({ server: address, token });
  const pid = child.pid!;
  let stopping: Promise<void> | undefined;
  return {
    pid,
    address,
    token,
    dataDir,
    connection,
    cpuSeconds: () => processCpuSeconds(pid),
    memory: () => processMemory(pid),
    stop() {
      stopping ??= (async () => {
        connection.close();
        if (!gone()) process.kill(pid, 'SIGTERM');
        const timer = setTimeout(() => {
          if (!gone()) process.kill(pid, 'SIGKILL');
        }, STOP_MS);
        await exited;
        clearTimeout(timer);
      })();
      return stopping;
    },
  };
}

/** Bytes below `dir`: the sum of file sizes, and the disk blocks they take (what `du` counts). */
export interface DirBytes {
  apparent: number;
  allocated: number;
}

export function dirBytes(dir: string): DirBytes {
  const out: DirBytes = { apparent: 0, allocated: 0 };
  const walk = (d: string) => {
    let names: string[];
    try {
      names = readdirSync(d);
    } catch {
      return;
    }
    for (const name of names) {
      const st = lstatSync(join(d, name), { throwIfNoEntry: false });
      if (!st) continue;
      if (st.isDirectory()) walk(join(d, name));
      else {
        out.apparent += st.size;
        out.allocated += st.blocks * 512;
      }
    }
  };
  walk(dir);
  return out;
}
