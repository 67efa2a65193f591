// Bundles the dashboard page (src/dashboard/page/, browser TypeScript with
// Preact and uPlot) with esbuild into dist/dashboard/: index.html, app.js and
// app.css (uPlot's stylesheet included). Everything the page needs is in those
// three files, so it works offline: no CDN, no font or script from elsewhere.
// Type checking is tsconfig.page.json's job (npm run typecheck); esbuild only
// strips types.
import { copyFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const page = join(root, 'src', 'dashboard', 'page');
const out = join(root, 'dist', 'dashboard');
mkdirSync(out, { recursive: true });

await build({
  entryPoints: { app: join(page, 'main.tsx') },
  outdir: out,
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['chrome109', 'firefox115', 'safari16'],
  platform: 'browser',
  jsx: 'automatic',
  jsxImportSource: 'preact',
  tsconfig: join(root, 'tsconfig.page.json'),
  legalComments: 'eof',
  logLevel: 'warning',
});
await build({
  entryPoints: { app: join(page, 'style.css') },
  outdir: out,
  bundle: true,
  minify: true,
  logLevel: 'warning',
});
copyFileSync(join(page, 'index.html'), join(out, 'index.html'));
console.log(`dashboard page built: ${out}/{index.html,app.js,app.css}`);
