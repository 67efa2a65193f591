/**
 * Volume: a write-once, read-many file tree, shaped like Modal's Volume.
 *
 *   const vol = await Volume.fromName('weights', { createIfMissing: true });
 *   const batch = vol.batchUpload();
 *   batch.putFile('./model.bin', '/model.bin');
 *   batch.putDirectory('./tokenizer', '/tokenizer');
 *   await batch.commit();                      // one new version, atomically
 *   for await (const buf of vol.readFile('/model.bin')) { ... }
 */
import { randomUUID } from 'node:crypto';
import { lstatSync, statSync, type Stats } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import { Readable } from 'node:stream';
import { eachInRuns } from '../common/files.js';
import { AlreadyExistsError, InvalidArgumentError, NotFoundError, StowageError, isStowageError } from '../common/errors.js';
import { checkName, normalizeFilePath, normalizePath } from '../common/validate.js';
import pLimit from 'p-limit';
import {
  FileType,
  type CommitRequest,
  type CommitResponse,
  type CopyOp,
  type FileEntry,
  type RemoveOp,
  type VersionInfo,
  type VolumeInfo,
} from '../gen/stowage/v1/volume.js';
import { BlobTransport, type TransferMode } from './blob-transport.js';
import { BufferPool } from './buffer-pool.js';
import type { Connection } from './connection.js';
import { downloadFiles, downloadTargets, piecesFor, readPieces } from './download.js';
import { defaultFetchThreads } from './fetch-pool.js';
import { Handle, connectionOf, ephemeralName, openNamed, type EphemeralLife } from './handle.js';
import { ListingCheck, checkedEntryAt, checkedUrls } from './server-answers.js';
import { Uploader, type PendingFile, type TransferProgress, type TransferStats, type UploadSource } from './upload.js';

export type { FileEntry, VersionInfo, VolumeInfo, TransferProgress, TransferStats };

export const DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024;
export const DEFAULT_PARALLEL = 8;
export const SMALL_FILE_MAX = 1024 * 1024;

export interface VolumeOptions {
  connection?: Connection;
  /** Bytes per chunk for new uploads (default 8 MiB). */
  chunkSize?: number;
  /** Chunk transfers in flight at once (default 8). */
  parallel?: number;
  /**
   * Threads that fetch, verify and write the chunks of big files a download
   * writes (fetch-pool.ts; default: one per core, up to 4; 0: on the calling
   * thread).
   */
  fetchThreads?: number;
  transfer?: TransferMode;
}

export interface FromNameOptions extends VolumeOptions {
  createIfMissing?: boolean;
}

export interface ReadOptions {
  /** Read this version instead of the latest. */
  version?: number;
  offset?: number;
  length?: number;
}

export interface ListOptions {
  recursive?: boolean;
  version?: number;
}

export interface PageOptions {
  /** Entries per page (listPage's default: 1000). */
  pageSize?: number;
  /** The nextPageToken of the page before. */
  pageToken?: string;
}

export interface FileInfo {
  path: string;
  type: 'file' | 'directory';
  size: number;
  mode: number;
  mtime: Date;
}

export interface BatchUploadOptions {
  /** Overwrite files that exist; without it an existing path fails the batch. */
  force?: boolean;
  onProgress?: (p: TransferProgress) => void;
}

export interface CommitResult extends TransferStats {
  version: number;
}

export interface DownloadOptions {
  version?: number;
  onProgress?: (p: TransferProgress) => void;
}

/** Sends of one commit while its server is unavailable (about 12 s of retries in all). */
const COMMIT_ATTEMPTS = 6;
/** Bytes of puts per message of a commit stream: the server reads ahead up to 16 messages, so small ones bound its memory. */
const COMMIT_MESSAGE_BYTES = 512 * 1024;
/** Up to this many paths, a batch checks for existing files with one stat each. */
const STAT_CHECK_MAX = 256;

function existsError(path: string, volume: string): AlreadyExistsError {
  return new AlreadyExistsError(
    `"${path}" already exists in volume "${volume}" (overwrite it with: stowage volume put -f, or force: true); nothing was uploaded`,
  );
}

/** A volume handle; the life cycle (fromName, ephemeral, close) is Handle's (handle.ts). */
export class Volume extends Handle {
  private readonly transport: BlobTransport;
  private readonly pool: BufferPool;

  private constructor(
    name: string,
    conn: Connection,
    private readonly opts: Required<Omit<VolumeOptions, 'connection' | 'transfer'>>,
    transfer: TransferMode | undefined,
    life?: EphemeralLife,
  ) {
    super('volume', name, conn, life);
    this.transport = new BlobTransport(conn, transfer);
    this.pool = new BufferPool(opts.chunkSize, opts.parallel + 2);
  }

  /** The volume called `name`; NOT_FOUND unless it exists or createIfMissing is set. */
  static async fromName(name: string, opts: FromNameOptions = {}): Promise<Volume> {
    const conn = await openNamed('volume', name, opts, {
      create: (c) => c.unary(c.volumes.createVolume.bind(c.volumes), { name, ephemeral: false, existOk: true }),
      get: (c) => c.unary(c.volumes.getVolume.bind(c.volumes), { name }),
    });
    return new Volume(name, conn, settings(opts), opts.transfer);
  }

  /** A volume that lives until close() (or until its heartbeats stop for the server's timeout). */
  static async ephemeral(opts: VolumeOptions = {}): Promise<Volume> {
    const conn = connectionOf(opts);
    const vols = conn.volumes;
    const info = await conn.unary(vols.createVolume.bind(vols), { name: ephemeralName(), ephemeral: true, existOk: false });
    return new Volume(info.name, conn, settings(opts), opts.transfer, {
      beat: (c) => c.unary(c.volumes.heartbeat.bind(c.volumes), { name: info.name }),
      remove: (c) => Volume.delete(info.name, { connection: c }),
    });
  }

  static async list(opts: { connection?: Connection } = {}): Promise<VolumeInfo[]> {
    const conn = connectionOf(opts);
    return (await conn.unary(conn.volumes.listVolumes.bind(conn.volumes), { includeEphemeral: false })).volumes;
  }

  static async delete(name: string, opts: { connection?: Connection } = {}): Promise<void> {
    const conn = connectionOf(opts);
    await conn.unary(conn.volumes.deleteVolume.bind(conn.volumes), { name: checkName('volume', name) });
  }

  static async rename(name: string, newName: string, opts: { connection?: Connection } = {}): Promise<VolumeInfo> {
    const conn = connectionOf(opts);
    return conn.unary(conn.volumes.renameVolume.bind(conn.volumes), {
      name: checkName('volume', name),
      newName: checkName('volume', newName),
    });
  }

  async info(): Promise<VolumeInfo> {
    return this.call('getVolume', { name: this.name });
  }

  async versions(): Promise<VersionInfo[]> {
    return (await this.call('listVersions', { name: this.name })).versions;
  }

  // ---- reads -----------------------------------------------------------------

  /**
   * Entries directly in `path` (or below it, with recursive: depth first, a
   * directory before what is in it), in name order. For big directories use
   * iterdir() or listPage(), which never hold the whole listing.
   */
  async listdir(path = '/', opts: ListOptions = {}): Promise<FileInfo[]> {
    return (await this.listEntries(path, opts)).map(toInfo);
  }

  /** listdir() as it streams from the server. */
  async *iterdir(path = '/', opts: ListOptions = {}): AsyncIterable<FileInfo> {
    for await (const batch of this.listBatches(path, opts)) for (const e of batch.entries) yield toInfo(e);
  }

  /**
   * One page of a listing: at most `pageSize` entries; pass `nextPageToken`
   * back as `pageToken` for the next page (it reads the same version). The
   * token is empty after the last page.
   */
  async listPage(path = '/', opts: ListOptions & PageOptions = {}): Promise<{ entries: FileInfo[]; nextPageToken: string }> {
    const entries: FileInfo[] = [];
    let nextPageToken = '';
    for await (const batch of this.listBatches(path, { ...opts, pageSize: opts.pageSize ?? 1000 })) {
      for (const e of batch.entries) entries.push(toInfo(e));
      if (batch.nextPageToken) nextPageToken = batch.nextPageToken;
    }
    return { entries, nextPageToken };
  }

  async stat(path: string, opts: { version?: number } = {}): Promise<FileInfo> {
    const p = normalizePath(path);
    const res = await this.call('stat', { volume: this.name, path: p, version: opts.version ?? 0 });
    return toInfo(checkedEntryAt(res.entry, p, `the stat of "${p}" in volume "${this.name}"`));
  }

  /** The file's bytes (or a range of them) as verified Buffers, in order. */
  async *readFile(path: string, opts: ReadOptions = {}): AsyncIterable<Buffer> {
    const p = normalizeFilePath(path);
    const res = await this.call('getFile', { volume: this.name, path: p, version: opts.version ?? 0, presign: this.transport.wantsPresign });
    const what = `a read of "${p}" in volume "${this.name}"`;
    const entry = checkedEntryAt(res.entry, p, what, FileType.FILE_TYPE_FILE);
    const getUrls = checkedUrls(res.getUrls, entry.extents.map((e) => e.blob), what);
    const offset = opts.offset ?? 0;
    if (offset < 0 || (opts.length !== undefined && opts.length < 0)) {
      throw new InvalidArgumentError('offset and length must not be negative');
    }
    const pieces = piecesFor(entry, offset, opts.length ?? entry.size);
    yield* readPieces(this.transport, pieces, getUrls, this.opts.parallel, `"${entry.path}" in volume "${this.name}"`, undefined, { volume: this.name, path: entry.path, version: res.version });
  }

  /** readFile gathered into one Buffer. */
  async readBytes(path: string, opts: ReadOptions = {}): Promise<Buffer> {
    const parts: Buffer[] = [];
    for await (const p of this.readFile(path, opts)) parts.push(p);
    return Buffer.concat(parts);
  }

  /**
   * Downloads a file or a directory tree to `localPath`. A directory lands
   * below `localPath`, keeping its relative paths.
   */
  async download(remotePath: string, localPath: string, opts: DownloadOptions = {}): Promise<TransferStats & { version: number }> {
    const started = performance.now();
    const root = normalizePath(remotePath);
    const stat = await this.call('stat', { volume: this.name, path: root, version: opts.version ?? 0 });
    const version = stat.version;
    const what = `a download of "${root}" from volume "${this.name}"`;
    const entry = checkedEntryAt(stat.entry, root, what);
    const entries = entry.type === FileType.FILE_TYPE_FILE ? [] : await this.listEntries(root, { recursive: true, version, extents: true });
    const targets = downloadTargets(root, entry, entries, localPath);
    const blobs = [...new Set(targets.flatMap((t) => t.entry.extents.map((e) => e.blob)))];
    const getUrls = this.transport.wantsPresign ? checkedUrls((await this.call('presignBlobs', { blobs })).getUrls, blobs, what) : {};
    const moved = await downloadFiles(this.transport, this.name, version, targets, getUrls, this.opts.parallel, this.pool, opts.onProgress, this.opts.fetchThreads);
    return {
      version,
      files: targets.length,
      bytes: targets.reduce((n, t) => n + t.entry.size, 0),
      chunks: blobs.length,
      chunksTransferred: moved.chunksTransferred,
      bytesTransferred: moved.bytesTransferred,
      seconds: (performance.now() - started) / 1000,
    };
  }

  // ---- writes ----------------------------------------------------------------

  batchUpload(opts: BatchUploadOptions = {}): BatchUpload {
    return new BatchUpload(this, opts);
  }

  /** Removes a file, or a directory with recursive; one new version. */
  async removeFile(path: string, opts: { recursive?: boolean } = {}): Promise<number> {
    const res = await this.commit({ removes: [{ path: normalizePath(path), recursive: opts.recursive ?? false }], copies: [], force: false }, []);
    return res.version;
  }

  /**
   * Copies files or directories inside the volume without moving data. With
   * several sources, or a dst ending in '/' or naming a directory, each source
   * lands inside dst. A directory is copied with everything in it unless
   * `recursive: false`, which refuses it (FailedPreconditionError, nothing
   * copied), as `modal volume cp` without -r does; the default stays true so
   * that code written before the option keeps working.
   */
  async copyFiles(srcs: string[], dst: string, opts: { force?: boolean; recursive?: boolean } = {}): Promise<number> {
    for (const s of srcs) normalizePath(s);
    normalizePath(dst);
    const filesOnly = opts.recursive === false;
    const res = await this.commit({ removes: [], copies: [{ srcs, dst, filesOnly }], force: opts.force ?? false }, []);
    return res.version;
  }

  /** @internal Used by BatchUpload. */
  async commitBatch(files: PendingFile[], opts: BatchUploadOptions, more: BatchExtras = { existing: [], removes: [] }): Promise<CommitResult> {
    const seen = new Set<string>();
    for (const path of [...files.map((f) => f.remotePath), ...more.existing.map((e) => e.path)]) {
      if (seen.has(path)) throw new InvalidArgumentError(`"${path}" is put twice in one batch`);
      seen.add(path);
    }
    // The server applies a batch's removals first: a path the batch removes may be put again.
    const removed = (p: string): boolean =>
      more.removes.some((r) => r.path === p || (r.recursive && (r.path === '' || p.startsWith(`${r.path}/`))));
    if (!opts.force) await this.refuseExisting([...seen].filter((p) => !removed(p)));
    const uploader = new Uploader(this.conn, this.transport, this.name, {
      chunkSize: this.opts.chunkSize,
      parallel: this.opts.parallel,
      smallFileMax: Math.min(SMALL_FILE_MAX, this.opts.chunkSize),
      pool: this.pool,
      onProgress: opts.onProgress,
    });
    const { entries, stats } = await uploader.run(files);
    const res = await this.commit({ removes: more.removes, copies: [], force: opts.force ?? false }, [...entries, ...more.existing]);
    return { ...stats, version: res.version };
  }

  /**
   * One commit: removals and copies, then the puts, sent as a stream of
   * messages of at most COMMIT_MESSAGE_BYTES each so that a commit of a
   * million files never needs one huge message.
   *
   * It carries an id of its own: when the server goes away before it answers
   * (UNAVAILABLE: it died, the connection broke, another server of the set
   * is tried), the same commit is sent again, and the server lands it once,
   * answering a retry of one that had landed with that version.
   */
  private async commit(header: { removes: RemoveOp[]; copies: CopyOp[]; force: boolean }, puts: FileEntry[]): Promise<CommitResponse> {
    const messages: CommitRequest[] = [];
    let batch: FileEntry[] = [];
    let bytes = 0;
    const first = { volume: this.name, removes: header.removes, copies: header.copies, force: header.force, commitId: randomUUID() };
    const push = (): void => {
      messages.push(messages.length === 0 ? { ...first, puts: batch } : { volume: '', removes: [], copies: [], force: false, commitId: '', puts: batch });
      batch = [];
      bytes = 0;
    };
    for (const e of puts) {
      const size = Buffer.byteLength(e.path) + 64 + e.extents.length * 150;
      if (batch.length > 0 && bytes + size > COMMIT_MESSAGE_BYTES) push();
      batch.push(e);
      bytes += size;
    }
    if (batch.length > 0 || messages.length === 0) push();
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.conn.clientStream((cb) => this.conn.volumes.commit(cb), messages);
      } catch (err) {
        if (!(err instanceof StowageError && err.code === 'UNAVAILABLE') || attempt >= COMMIT_ATTEMPTS) throw err;
        await new Promise((r) => setTimeout(r, Math.min(250 * 2 ** (attempt - 1), 4000)));
      }
    }
  }

  /** Fails before any byte moves when a target exists (the commit checks again). */
  private async refuseExisting(paths: string[]): Promise<void> {
    if (paths.length === 0) return;
    if (paths.length <= STAT_CHECK_MAX) {
      // A few paths: one stat each, whatever the size of the volume.
      const limit = pLimit(8);
      const hits = await Promise.all(
        paths.map((p) =>
          limit(async () => {
            try {
              const res = await this.call('stat', { volume: this.name, path: p, version: 0 });
              return checkedEntryAt(res.entry, p, `the stat of "${p}" in volume "${this.name}"`).type === FileType.FILE_TYPE_FILE ? p : undefined;
            } catch (err) {
              if (isStowageError(err, 'NOT_FOUND')) return undefined;
              throw err;
            }
          }),
        ),
      );
      const clash = hits.find((h) => h !== undefined);
      if (clash) throw existsError(clash, this.name);
      return;
    }
    const dirs = paths.map((p) => p.split('/').slice(0, -1));
    let common = dirs[0]!;
    for (const d of dirs) {
      let i = 0;
      while (i < common.length && i < d.length && common[i] === d[i]) i++;
      common = common.slice(0, i);
    }
    let existing: FileEntry[];
    try {
      existing = await this.listEntries(common.join('/'), { recursive: true });
    } catch (err) {
      if (isStowageError(err, 'NOT_FOUND')) return;
      throw err;
    }
    const have = new Set(existing.filter((e) => e.type === FileType.FILE_TYPE_FILE).map((e) => e.path));
    const clash = paths.find((p) => have.has(p));
    if (clash) throw existsError(clash, this.name);
  }

  private async listEntries(path: string, opts: ListOptions & { extents?: boolean }): Promise<FileEntry[]> {
    const out: FileEntry[] = [];
    for await (const batch of this.listBatches(path, opts)) out.push(...batch.entries);
    return out;
  }

  /** A listing as it streams, each batch checked (ListingCheck) before it is used. */
  private async *listBatches(
    path: string,
    opts: ListOptions & PageOptions & { extents?: boolean },
  ): AsyncGenerator<{ entries: FileEntry[]; nextPageToken: string }> {
    const dir = normalizePath(path);
    const call = this.conn.volumes.listFiles({
      volume: this.name,
      path: dir,
      recursive: opts.recursive ?? false,
      version: opts.version ?? 0,
      pageSize: opts.pageSize ?? 0,
      pageToken: opts.pageToken ?? '',
      // Only a download needs every file's extents; a listing shows names and sizes.
      withoutExtents: !opts.extents,
    });
    const check = new ListingCheck(dir, opts.recursive ?? false, `the listing of "${dir}" in volume "${this.name}"`, opts.extents ?? false);
    for await (const batch of this.conn.stream(call)) yield { entries: check.batch(batch.entries), nextPageToken: batch.nextPageToken };
  }

  private call<M extends UnaryName>(method: M, req: Parameters<Connection['volumes'][M]>[0]): Promise<UnaryResult<M>> {
    const vols = this.conn.volumes;
    const fn = (vols[method] as (...a: unknown[]) => unknown).bind(vols);
    return this.conn.unary(fn as never, req) as Promise<UnaryResult<M>>;
  }
}

type Vols = Connection['volumes'];
type UnaryName = 'getVolume' | 'listVersions' | 'stat' | 'getFile' | 'presignBlobs';
type CallbackOf<F> = F extends (req: never, md: never, opts: never, cb: infer C) => unknown ? C : never;
type UnaryResult<M extends UnaryName> =
  CallbackOf<Vols[M]> extends (err: never, res: infer R) => void ? R : never;

/** What a batch commits besides uploaded files. */
interface BatchExtras {
  /** Files the volume stores already, under new paths (no bytes move). */
  existing: FileEntry[];
  removes: { path: string; recursive: boolean }[];
}

/**
 * Changes gathered for one commit; nothing is visible until commit() succeeds.
 * The server applies a batch's removals first, then its files, so a batch may
 * remove a directory and put a file of the same name.
 */
export class BatchUpload {
  private readonly files: PendingFile[] = [];
  private readonly dirs: { local: string; remote: string }[] = [];
  private readonly extras: BatchExtras = { existing: [], removes: [] };
  /** Mode and mtime given to putFile for a local file, which win over the file's own. */
  private readonly given = new Map<PendingFile, { mode?: number; mtimeMs?: number }>();
  private committed = false;

  constructor(
    private readonly volume: Volume,
    private readonly opts: BatchUploadOptions,
  ) {}

  /**
   * A local file path, a Buffer or a Readable stream, to `remotePath`. A local
   * file's mode and mtime are its own unless given here.
   */
  putFile(source: UploadSource, remotePath: string, opts: { mode?: number; mtimeMs?: number } = {}): this {
    const path = normalizeFilePath(remotePath);
    const size = Buffer.isBuffer(source) ? source.length : source instanceof Readable ? undefined : -1;
    this.files.push({ remotePath: path, source, size, mode: opts.mode ?? 0o644, mtimeMs: opts.mtimeMs ?? Date.now() });
    if (size === -1) this.given.set(this.files.at(-1)!, { mode: opts.mode, mtimeMs: opts.mtimeMs });
    return this;
  }

  /**
   * A file this volume stores already (`entry` as listed or stat-ed, with its
   * extents) under `remotePath`, with `mode` if given: no bytes move. The
   * server checks that the entry's chunks are still stored.
   */
  putExisting(entry: FileEntry, remotePath: string, opts: { mode?: number } = {}): this {
    this.extras.existing.push({ ...entry, path: normalizeFilePath(remotePath), mode: opts.mode ?? entry.mode });
    return this;
  }

  /** Removes a file (or a directory, with recursive) in the same version; NOT_FOUND at commit when it is not there. */
  removeFile(path: string, opts: { recursive?: boolean } = {}): this {
    this.extras.removes.push({ path: normalizePath(path), recursive: opts.recursive ?? false });
    return this;
  }

  /** Every file below `localDir`, to the same relative paths below `remoteDir`. */
  putDirectory(localDir: string, remoteDir: string): this {
    this.dirs.push({ local: localDir, remote: normalizePath(remoteDir) });
    return this;
  }

  /** Uploads what is missing and commits one version. */
  async commit(): Promise<CommitResult> {
    if (this.committed) throw new InvalidArgumentError('this batch was committed already');
    this.committed = true;
    const local = this.files.filter((f) => f.size === -1);
    const stats = await eachInRuns(local, (f) => statFile(f.source as string));
    local.forEach((f, i) => {
      const st = stats[i]!;
      const given = this.given.get(f);
      f.size = st.size;
      f.mode = given?.mode ?? st.mode & 0o777;
      f.mtimeMs = given?.mtimeMs ?? Math.floor(st.mtimeMs);
    });
    for (const d of this.dirs) for (const f of await walk(d.local, d.remote)) this.files.push(f);
    return this.volume.commitBatch(this.files, this.opts, this.extras);
  }
}

function statFile(path: string): Stats {
  let st;
  try {
    st = statSync(path);
  } catch {
    throw new NotFoundError(`local file ${path} not found`);
  }
  if (!st.isFile()) throw new InvalidArgumentError(`local path ${path} is not a regular file`);
  return st;
}

async function walk(localDir: string, remoteDir: string): Promise<PendingFile[]> {
  let names;
  try {
    names = await readdir(localDir, { recursive: true, withFileTypes: true });
  } catch {
    throw new NotFoundError(`local directory ${localDir} not found`);
  }
  const files = names.filter((d) => d.isFile()).map((d) => join(d.parentPath, d.name));
  const out = await eachInRuns(files, (full): PendingFile => {
    const rel = relative(localDir, full).split(sep).join('/');
    const st = lstatSync(full);
    return {
      remotePath: normalizeFilePath(remoteDir === '' ? rel : `${remoteDir}/${rel}`),
      source: full,
      size: st.size,
      mode: st.mode & 0o777,
      mtimeMs: Math.floor(st.mtimeMs),
    };
  });
  out.sort((a, b) => (a.remotePath < b.remotePath ? -1 : 1));
  return out;
}

function settings(opts: VolumeOptions): Required<Omit<VolumeOptions, 'connection' | 'transfer'>> {
  const chunkSize = opts.chunkSize ?? (Number(process.env.STOWAGE_CHUNK_SIZE) || DEFAULT_CHUNK_SIZE);
  if (!Number.isInteger(chunkSize) || chunkSize < 64 * 1024 || chunkSize > 64 * 1024 * 1024) {
    throw new InvalidArgumentError(`chunk size ${chunkSize} must be a whole number of bytes from 64 KiB to 64 MiB`);
  }
  const fetchThreads = opts.fetchThreads ?? defaultFetchThreads(false);
  if (!Number.isInteger(fetchThreads) || fetchThreads < 0 || fetchThreads > 64) {
    throw new InvalidArgumentError(`fetchThreads ${fetchThreads} must be a whole number from 0 to 64`);
  }
  return { chunkSize, parallel: opts.parallel ?? DEFAULT_PARALLEL, fetchThreads };
}

function toInfo(e: FileEntry): FileInfo {
  return {
    path: e.path,
    type: e.type === FileType.FILE_TYPE_DIRECTORY ? 'directory' : 'file',
    size: e.size,
    mode: e.mode,
    mtime: new Date(e.mtimeMs),
  };
}
