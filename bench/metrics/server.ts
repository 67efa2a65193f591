/**
 * One stowage server for the metrics benchmark, in a process of its own so
 * that its CPU seconds are its own (read from /proc/PID by main.ts):
 *
 *   node dist/bench/metrics/server.js --data-dir DIR --metrics on|off
 *
 * `off` starts it with `metrics: false` (no interceptor, store wrapper or
 * counters). Prints one JSON line {address, token} on stdout once serving;
 * logs (warn and up) go to stderr. SIGTERM stops the server and exits.
 */
import { destination, pino } from 'pino';
import { startServer } from '../../src/server/server.js';
import { parseFlags } from '../volume-transfer/setup.js';

const USAGE = 'usage: node dist/bench/metrics/server.js --data-dir DIR --metrics on|off';
const flags = parseFlags({ 'data-dir': { type: 'string' }, metrics: { type: 'string' } }, USAGE);
if (!flags['data-dir'] || (flags.metrics !== 'on' && flags.metrics !== 'off')) {
  process.stderr.write(`${USAGE}\n`);
  process.exit(2);
}

const server = await startServer({
  dataDir: flags['data-dir'],
  host: '127.0.0.1',
  port: 0,
  metrics: flags.metrics === 'on',
  // No garbage collection in the middle of a measurement.
  gcIntervalMs: 0,
  log: pino({ name: 'stowage', level: 'warn' }, destination(2)),
});
process.stdout.write(`${JSON.stringify({ address: server.address, token: server.token })}\n`);
process.once('SIGTERM', () => {
  server.stop().then(
    () => process.exit(0),
    () => process.exit(1),
  );
});
