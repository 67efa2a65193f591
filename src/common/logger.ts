import { destination, pino, type Logger } from 'pino';

export type { Logger };

/** Structured logs on stderr; STOWAGE_LOG_LEVEL sets the level (default info). */
export function createLogger(name: string): Logger {
  return pino(
    { name, level: process.env.STOWAGE_LOG_LEVEL ?? 'info' },
    destination({ dest: 2, sync: true }),
  );
}
