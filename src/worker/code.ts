/**
 * Function code on a worker: bundles are fetched from their code volume (SDK
 * download) into `<work-dir>/code/<sha256>.mjs`, checked against their hash,
 * and kept for later calls. Bundles import `stowage` as an external package:
 * `<work-dir>/code/node_modules/stowage` links to this worker's own
 * installation, so a function uses the SDK of the worker that runs it.
 */
import { mkdirSync, rmSync, symlinkSync, readlinkSync } from 'node:fs';
import { access, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Volume, type Connection } from '../client/index.js';
import { IntegrityError } from '../common/errors.js';
import { PRIVATE } from '../common/file-modes.js';
import { sha256 } from '../common/hash.js';
import type { FunctionSpec } from '../gen/stowage/v1/bridge.js';

/** This worker's installation, with a trailing '/': what `stowage` resolves to in a bundle. */
export const PACKAGE_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

export class CodeCache {
  private readonly dir: string;
  private readonly fetches = new Map<string, Promise<string>>();

  constructor(
    workDir: string,
    private readonly connection: Connection,
  ) {
    this.dir = join(workDir, 'code');
    const link = join(this.dir, 'node_modules', 'stowage');
    mkdirSync(join(this.dir, 'node_modules'), { recursive: true, mode: PRIVATE.dir });
    let current: string | undefined;
    try {
      current = readlinkSync(link);
    } catch {
      current = undefined;
    }
    if (current !== PACKAGE_ROOT) {
      rmSync(link, { force: true, recursive: true });
      symlinkSync(PACKAGE_ROOT, link, 'dir');
    }
  }

  /** The local path of the function's bundle, fetched once per hash. */
  bundle(spec: FunctionSpec): Promise<string> {
    if (!/^[0-9a-f]{64}$/.test(spec.bundleHash)) throw new IntegrityError(`bundle hash "${spec.bundleHash}" is not a SHA-256`);
    let f = this.fetches.get(spec.bundleHash);
    if (!f) {
      f = this.fetch(spec);
      this.fetches.set(spec.bundleHash, f);
      f.catch(() => this.fetches.delete(spec.bundleHash));
    }
    return f;
  }

  private async fetch(spec: FunctionSpec): Promise<string> {
    const path = join(this.dir, `${spec.bundleHash}.mjs`);
    if (await access(path).then(() => true, () => false)) return path;
    const vol = await Volume.fromName(spec.codeVolume, { connection: this.connection });
    const bytes = await vol.readBytes(spec.bundlePath);
    if (sha256(bytes) !== spec.bundleHash) {
      throw new IntegrityError(`bundle ${spec.bundlePath} in volume ${spec.codeVolume} does not match its hash ${spec.bundleHash}`);
    }
    const tmp = `${path}.tmp-${process.pid}`;
    await writeFile(tmp, bytes, { mode: PRIVATE.file });
    await rename(tmp, path);
    return path;
  }
}
