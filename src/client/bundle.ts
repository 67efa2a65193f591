/**
 * Function code through the store: a module is bundled (esbuild: one ES
 * module with its dependencies, `stowage` left as an import for the worker's
 * own installation) and put into the code volume at `/bundles/<sha256>.mjs`,
 * unless that path is there already, so unchanged code uploads nothing.
 */
import { stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { NotFoundError, isStowageError, messageOf } from '../common/errors.js';
import { sha256 } from '../common/hash.js';
import type { Connection } from './connection.js';
import { Volume } from './volume.js';

/** The volume function bundles go into unless App is told otherwise. */
export const DEFAULT_CODE_VOLUME = '__code__';

export interface Bundle {
  /** The module's path on this host. */
  module: string;
  code: Buffer;
  hash: string;
  path: string;
  /** Names the bundle exports. */
  exports: string[];
}

export async function bundleModule(modulePath: string): Promise<Bundle> {
  if (!(await stat(modulePath).then((s) => s.isFile(), () => false))) {
    throw new NotFoundError(`module ${modulePath} not found (give the path of a .js, .mjs or .ts file)`);
  }
  const { build } = await import('esbuild');
  let result;
  try {
    result = await build({
      entryPoints: [modulePath],
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      write: false,
      metafile: true,
      logLevel: 'silent',
      outfile: 'bundle.mjs',
      external: ['stowage'],
      // CommonJS dependencies inside an ES module bundle still call require().
      banner: { js: "import { createRequire as __stowageCreateRequire } from 'node:module'; const require = __stowageCreateRequire(import.meta.url);" },
    });
  } catch (err) {
    throw new NotFoundError(`module ${basename(modulePath)} cannot be bundled: ${messageOf(err)}`);
  }
  const out = result.outputFiles[0]!;
  const code = Buffer.from(out.contents);
  const hash = sha256(code);
  const meta = Object.values(result.metafile.outputs)[0];
  return { module: modulePath, code, hash, path: `/bundles/${hash}.mjs`, exports: meta?.exports ?? [] };
}

/** Puts the bundle into the code volume unless it is there already. */
export async function uploadBundle(connection: Connection, codeVolume: string, bundle: Bundle): Promise<void> {
  const vol = await Volume.fromName(codeVolume, { connection, createIfMissing: true });
  try {
    await vol.stat(bundle.path);
    return;
  } catch (err) {
    if (!isStowageError(err, 'NOT_FOUND')) throw err;
  }
  try {
    await vol.batchUpload().putFile(bundle.code, bundle.path).commit();
  } catch (err) {
    // Another caller put the same bundle first: same bytes, same path.
    if (!isStowageError(err, 'ALREADY_EXISTS')) throw err;
  }
}
