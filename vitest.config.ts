import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 180_000,
    hookTimeout: 120_000,
    pool: 'forks',
    setupFiles: ['test/support/cleanup.ts'],
    env: { STOWAGE_LOG_LEVEL: 'error' },
  },
});
