/**
 * A model-based test of volumes (issue 10): thousands of random operations —
 * put, overwrite, rm, rm -r, cp, rename (as a writable mount commits it),
 * grouped into batches of which some fail on purpose — applied both to a
 * stowage server, through the SDK only, and to a plain in-memory model
 * (test/support/volume-model.ts, which states the rules). After every commit
 * the two must agree: the outcome (new version, or the error code), the
 * volume's info, the full listing, stat, listdir and reads of sample paths;
 * from time to time a whole earlier version is read back, and at the end the
 * listing of every version.
 *
 * Random choices come from a seeded PRNG and depend on the model only, so a
 * seed replays a run: STOWAGE_MODEL_SEED=<seed> (printed at the start), and
 * STOWAGE_MODEL_OPS=<n> for the number of operations.
 */
import { createCipheriv, createHash, randomInt } from 'node:crypto';
import pLimit from 'p-limit';
import { uniformInt } from 'pure-rand/distribution/uniformInt';
import { xoroshiro128plus } from 'pure-rand/generator/xoroshiro128plus';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isStowageError, type ErrorCode } from '../src/common/errors.js';
import { Volume, type FileInfo } from '../src/client/index.js';
import type { Connection } from '../src/client/connection.js';
// The SDK's index exports no FileEntry, though putExisting takes one.
import type { FileEntry } from '../src/client/volume.js';
import { removeScratch, startSetup, type Setup, type StoreKind } from './support/faults.js';
import { uniqueName } from './support/processes.js';
import {
  Refusal,
  ancestors,
  commitBatch,
  copy,
  directories,
  join,
  kindOf,
  line,
  listAll,
  listDir,
  readPath,
  removePath,
  statPath,
  type Batch,
  type ModelFile,
  type Tree,
} from './support/volume-model.js';

/** A whole number from the environment, or `fallback` when unset. */
function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${name}=${raw} is not a whole number (unset it for the default)`);
  return n;
}

const SEED = envInt('STOWAGE_MODEL_SEED', randomInt(2 ** 31));
const OPS = envInt('STOWAGE_MODEL_OPS', 2000);
const CHUNK = 64 * 1024;
/** A small alphabet, so that paths collide often; two names are not ASCII. */
const NAMES = ['a', 'b', 'é', '日本'];
const MODES = [0o644, 0o755, 0o600, 0o444];
/** Operations that would grow the volume past these are not generated. */
const MAX_FILES = 120;
const MAX_DEPTH = 5;

/** What the SDK did: a new version, or a failure with a stowage error code. */
type Outcome = { version: number } | { code: ErrorCode | 'not a StowageError'; message: string };

async function outcomeOf(fn: () => Promise<number>): Promise<Outcome> {
  try {
    return { version: await fn() };
  } catch (err) {
    return { code: isStowageError(err) ? err.code : 'not a StowageError', message: String(err) };
  }
}

/** The same thing for a read: a value, or a failure code. */
async function resultOf<T>(fn: () => Promise<T>): Promise<T | { code: string }> {
  try {
    return await fn();
  } catch (err) {
    if (isStowageError(err)) return { code: err.code };
    throw err;
  }
}

const isTree = (x: Tree | Refusal): x is Tree => x instanceof Map;

/** What the model says: the value, or the Refusal. */
function modelled<T>(fn: () => T): T | Refusal {
  try {
    return fn();
  } catch (err) {
    if (err instanceof Refusal) return err;
    throw err;
  }
}

/** What the model says of a read, comparable with resultOf (a read breaks one rule at most). */
function expected<T>(fn: () => T): T | { code: string } {
  const r = modelled(fn);
  return r instanceof Refusal ? { code: r.codes.join(' or ') } : r;
}

const infoLine = (f: FileInfo) => (f.type === 'file' ? line('file', f.path, f.size, f.mode) : line('directory', f.path));
const sortedLines = (infos: FileInfo[]) => infos.map(infoLine).sort();
const bytesOf = (tree: Tree) => [...tree.values()].reduce((n, f) => n + f.data.length, 0);
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex').slice(0, 16);
const bytesResult = (r: Buffer | { code: string }) => (Buffer.isBuffer(r) ? `${r.length} bytes ${sha(r)}` : r);

/** The stored entry (with its extents) of a file, as a writable mount has it for a rename. */
async function storedEntry(conn: Connection, volume: string, path: string): Promise<FileEntry> {
  const res = await conn.unary(conn.volumes.stat.bind(conn.volumes), { volume, path, version: 0 });
  return res.entry!;
}

class ModelRun {
  private readonly rng = xoroshiro128plus(SEED);
  /** versions[v] is the model of version v; versions[0] is the empty volume. */
  readonly versions: Tree[] = [new Map()];
  /** What was done, one line per commit, for failure messages. */
  private readonly trace: string[] = [];
  private readonly contents: Buffer[] = [];
  private readonly gone: string[] = [];
  private nextContent = 0;
  /** How often each kind of outcome happened, to show that the run covered them. */
  readonly seen = new Map<string, number>();

  constructor(
    readonly kind: StoreKind,
    private readonly vol: Volume,
    private readonly conn: Connection,
  ) {}

  private get tree(): Tree {
    return this.versions.at(-1)!;
  }

  // ---- random choices (from the model only, so a seed replays) -------------

  private int(lo: number, hi: number): number {
    return uniformInt(this.rng, lo, hi);
  }
  private chance(p: number): boolean {
    return this.int(0, 9999) < p * 10_000;
  }
  private pick<T>(xs: readonly T[]): T {
    return xs[this.int(0, xs.length - 1)]!;
  }

  private freshPath(): string {
    const depth = this.pick([1, 2, 2, 3, 3]);
    return Array.from({ length: depth }, () => this.pick(NAMES)).join('/');
  }
  /** A path where a new file may go (nothing there, no file above it), else any fresh path. */
  private freePath(): string {
    for (let i = 0; i < 10; i++) {
      const p = this.freshPath();
      if (kindOf(this.tree, p) === undefined && !ancestors(p).some((d) => this.tree.has(d))) return p;
    }
    return this.freshPath();
  }
  private files(): string[] {
    return [...this.tree.keys()].sort();
  }
  /** An existing file, else a fresh path. */
  private aFile(): string {
    const files = this.files();
    return files.length ? this.pick(files) : this.freshPath();
  }
  /** An existing directory, else a fresh path. */
  private aDir(): string {
    const dirs = directories(this.tree);
    return dirs.length ? this.pick(dirs) : this.freshPath();
  }
  /** Any kind of path: a file, a directory, the root, a missing path, a path under a file. */
  private aProbe(): string {
    const r = this.int(0, 99);
    if (r < 35) return this.aFile();
    if (r < 65) return this.aDir();
    if (r < 70) return '';
    if (r < 90) return this.freshPath();
    return join(this.aFile(), this.pick(NAMES));
  }

  /** Bytes that depend on the seed only: mostly small, some empty, a few of several chunks. */
  private content(): Buffer {
    if (this.contents.length > 0 && this.chance(0.1)) return this.pick(this.contents);
    const r = this.int(0, 99);
    const size =
      r < 8 ? 0 : r < 70 ? this.int(1, 2000) : r < 90 ? this.int(2001, 60_000) : r < 93 ? CHUNK : this.int(CHUNK + 1, 3 * CHUNK + 100);
    const key = createHash('sha256').update(`${SEED}/${this.nextContent++}`).digest();
    const data = createCipheriv('aes-256-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(size));
    this.contents.push(data);
    if (this.contents.length > 50) this.contents.shift();
    this.count(size > CHUNK ? 'multi-chunk file put' : 'small file put');
    return data;
  }

  private count(what: string): void {
    this.seen.set(what, (this.seen.get(what) ?? 0) + 1);
  }

  private tooBig(tree: Tree): boolean {
    return tree.size > MAX_FILES || [...tree.keys()].some((p) => p.split('/').length > MAX_DEPTH);
  }

  // ---- the run ---------------------------------------------------------------

  async run(ops: number): Promise<void> {
    let done = 0;
    while (done < ops) {
      const r = this.int(0, 99);
      if (r < 65) done += await this.batch();
      else if (r < 78) done += await this.remove();
      else if (r < 98) done += await this.copy();
      else done += await this.batch(true);
      if (this.chance(0.05)) {
        await this.checkOldVersion();
        done++;
      }
    }
    await this.checkEveryVersion();
  }

  /** A batch of puts, removals and renames (empty: a commit of nothing). Returns the operations it held. */
  private async batch(empty = false): Promise<number> {
    const force = this.chance(0.5);
    const batch: Batch = { force, removes: [], puts: [], existing: [] };
    const upload = this.vol.batchUpload({ force });
    const targets = new Set<string>();
    const said: string[] = [];
    let renamed = 0;
    const n = empty ? 0 : this.int(1, 3);
    for (let i = 0; i < n; i++) {
      const r = this.int(0, 99);
      if (r < 50 || (r >= 70 && this.tree.size === 0)) {
        const path = this.putTarget();
        if (targets.has(path)) continue; // the SDK refuses a path twice in one batch before anything
        targets.add(path);
        const file: ModelFile = { data: this.content(), mode: this.pick(MODES) };
        batch.puts.push({ path, file });
        upload.putFile(file.data, `/${path}`, { mode: file.mode });
        said.push(`put ${path} (${file.data.length} bytes, mode ${file.mode.toString(8)})`);
      } else if (r < 70) {
        const { path, recursive } = this.removeTarget();
        batch.removes.push({ path, recursive });
        upload.removeFile(`/${path}`, { recursive });
        said.push(`rm${recursive ? ' -r' : ''} /${path}`);
      } else {
        // A rename as a writable mount commits it: the stored entry under the new path, and a removal of the old.
        const from = this.pick(this.files());
        const to = this.renameTarget(from);
        if (targets.has(to)) continue;
        targets.add(to);
        const mode = this.chance(0.3) ? this.pick(MODES) : undefined;
        const file = this.tree.get(from)!;
        batch.existing.push({ path: to, file: { data: file.data, mode: mode ?? file.mode } });
        batch.removes.push({ path: from, recursive: false });
        upload.putExisting(await storedEntry(this.conn, this.vol.name, from), `/${to}`, { mode });
        upload.removeFile(`/${from}`);
        renamed++;
        said.push(`mv ${from} ${to}${mode === undefined ? '' : ` (mode ${mode.toString(8)})`}`);
      }
    }
    const want = modelled(() => commitBatch(this.tree, batch));
    const what = `batch${force ? ' (force)' : ''}: ${said.join('; ') || 'nothing'}`;
    await this.commit(what, want, () => upload.commit().then((r) => r.version), [...targets]);
    if (renamed > 0 && isTree(want)) this.count('rename committed');
    return Math.max(1, said.length);
  }

  private putTarget(): string {
    const r = this.int(0, 99);
    if (r < 50 || this.tree.size === 0) return this.freePath();
    if (r < 70) return this.aFile();
    if (r < 80 && this.gone.length) return this.pick(this.gone);
    if (r < 90) return this.freshPath();
    if (r < 95) return this.aDir();
    return join(this.aFile(), this.pick(NAMES));
  }

  private removeTarget(): { path: string; recursive: boolean } {
    const r = this.int(0, 99);
    if (r < 40) return { path: this.aFile(), recursive: this.chance(0.2) };
    if (r < 88) return { path: this.aDir(), recursive: this.chance(0.85) };
    if (r < 98) return { path: this.freshPath(), recursive: this.chance(0.5) };
    return { path: '', recursive: this.chance(0.3) };
  }

  private renameTarget(from: string): string {
    const r = this.int(0, 99);
    if (r < 70) return this.freePath();
    if (r < 80) return this.freshPath();
    if (r < 88) return this.aFile();
    if (r < 94) return this.aDir();
    return join(from, this.pick(NAMES));
  }

  private async remove(): Promise<number> {
    const { path, recursive } = this.removeTarget();
    const want = modelled(() => removePath(this.tree, { path, recursive }));
    await this.commit(`rm${recursive ? ' -r' : ''} /${path}`, want, () => this.vol.removeFile(`/${path}`, { recursive }), []);
    return 1;
  }

  private async copy(): Promise<number> {
    for (let attempt = 0; ; attempt++) {
      const srcs = Array.from({ length: this.chance(0.2) ? 2 : 1 }, () => this.copySource());
      const dst = this.copyTarget(srcs[0]!);
      const force = this.chance(0.4);
      const want = modelled(() => copy(this.tree, srcs, dst, force));
      // Keep the volume small enough to compare whole after every commit.
      if (isTree(want) && this.tooBig(want) && attempt < 20) continue;
      const what = `cp${force ? ' -f' : ''} ${srcs.map((s) => `/${s}`).join(' ')} /${dst}`;
      const added = isTree(want) ? [...want.keys()].filter((p) => want.get(p) !== this.tree.get(p)) : [];
      await this.commit(what, want, () => this.vol.copyFiles(srcs.map((s) => `/${s}`), `/${dst}`, { force }), added);
      if (isTree(want)) this.count('copy committed');
      return 1;
    }
  }

  private copySource(): string {
    const r = this.int(0, 99);
    if (r < 45) return this.aFile();
    if (r < 80) return this.aDir();
    if (r < 98) return this.freshPath();
    return '';
  }

  /** A dst as given to cp: a trailing '/' means "into". */
  private copyTarget(src: string): string {
    const r = this.int(0, 99);
    if (r < 35) return `${this.aDir()}${this.chance(0.5) ? '/' : ''}`;
    if (r < 55) return `${this.freePath()}${this.chance(0.3) ? '/' : ''}`;
    if (r < 65) return `${this.freshPath()}${this.chance(0.3) ? '/' : ''}`;
    if (r < 80) return this.aFile();
    if (r < 85) return '';
    return `${join(src, this.pick(NAMES))}${this.chance(0.5) ? '/' : ''}`;
  }

  // ---- one commit, then the comparison ---------------------------------------

  private async commit(what: string, want: Tree | Refusal, run: () => Promise<number>, touched: string[]): Promise<void> {
    this.trace.push(what);
    const before = this.versions.length - 1;
    const got = await outcomeOf(run);
    if (isTree(want)) {
      this.count('commit');
      expect(got, this.context(`commit should make version ${before + 1}`)).toEqual({ version: before + 1 });
      // Removed paths come back as put targets: re-creating what was removed.
      for (const p of this.files()) if (!want.has(p)) this.gone.push(p);
      this.gone.splice(0, Math.max(0, this.gone.length - 50));
      this.versions.push(want);
    } else {
      for (const code of want.codes) this.count(`refused ${code}`);
      const code = 'code' in got ? got.code : `version ${got.version}`;
      expect(want.codes, this.context(`commit should fail: ${want.message}; got ${JSON.stringify(got)}`)).toContain(code);
    }
    await this.checkLatest(touched, isTree(want));
  }

  private context(what: string): string {
    const v = this.versions.length - 1;
    const recent = this.trace.slice(-8).map((t, i, a) => `  ${this.trace.length - a.length + i + 1}. ${t}`);
    return `${what} [${this.kind} store, seed ${SEED} (replay: STOWAGE_MODEL_SEED=${SEED} STOWAGE_MODEL_OPS=${OPS}), model at version ${v}; last commits:\n${recent.join('\n')}]`;
  }

  /** The latest version against the model: info, whole listing, and sample paths. */
  private async checkLatest(touched: string[], changed: boolean): Promise<void> {
    const tree = this.tree;
    const v = this.versions.length - 1;
    // Paths are chosen before any call, so that the checks can run at once and a seed still replays.
    // After a refused commit, info and the listing show that nothing changed; the probes would repeat the last ones.
    const stats = changed ? [this.aProbe(), this.aProbe()] : [];
    const dir = changed ? this.aProbe() : undefined;
    const reads = changed ? [...touched.filter((p) => tree.has(p)).slice(0, 2), this.aProbe()].filter((p) => p !== '') : [];
    await Promise.all([
      (async () => {
        const info = await this.vol.info();
        expect(
          { latestVersion: info.latestVersion, fileCount: info.fileCount, totalBytes: info.totalBytes },
          this.context('volume info'),
        ).toEqual({ latestVersion: v, fileCount: tree.size, totalBytes: bytesOf(tree) });
      })(),
      (async () => {
        expect(sortedLines(await this.vol.listdir('/', { recursive: true })), this.context('listing')).toEqual(listAll(tree));
      })(),
      dir === undefined
        ? undefined
        : (async () => {
            const got = await resultOf(async () => sortedLines(await this.vol.listdir(`/${dir}`)));
            expect(got, this.context(`listdir /${dir}`)).toEqual(expected(() => listDir(tree, dir)));
          })(),
      ...stats.map((p) => this.checkStat(p, 0, tree)),
      ...reads.map((p) => this.checkRead(p, 0, tree)),
      v % 25 === 0 ? this.checkVersions() : undefined,
    ]);
  }

  private async checkStat(path: string, version: number, tree: Tree): Promise<void> {
    const got = await resultOf(async () => infoLine(await this.vol.stat(`/${path}`, { version })));
    expect(got, this.context(`stat /${path} at version ${version || 'latest'}`)).toEqual(expected(() => statPath(tree, path)));
  }

  private async checkRead(path: string, version: number, tree: Tree): Promise<void> {
    const got = await resultOf(() => this.vol.readBytes(`/${path}`, { version }));
    const want = expected(() => readPath(tree, path));
    expect(bytesResult(got), this.context(`read /${path} at version ${version || 'latest'}`)).toEqual(bytesResult(want));
  }

  private async checkVersions(): Promise<void> {
    const got = (await this.vol.versions()).map((x) => ({ version: x.version, files: x.fileCount, bytes: x.totalBytes }));
    const want = this.versions.slice(1).map((t, i) => ({ version: i + 1, files: t.size, bytes: bytesOf(t) }));
    expect(got, this.context('versions')).toEqual(want);
  }

  /** A random earlier version, read back whole: listing, stats, every file's bytes. */
  private async checkOldVersion(): Promise<void> {
    const latest = this.versions.length - 1;
    if (latest < 1) return;
    const version = this.int(1, latest);
    const tree = this.versions[version]!;
    this.trace.push(`(read version ${version} whole)`);
    this.count('old version read whole');
    const stats = [this.aProbe(), this.aProbe()];
    const limit = pLimit(8);
    await Promise.all([
      (async () => {
        const got = sortedLines(await this.vol.listdir('/', { recursive: true, version }));
        expect(got, this.context(`listing at version ${version}`)).toEqual(listAll(tree));
      })(),
      ...stats.map((p) => this.checkStat(p, version, tree)),
      ...[...tree.keys()].map((p) => limit(() => this.checkRead(p, version, tree))),
    ]);
  }

  /** Every version's listing still matches its model: a commit never changes an earlier version. */
  private async checkEveryVersion(): Promise<void> {
    await this.checkVersions();
    const limit = pLimit(8);
    await Promise.all(
      this.versions.slice(1).map((tree, i) =>
        limit(async () => {
          const got = sortedLines(await this.vol.listdir('/', { recursive: true, version: i + 1 }));
          expect(got, this.context(`listing at version ${i + 1}`)).toEqual(listAll(tree));
        }),
      ),
    );
  }
}

describe.each(['local', 's3'] as const)('volume model on the %s store', (kind) => {
  let setup: Setup | undefined;
  const created: string[] = [];

  beforeAll(async () => {
    setup = await startSetup(kind);
  });
  afterAll(async () => {
    for (const name of created) await Volume.delete(name, { connection: setup!.stowage.connection }).catch(() => undefined);
    await setup?.stop();
    removeScratch();
  });

  it(
    `${OPS} random operations agree with the model`,
    async () => {
      console.log(`volume model on the ${kind} store: seed ${SEED}, ${OPS} operations (replay: STOWAGE_MODEL_SEED=${SEED})`);
      const conn = setup!.stowage.connection;
      const name = uniqueName('test-model');
      created.push(name);
      const vol = await Volume.fromName(name, { createIfMissing: true, connection: conn, chunkSize: CHUNK });
      const run = new ModelRun(kind, vol, conn);
      await run.run(OPS);
      const seen = Object.fromEntries([...run.seen].sort());
      console.log(`volume model on the ${kind} store: ${run.versions.length - 1} versions; ${JSON.stringify(seen)}`);
      if (OPS >= 1000) {
        // A run this long must have exercised every kind of outcome, or it proved little.
        for (const what of [
          'commit',
          'rename committed',
          'copy committed',
          'refused ALREADY_EXISTS',
          'refused NOT_FOUND',
          'refused FAILED_PRECONDITION',
          'multi-chunk file put',
          'old version read whole',
        ]) {
          expect(run.seen.get(what) ?? 0, `${what} (seed ${SEED})`).toBeGreaterThan(0);
        }
      }
    },
    Math.max(180_000, OPS * 200),
  );
});
