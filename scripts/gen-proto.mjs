// Generates src/gen/ (TypeScript types and grpc-js service definitions) from
// proto/ with buf's built-in compiler and the ts-proto plugin. Nothing in
// src/gen/ is edited by hand or committed.
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
rmSync(join(root, 'src/gen'), { recursive: true, force: true });
const bin = join(root, 'node_modules/.bin');
execFileSync(join(bin, 'buf'), ['generate'], {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, PATH: `${bin}:${process.env.PATH}` },
});
