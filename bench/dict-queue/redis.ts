/**
 * redis-benchmark, the peer that drives the benchmark's redis-server. The
 * server itself is started by the same code the tests use
 * (test/support/redis.ts): stopped by PID, also when a run fails.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);
export const REDIS_BENCHMARK = process.env.REDIS_BENCHMARK ?? 'redis-benchmark';

/** One redis-benchmark test's figures, from its --csv output. */
export interface RedisBenchmarkRow {
  test: string;
  rps: number;
  p50Ms: number;
  p99Ms: number;
}

/**
 * Runs redis-benchmark against `port` and returns a row per test. `-d` is the
 * value size; `-r` spreads SET/GET over that many keys as the other
 * contenders do.
 */
export async function redisBenchmark(
  port: number,
  o: { tests: string; requests: number; clients: number; pipeline: number; valueBytes: number; keys: number },
): Promise<{ args: string[]; rows: RedisBenchmarkRow[] }> {
  const args = [
    '-h', '127.0.0.1',
    '-p', String(port),
    '-t', o.tests,
    '-n', String(o.requests),
    '-c', String(o.clients),
    '-P', String(o.pipeline),
    '-d', String(o.valueBytes),
    '-r', String(o.keys),
    '-q', '--csv',
  ];
  const { stdout } = await run(REDIS_BENCHMARK, args, { timeout: 120_000 });
  const rows: RedisBenchmarkRow[] = [];
  for (const line of stdout.split('\n')) {
    const f = line.split(',').map((c) => c.replace(/^"|"$/g, ''));
    if (f.length < 7 || f[0] === 'test') continue;
    rows.push({ test: f[0]!, rps: Number(f[1]), p50Ms: Number(f[4]), p99Ms: Number(f[6]) });
  }
  if (rows.length === 0) throw new Error(`redis-benchmark ${args.join(' ')} printed no figures:\n${stdout}`);
  return { args, rows };
}
