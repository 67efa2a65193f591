// Checks the direction of dependencies in src/ (see ARCHITECTURE.md, STYLE.md):
// common imports no service; nothing imports the CLI; client does not import
// server code (of dict and queue, only their contracts' types.ts); services do
// not import each other (src/server/ assembles them, and injects what one needs
// of another, e.g. the bridge's VolumeResolver); and the module graph has no
// cycles. The dashboard page (src/dashboard/page/, browser code) imports only
// its own files and the API's JSON shapes (src/dashboard/api-types.ts, which
// imports nothing), and nothing else imports it (the server serves its bundle).
// The packages src/ imports at run time are all in "dependencies".
// Exits 1 with the offenders.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const src = join(root, 'src');
const files = readdirSync(src, { recursive: true })
  .filter((f) => /\.tsx?$/.test(f) && !f.startsWith('gen/'))
  .map((f) => join(src, f));

const graph = new Map();
for (const file of files) {
  const text = readFileSync(file, 'utf8');
  const deps = [];
  for (const m of text.matchAll(/(?:import|export)[^'"]*?from\s+'(\.[^']+)'|import\('(\.[^']+)'\)/g)) {
    const spec = m[1] ?? m[2];
    const ts = resolve(dirname(file), spec).replace(/\.js$/, '.ts');
    deps.push(existsSync(ts) || !existsSync(`${ts}x`) ? ts : `${ts}x`);
  }
  graph.set(file, deps);
}

const area = (f) => relative(src, f).split('/')[0];
// tree is the format of stored versions (common only). compute-bridge is the bridge service (common, gen only); worker is the agent
// on each host (a client of the server: common, gen, client; and the chunk
// cache's layout from fuse-mount).
const rules = [
  ['common', ['tree', 'volume-server', 'fuse-mount', 'dict', 'queue', 'compute-bridge', 'worker', 'client', 'cli', 'server', 'dashboard']],
  // tree is the stored format of versions, shared by the volume server and the mount: common below it, nothing above.
  ['tree', ['volume-server', 'fuse-mount', 'dict', 'queue', 'compute-bridge', 'worker', 'client', 'cli', 'server', 'gen', 'dashboard']],
  ['client', ['volume-server', 'cli', 'fuse-mount', 'compute-bridge', 'worker', 'server', 'dashboard']],
  ['volume-server', ['client', 'cli', 'fuse-mount', 'server', 'dict', 'queue', 'compute-bridge', 'worker', 'dashboard']],
  ['dict', ['client', 'cli', 'fuse-mount', 'server', 'volume-server', 'queue', 'compute-bridge', 'worker', 'dashboard']],
  ['queue', ['client', 'cli', 'fuse-mount', 'server', 'volume-server', 'dict', 'compute-bridge', 'worker', 'dashboard']],
  ['compute-bridge', ['client', 'cli', 'fuse-mount', 'server', 'volume-server', 'dict', 'queue', 'worker', 'dashboard']],
  ['worker', ['cli', 'server', 'volume-server', 'dict', 'queue', 'compute-bridge', 'dashboard']],
  ['server', ['client', 'cli', 'worker']],
  // The dashboard reads the services only through the sources src/server/ hands it (dashboard/types.ts).
  ['dashboard', ['client', 'cli', 'worker', 'server', 'volume-server', 'fuse-mount', 'dict', 'queue', 'compute-bridge', 'tree']],
  ['fuse-mount', ['cli', 'volume-server', 'server', 'dict', 'queue', 'compute-bridge', 'worker', 'dashboard']],
  ['gen', ['common', 'tree', 'client', 'cli', 'volume-server', 'dict', 'queue', 'server', 'compute-bridge', 'worker', 'dashboard']],
];
// The SDK may read a service's contract (its limits and types), nothing else of it.
const contractOnly = ['dict', 'queue'];
const problems = [];
for (const [file, deps] of graph) {
  for (const d of deps) {
    for (const [from, banned] of rules) {
      if (area(file) === from && banned.includes(area(d))) {
        problems.push(`${relative(root, file)} imports ${relative(root, d)} (${from} must not depend on ${area(d)})`);
      }
    }
    if (area(file) === 'client' && contractOnly.includes(area(d)) && !d.endsWith('/types.ts')) {
      problems.push(`${relative(root, file)} imports ${relative(root, d)} (the SDK may import only ${area(d)}/types.ts)`);
    }
  }
}

const page = join(src, 'dashboard', 'page') + '/';
const apiTypes = join(src, 'dashboard', 'api-types.ts');
for (const [file, deps] of graph) {
  if (file === apiTypes && deps.length) problems.push(`${relative(root, file)} imports ${deps.map((d) => relative(root, d)).join(', ')} (the page bundles it: it must import nothing)`);
  for (const d of deps) {
    if (file.startsWith(page) && !d.startsWith(page) && d !== apiTypes) problems.push(`${relative(root, file)} imports ${relative(root, d)} (the dashboard page imports only its own files)`);
    if (!file.startsWith(page) && d.startsWith(page)) problems.push(`${relative(root, file)} imports ${relative(root, d)} (the dashboard page is browser code: serve its bundle, do not import it)`);
  }
}

// What runs in production (all of src/, the generated code too, but the page,
// which is bundled at build time) imports only packages of "dependencies": a
// devDependency is absent where stowage is installed without them (the image
// of scripts/image.sh is). Type-only imports are erased, so they may name any.
const dependencies = new Set(Object.keys(JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).dependencies ?? {}));
const runtimeFiles = readdirSync(src, { recursive: true })
  .filter((f) => /\.tsx?$/.test(f) && !f.startsWith(join('dashboard', 'page')))
  .map((f) => join(src, f));
for (const file of runtimeFiles) {
  const text = readFileSync(file, 'utf8');
  for (const m of text.matchAll(/^\s*(?:import|export)\s+(?!type\s)[^'"]*?from\s+['"]([^'".][^'"]*)['"]|import\(\s*['"]([^'".][^'"]*)['"]\s*\)|^\s*import\s+['"]([^'".][^'"]*)['"]/gm)) {
    const spec = m[1] ?? m[2] ?? m[3];
    if (spec.startsWith('node:') || builtinModules.includes(spec)) continue;
    const pkg = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0];
    if (!dependencies.has(pkg)) problems.push(`${relative(root, file)} imports ${pkg}, which is not in package.json "dependencies" (a production install lacks it)`);
  }
}

// Cycles, by depth-first search.
const state = new Map();
const stack = [];
const visit = (f) => {
  state.set(f, 1);
  stack.push(f);
  for (const d of graph.get(f) ?? []) {
    if (!graph.has(d)) continue;
    if (state.get(d) === 1) {
      problems.push(`import cycle: ${stack.slice(stack.indexOf(d)).concat(d).map((x) => relative(root, x)).join(' -> ')}`);
    } else if (!state.has(d)) visit(d);
  }
  stack.pop();
  state.set(f, 2);
};
for (const f of graph.keys()) if (!state.has(f)) visit(f);

if (problems.length) {
  console.error(`import graph check failed:\n  ${problems.join('\n  ')}`);
  process.exit(1);
}
console.log(`import graph ok: ${graph.size} modules, dependencies point one way, no cycles, packages imported at run time all in "dependencies"`);
