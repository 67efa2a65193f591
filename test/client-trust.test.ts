/**
 * The client does not trust the server blindly: gRPC runs in cleartext, so
 * anyone on the path can answer in its place. A tiny hostile VolumeService,
 * written here with @grpc/grpc-js and the generated service definition,
 * answers the real SDK and the real CLI (`node bin/stowage.js`, with
 * STOWAGE_SERVER pointing at it) with listings that climb out of the target,
 * setuid modes, extents that do not add up and file:// URLs to files that are
 * not chunks. Each attack is refused with a clear error (or, for URLs, the
 * bytes go through the server's stream), nothing changes outside the target
 * (the whole scratch tree is compared before and after), no setuid, setgid or
 * sticky bit appears (these tests run as root), and planted files stay as
 * they were. The last test checks the real server: a raw commit of 0o4755 is
 * stored as 0o755.
 */
import {
  Metadata,
  Server,
  ServerCredentials,
  status,
  type handleClientStreamingCall,
  type handleServerStreamingCall,
  type handleUnaryCall,
} from '@grpc/grpc-js';
import { createHash, randomBytes } from 'node:crypto';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync, renameSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { lstat, readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { Connection, FailedPreconditionError, IntegrityError, NotFoundError, StowageError, Volume } from '../src/client/index.js';
import { InternalError } from '../src/common/errors.js';
import { callError } from '../src/client/invoke.js';
import { fromOpError } from '../src/common/grpc-errors.js';
import {
  FileType,
  VolumeServiceService,
  type CommitRequest,
  type CommitResponse,
  type Extent,
  type FileEntry,
  type GetFileResponse,
  type ListFilesRequest,
  type ListFilesResponse,
  type PutBlobRequest,
  type PutBlobResponse,
  type ReadBlobRequest,
  type ReadBlobResponse,
  type StatRequest,
  type StatResponse,
  type VolumeInfo,
  type VolumeServiceServer,
} from '../src/gen/stowage/v1/volume.js';
import { encode as msgpackEncode } from '@msgpack/msgpack';
import { hashPage, type Entry, type FileItem, type Page } from '../src/tree/format.js';
import { expectFailure } from './support/checks.js';
import { cleanUpMounts, startMountProcess, stopMount } from './support/mount.js';
import { runCli, runCliBytes, startStowage, tempDir, uniqueName, type Stowage } from './support/processes.js';

const sha256 = (d: Uint8Array): string => createHash('sha256').update(d).digest('hex');
const TOKEN = 'hostile-token';
const SUID_BITS = 0o7000;

/** What the hostile server answers; each test sets its own. */
interface Script {
  /** Every ListFiles answer, whatever was asked. */
  listing: FileEntry[];
  /** The Stat answer (default: a directory of the path asked for). */
  stat?: (path: string) => FileEntry;
  /** The GetFile answer (default: the listed file of that path, no URLs). */
  getFile?: (path: string) => GetFileResponse;
  /** PresignBlobs answers with this URL for each blob (undefined: none). */
  getUrl?: (blob: string) => string | undefined;
  /** PlanUpload says every blob asked about is missing, with this URL. */
  putUrl?: (blob: string) => string | undefined;
  knownContents?: Record<string, Extent>;
  /** For a mount: the root page GetVersion names, and the tree objects GetTreeObjects serves (by hash). */
  tree?: { root: string; objects: Map<string, Buffer> };
  /** Stat fails with this status, and this `stowage-code` trailer. */
  statFails?: { code: status; stowageCode: string };
  /** ListFiles answers "data/f000000001"… in batches of 1,000 until the client cancels; batch `badAt` names a path out of "data". */
  endlessListing?: { badAt?: number };
  /** ReadBlob sends this many bytes more than were asked for. */
  readBlobExtra?: number;
}

class HostileServer {
  script: Script = { listing: [] };
  /** Blob bytes ReadBlob serves; a blob not here is NOT_FOUND. */
  readonly blobs = new Map<string, Buffer>();
  readonly readBlobs: string[] = [];
  readonly putBlobs: string[] = [];
  /** Blobs a client reported damaged. */
  readonly reported: string[] = [];
  /** Set when a client cancels an endless listing. */
  listingCancelled = false;
  private server = new Server();
  address = '';

  async start(): Promise<void> {
    this.server.addService(VolumeServiceService, this.handlers());
    const port = await new Promise<number>((res, rej) =>
      this.server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) => (err ? rej(err) : res(p))),
    );
    this.address = `127.0.0.1:${port}`;
  }

  stop(): void {
    this.server.forceShutdown();
  }

  reset(script: Script): void {
    // Listings come in the order the protocol states (depth first, by name); clients refuse any other.
    const parts = (e: FileEntry) => e.path.split('/');
    script.listing.sort((a, b) => {
      const x = parts(a);
      const y = parts(b);
      for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i]! < y[i]! ? -1 : 1;
      return x.length - y.length;
    });
    this.script = script;
    this.readBlobs.length = 0;
    this.putBlobs.length = 0;
    this.reported.length = 0;
    this.listingCancelled = false;
  }

  /** A file entry whose bytes ReadBlob serves. */
  file(path: string, data: Buffer, mode = 0o644): FileEntry {
    const hash = sha256(data);
    this.blobs.set(hash, data);
    return { path, type: FileType.FILE_TYPE_FILE, size: data.length, mode, mtimeMs: 1_700_000_000_000, extents: [{ blob: hash, offset: 0, length: data.length, hash }], id: 0, tree: '' };
  }

  private handlers(): VolumeServiceServer {
    const info = (name: string): VolumeInfo => ({ name, id: 'v1', createdAtMs: 1, latestVersion: 1, fileCount: 1, totalBytes: 1, ephemeral: false, keepLast: 0, keepWithinMs: 0 });
    const unary = <Req, Res>(answer: (req: Req) => Res): handleUnaryCall<Req, Res> => (call, cb) => {
      try {
        cb(null, answer(call.request));
      } catch (err) {
        cb({ code: status.INTERNAL, details: String(err) });
      }
    };
    const nope: handleUnaryCall<unknown, never> = (_call, cb) => cb({ code: status.UNIMPLEMENTED, details: 'not in this test' });
    const listFiles: handleServerStreamingCall<ListFilesRequest, ListFilesResponse> = (call) => {
      const endless = this.script.endlessListing;
      if (!endless) {
        call.write({ entries: this.script.listing, version: 1, nextPageToken: '' });
        call.end();
        return;
      }
      call.on('cancelled', () => (this.listingCancelled = true));
      let n = 0;
      const entry = (path: string): FileEntry => ({ path, type: FileType.FILE_TYPE_FILE, size: 0, mode: 0o644, mtimeMs: 1, extents: [], id: 0, tree: '' });
      // As fast as the client takes them, for as long as it does not cancel.
      const more = (): void => {
        while (!call.cancelled) {
          const batch = n++;
          const entries = Array.from({ length: 1000 }, (_, i) => entry(batch === endless.badAt && i === 0 ? 'data/../../x' : `data/f${String(batch * 1000 + i).padStart(9, '0')}`));
          if (!call.write({ entries, version: 1, nextPageToken: '' })) return void call.once('drain', more);
        }
      };
      more();
    };
    const readBlob: handleServerStreamingCall<ReadBlobRequest, ReadBlobResponse> = (call) => {
      const { hash, offset, length } = call.request;
      this.readBlobs.push(hash);
      const data = this.blobs.get(hash);
      if (!data) return void call.emit('error', { code: status.NOT_FOUND, details: 'no such blob' });
      call.write({ data: data.subarray(offset, length === 0 ? undefined : offset + length) });
      if (this.script.readBlobExtra) call.write({ data: randomBytes(this.script.readBlobExtra) });
      call.end();
    };
    const putBlob: handleClientStreamingCall<PutBlobRequest, PutBlobResponse> = (call, cb) => {
      let hash = '';
      call.on('data', (m: PutBlobRequest) => (hash ||= m.hash));
      call.on('end', () => {
        this.putBlobs.push(hash);
        cb(null, { hash, stored: true });
      });
    };
    const stat: handleUnaryCall<StatRequest, StatResponse> = unary((r) => ({
      version: 1,
      entry: this.script.stat?.(r.path) ?? { path: r.path, type: FileType.FILE_TYPE_DIRECTORY, size: 0, mode: 0o755, mtimeMs: 1, extents: [], id: 0, tree: '' },
    }));
    const fileAt = (path: string): FileEntry => {
      const e = this.script.listing.find((f) => f.path === path);
      if (!e) throw new Error(`no file ${path} in this script`);
      return e;
    };
    return {
      createVolume: unary((r) => info(r.name)),
      getVolume: unary((r) => info(r.name)),
      listVolumes: nope,
      deleteVolume: nope,
      renameVolume: nope,
      heartbeat: unary(() => ({})),
      listVersions: unary(() => ({ versions: [{ version: 1, createdAtMs: 1, fileCount: 1, totalBytes: 1, root: '', dirCount: 0 }] })),
      listFiles,
      stat: (call, cb) => {
        const fails = this.script.statFails;
        if (!fails) return void stat(call, cb);
        const metadata = new Metadata();
        metadata.set('stowage-code', fails.stowageCode);
        cb({ code: fails.code, details: `refused with stowage-code ${fails.stowageCode}`, metadata });
      },
      getFile: unary((r) => this.script.getFile?.(r.path) ?? { version: 1, entry: fileAt(r.path), getUrls: {} }),
      presignBlobs: unary((r) => {
        const getUrls: Record<string, string> = {};
        for (const b of r.blobs) {
          const url = this.script.getUrl?.(b);
          if (url) getUrls[b] = url;
        }
        return { getUrls };
      }),
      planUpload: unary((r) => {
        const putUrls: Record<string, string> = {};
        for (const b of r.blobs) {
          const url = this.script.putUrl?.(b);
          if (url) putUrls[b] = url;
        }
        return { missingBlobs: r.blobs, putUrls, knownContents: this.script.knownContents ?? {} };
      }),
      putBlob,
      readBlob,
      reportDamagedBlob: unary((r) => {
        this.reported.push(r.hash);
        return { damaged: false, damagedBlobs: [] };
      }),
      commit: (call, cb) => {
        let volume = '';
        call.on('data', (m: CommitRequest) => (volume ||= m.volume));
        call.on('end', () => cb(null, { version: 2, volume: info(volume) }));
      },
      rebuildIndex: nope,
      getVersion: unary(() => {
        if (!this.script.tree) throw new Error('no tree in this script');
        return { version: 1, createdAtMs: 1, fileCount: 3, totalBytes: 30, root: this.script.tree.root, dirCount: 1 };
      }),
      getTreeObjects: (call) => {
        for (const hash of call.request.hashes) {
          const data = this.script.tree?.objects.get(hash);
          if (data) call.write({ hash, data });
        }
        call.end();
      },
      setRetention: nope,
      collectGarbage: nope,
      listDamaged: nope,
      reportMount: unary(() => ({})),
    };
  }
}

/** Every path below `dir` with what it is: a file's mode and hash, a link's target. */
function treeOf(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const rel of readdirSync(dir, { recursive: true }) as string[]) {
    const p = join(dir, rel);
    const st = lstatSync(p);
    out[rel] = st.isSymbolicLink()
      ? `link -> ${readlinkSync(p)}`
      : st.isDirectory()
        ? `dir ${(st.mode & 0o7777).toString(8)}`
        : `file ${(st.mode & 0o7777).toString(8)} ${sha256(readFileSync(p))}`;
  }
  return out;
}

/** Files below `dir` with any of the setuid, setgid and sticky bits. */
function specialBits(dir: string): string[] {
  return Object.entries(treeOf(dir))
    .filter(([, what]) => /^(file|dir) /.test(what) && (Number.parseInt(what.split(' ')[1]!, 8) & SUID_BITS) !== 0)
    .map(([rel]) => rel);
}

describe('a client against a hostile server', () => {
  const hostile = new HostileServer();
  let scratch: string;
  let conn: Connection;
  let vol: Volume;
  let cliEnv: Record<string, string>;
  const name = uniqueName('trust');

  beforeAll(async () => {
    await hostile.start();
    scratch = tempDir('client-trust');
    // No data dir of a local server: file:// URLs must never be used.
    const noDataDir = join(scratch, 'no-data-dir');
    mkdirSync(noDataDir);
    conn = new Connection({ server: hostile.address, token: TOKEN, dataDir: noDataDir });
    vol = await Volume.fromName(name, { connection: conn });
    cliEnv = { STOWAGE_SERVER: hostile.address, STOWAGE_TOKEN: TOKEN, STOWAGE_DATA_DIR: noDataDir };
  });
  afterAll(() => {
    conn?.close();
    hostile.stop();
  });
  beforeEach(() => hostile.reset({ listing: [] }));

  /** A fresh directory inside the scratch tree, for one case. */
  const caseDir = (label: string): string => {
    const d = join(scratch, `${label}-${randomBytes(4).toString('hex')}`);
    mkdirSync(d);
    return d;
  };

  it('refuses a listing whose paths leave the directory asked for, and writes nothing anywhere (SDK and CLI get)', async () => {
    const bad = [
      'data/../../x',
      '../../outside.txt',
      '/etc/cron.d/x',
      'other/x',
      'data/a\0b',
      `data/${'x'.repeat(300)}`,
      `data/${'y/'.repeat(2100)}z`,
    ];
    for (const path of bad) {
      hostile.reset({ listing: [hostile.file('data/ok.txt', Buffer.from('fine\n')), hostile.file(path, Buffer.from('escaped\n'))] });
      const dir = caseDir('listing');
      const target = join(dir, 'a', 'b', 'target');
      const before = treeOf(scratch);
      const err = await expectFailure(() => vol.download('data', target), IntegrityError, 'INTEGRITY', /refused the server's answer to the listing of "data" in volume/, /check that the server address names a stowage server you trust/);
      // The bad path is named, and quoted at most 64 characters long.
      expect(err.message).toContain(JSON.stringify(path.slice(0, 20)).slice(0, -1));
      if (path.length > 64) expect(err.message).not.toContain(path.slice(0, 65));
      expect(treeOf(scratch)).toEqual(before);

      const cli = await runCli(['volume', 'get', name, 'data', target], cliEnv);
      expect(cli.code, cli.stderr).toBe(8);
      expect(cli.stderr).toMatch(/^error: refused the server's answer to the listing of "data" in volume/);
      expect(treeOf(scratch)).toEqual(before);
    }
    // ls and the listing under it are refused alike.
    hostile.reset({ listing: [hostile.file('data/../../x', Buffer.from('x'))] });
    await expectFailure(() => vol.listdir('data'), IntegrityError, 'INTEGRITY', /the listing of "data"/, /"data\/\.\.\/\.\.\/x"/);
    const ls = await runCli(['volume', 'ls', name, 'data'], cliEnv);
    expect(ls.code).toBe(8);
    expect(ls.stdout).toBe('');
  });

  it('never creates or reports a setuid, setgid or sticky file, whatever mode the server sends', async () => {
    const modes: Record<string, [sent: number, shown: number]> = {
      suid: [0o4755, 0o755],
      sgid: [0o2755, 0o755],
      sticky: [0o1777, 0o777],
      typed: [0o104755, 0o755],
      all: [0o7777, 0o777],
    };
    hostile.reset({ listing: Object.entries(modes).map(([f, [mode]]) => hostile.file(`data/${f}`, Buffer.from(`#!/bin/sh\necho ${f}\n`), mode)) });
    hostile.script.stat = (path) => (path === 'data' ? { path, type: FileType.FILE_TYPE_DIRECTORY, size: 0, mode: 0o4777, mtimeMs: 1, extents: [], id: 0, tree: '' } : hostile.script.listing.find((e) => e.path === path)!);

    const sdk = caseDir('modes-sdk');
    await vol.download('data', sdk);
    const cli = caseDir('modes-cli');
    const got = await runCli(['volume', 'get', name, 'data', join(cli, 'data')], cliEnv);
    expect(got.code, got.stderr).toBe(0);
    const one = caseDir('modes-one');
    expect((await runCli(['volume', 'get', name, 'data/suid', join(one, 'suid')], cliEnv)).code).toBe(0);
    for (const dir of [sdk, join(cli, 'data'), one]) {
      expect(specialBits(dir)).toEqual([]);
      for (const f of readdirSync(dir)) expect(lstatSync(join(dir, f)).mode & 0o100, `${dir}/${f} keeps its owner's x bit`).toBe(0o100);
    }
    expect(Object.keys(treeOf(sdk)).sort()).toEqual(Object.keys(modes).sort());

    const listed = Object.fromEntries((await vol.listdir('data')).map((e) => [e.path, e.mode]));
    expect(listed).toEqual(Object.fromEntries(Object.entries(modes).map(([f, [, shown]]) => [`data/${f}`, shown])));
    expect((await vol.stat('data/suid')).mode).toBe(0o755);
    expect((await vol.stat('data')).mode & SUID_BITS).toBe(0);
  });

  it('does not follow a symlink planted inside the target directory out of it', async () => {
    const dir = caseDir('links');
    // `get VOL data DIR` of an existing DIR downloads into DIR/data, as the SDK's download('data', DIR/data).
    const into = join(dir, 'into');
    const target = join(into, 'data');
    const elsewhere = join(dir, 'elsewhere');
    mkdirSync(target, { recursive: true });
    mkdirSync(elsewhere);
    const keys = join(dir, 'authorized_keys');
    writeFileSync(keys, 'ssh-ed25519 AAAA planted\n');
    symlinkSync(elsewhere, join(target, 'sub'));
    symlinkSync(keys, join(target, 'keys'));

    hostile.reset({ listing: [hostile.file('data/sub/evil', Buffer.from('evil\n'))] });
    const before = treeOf(scratch);
    await expectFailure(() => vol.download('data', target), FailedPreconditionError, 'FAILED_PRECONDITION', /"[^"]*data": "sub" in it is a symbolic link/, /remove it, or download somewhere else/);
    const cli = await runCli(['volume', 'get', name, 'data', into], cliEnv);
    expect(cli.code, cli.stderr).toBe(5);
    expect(treeOf(scratch)).toEqual(before);

    // A link where a file lands is replaced by the file; what it pointed to stays as it was.
    hostile.reset({ listing: [hostile.file('data/keys', Buffer.from('ssh-ed25519 AAAA attacker\n'))] });
    await vol.download('data', target);
    expect(lstatSync(join(target, 'keys')).isFile()).toBe(true);
    expect(readFileSync(join(target, 'keys'), 'utf8')).toBe('ssh-ed25519 AAAA attacker\n');
    expect(readFileSync(keys, 'utf8')).toBe('ssh-ed25519 AAAA planted\n');
    expect(readdirSync(elsewhere)).toEqual([]);
  });

  it('refuses file entries whose extents do not add up, lie outside any blob or carry bad hashes, and URL maps naming blobs not asked for', async () => {
    const data = Buffer.from('0123456789');
    const h = sha256(data);
    const good = (): FileEntry => hostile.file('f', data);
    const cases: [string, (e: FileEntry) => GetFileResponse, RegExp][] = [
      ['size over its extents', (e) => ({ version: 1, entry: { ...e, size: 20 }, getUrls: {} }), /file "f" is 20 bytes but its extents hold 10/],
      ['size under its extents', (e) => ({ version: 1, entry: { ...e, size: 5 }, getUrls: {} }), /file "f" is 5 bytes but its extents hold 10/],
      ['a huge offset', (e) => ({ version: 1, entry: { ...e, extents: [{ ...e.extents[0]!, offset: 2 ** 50 }] }, getUrls: {} }), /extent at offset 1125899906842624 of 10 bytes, outside any blob/],
      ['a huge length', (e) => ({ version: 1, entry: { ...e, size: 2 ** 45, extents: [{ ...e.extents[0]!, length: 2 ** 45 }] }, getUrls: {} }), /outside any blob \(blobs hold at most 67108864 bytes\)/],
      ['a hash that is a path', (e) => ({ version: 1, entry: { ...e, extents: [{ ...e.extents[0]!, hash: '../../../etc/passwd' }] }, getUrls: {} }), /extent whose hash "\.\.\/\.\.\/\.\.\/etc\/passwd" is not a SHA-256/],
      ['a blob that is not hex', (e) => ({ version: 1, entry: { ...e, extents: [{ ...e.extents[0]!, blob: h.toUpperCase() }] }, getUrls: {} }), /extent whose blob "[0-9A-F]{64}" is not a SHA-256/],
      ['a URL for a blob not asked for', (e) => ({ version: 1, entry: e, getUrls: { ['f'.repeat(64)]: 'http://127.0.0.1:9/x' } }), /a URL for "f{64}", which was not asked for/],
      ['another file', (e) => ({ version: 1, entry: { ...e, path: 'g' }, getUrls: {} }), /it describes "g" instead of "f"/],
      ['a directory', (e) => ({ version: 1, entry: { ...e, type: FileType.FILE_TYPE_DIRECTORY }, getUrls: {} }), /"f" is not a file/],
    ];
    for (const [what, answer, says] of cases) {
      hostile.reset({ listing: [good()] });
      hostile.script.getFile = () => answer(good());
      const err = await expectFailure(() => vol.readBytes('f'), IntegrityError, 'INTEGRITY', /refused the server's answer to a read of "f" in volume/, says);
      expect(err.message, what).toMatch(says);
      expect(hostile.readBlobs, `${what}: nothing was fetched`).toEqual([]);
    }
    // The same checks guard stat, listings and downloads (CLI).
    hostile.reset({ listing: [{ ...hostile.file('data/f', data), size: 11 }] });
    hostile.script.stat = (path) => (path === 'f' ? { ...good(), path: 'g' } : { path, type: FileType.FILE_TYPE_DIRECTORY, size: 0, mode: 0o755, mtimeMs: 1, extents: [], id: 0, tree: '' });
    await expectFailure(() => vol.stat('f'), IntegrityError, 'INTEGRITY', /the stat of "f"/, /it describes "g" instead of "f"/);
    const dir = caseDir('sizes');
    const before = treeOf(scratch);
    const cli = await runCli(['volume', 'get', name, 'data', join(dir, 'out')], cliEnv);
    expect(cli.code).toBe(8);
    expect(cli.stderr).toMatch(/file "data\/f" is 11 bytes but its extents hold 10/);
    expect(treeOf(scratch)).toEqual(before);
    // A known content must be an extent of exactly that content.
    const small = Buffer.from('small file\n');
    hostile.reset({ listing: [], knownContents: { [sha256(small)]: { blob: h, offset: 0, length: 10, hash: h } } });
    await expectFailure(() => vol.batchUpload().putFile(small, 'small.txt').commit(), IntegrityError, 'INTEGRITY', /an upload plan for volume/, /at an extent of other bytes/);
  });

  it('does not write a file:// PlanUpload URL outside the store: put streams through the server and the planted file stays', async () => {
    const dir = caseDir('put');
    const keys = join(dir, 'home', '.ssh', 'authorized_keys');
    mkdirSync(join(dir, 'home', '.ssh'), { recursive: true });
    writeFileSync(keys, 'ssh-ed25519 AAAA planted\n');
    const local = join(dir, 'upload.bin');
    const data = randomBytes(100_000);
    writeFileSync(local, data);
    hostile.reset({ listing: [], putUrl: () => pathToFileURL(keys).href });
    const before = treeOf(scratch);

    const cli = await runCli(['volume', 'put', name, local, 'upload.bin'], { ...cliEnv, STOWAGE_CHUNK_SIZE: String(64 * 1024) });
    expect(cli.code, cli.stderr).toBe(0);
    expect(readFileSync(keys, 'utf8')).toBe('ssh-ed25519 AAAA planted\n');
    expect(hostile.putBlobs.sort()).toEqual([sha256(data.subarray(0, 65536)), sha256(data.subarray(65536))].sort());
    expect(treeOf(scratch)).toEqual(before);

    hostile.reset({ listing: [], putUrl: () => pathToFileURL(keys).href });
    await vol.batchUpload().putFile(randomBytes(2 * 1024 * 1024), 'big.bin').commit();
    expect(hostile.putBlobs).toHaveLength(1);
    expect(readFileSync(keys, 'utf8')).toBe('ssh-ed25519 AAAA planted\n');
    expect(treeOf(scratch)).toEqual(before);
  });

  it('accepts a file:// URL only for the blob\'s own incoming file (writes) or chunk file (reads) in the known local store, symlinks resolved', async () => {
    const dir = caseDir('store');
    const dataDir = join(dir, 'data-dir');
    mkdirSync(join(dataDir, 'store', 'chunks'), { recursive: true });
    writeFileSync(join(dataDir, 'token'), `${TOKEN}\n`);
    const ssh = join(dir, 'home', '.ssh');
    mkdirSync(ssh, { recursive: true });
    const keys = join(ssh, 'authorized_keys');
    writeFileSync(keys, 'ssh-ed25519 AAAA planted\n');
    const local = new Connection({ server: hostile.address, token: TOKEN, dataDir });
    try {
      const v = await Volume.fromName(name, { connection: local });
      const chunk = (hash: string) => join(dataDir, 'store', 'chunks', hash.slice(0, 2), hash);
      // A client writes a new blob under incoming/ (the server checks it before it becomes the chunk's file).
      const incoming = (hash: string) => join(dataDir, 'store', 'incoming', hash.slice(0, 2), hash);
      const put = async (url: (hash: string) => string): Promise<{ hash: string; streamed: boolean }> => {
        const data = randomBytes(2 * 1024 * 1024);
        const hash = sha256(data);
        hostile.reset({ listing: [], putUrl: (b) => url(b) });
        await v.batchUpload().putFile(data, 'big.bin').commit();
        return { hash, streamed: hostile.putBlobs.includes(hash) };
      };
      const before = treeOf(join(dir, 'home'));
      // Outside the store, another blob's key, the chunk's own final key (only the server writes there), a path that climbs out, not even a file URL.
      expect((await put(() => pathToFileURL(keys).href)).streamed).toBe(true);
      expect((await put(() => pathToFileURL(incoming('a'.repeat(64))).href)).streamed).toBe(true);
      expect((await put((b) => pathToFileURL(chunk(b)).href)).streamed).toBe(true);
      expect((await put((b) => `${pathToFileURL(join(dataDir, 'store', 'incoming', b.slice(0, 2))).href}/../../../../home/.ssh/authorized_keys`)).streamed).toBe(true);
      expect((await put(() => 'ftp://127.0.0.1/x')).streamed).toBe(true);
      // The right key, but its directory is a link out of the store.
      const data = randomBytes(2 * 1024 * 1024);
      const hash = sha256(data);
      mkdirSync(join(dataDir, 'store', 'incoming'), { recursive: true });
      symlinkSync(ssh, join(dataDir, 'store', 'incoming', hash.slice(0, 2)));
      hostile.reset({ listing: [], putUrl: (b) => pathToFileURL(incoming(b)).href });
      await v.batchUpload().putFile(data, 'linked.bin').commit();
      expect(hostile.putBlobs).toEqual([hash]);
      expect(treeOf(join(dir, 'home'))).toEqual(before);
      unlinkSync(join(dataDir, 'store', 'incoming', hash.slice(0, 2)));
      expect(readFileSync(keys, 'utf8')).toBe('ssh-ed25519 AAAA planted\n');

      // The blob's own incoming file: written by the client itself, not streamed (the same-host fast path).
      const mine = await put((b) => pathToFileURL(incoming(b)).href);
      expect(mine.streamed).toBe(false);
      expect(sha256(readFileSync(incoming(mine.hash)))).toBe(mine.hash);
      // (The real server moves it to the chunk's key at the commit; this one does not, so the test does.)
      mkdirSync(join(dataDir, 'store', 'chunks', mine.hash.slice(0, 2)), { recursive: true });
      renameSync(incoming(mine.hash), chunk(mine.hash));
      // And read back from it, without ReadBlob.
      hostile.blobs.delete(mine.hash);
      const entry: FileEntry = { path: 'mine.bin', type: FileType.FILE_TYPE_FILE, size: 2 * 1024 * 1024, mode: 0o644, mtimeMs: 1, extents: [{ blob: mine.hash, offset: 0, length: 2 * 1024 * 1024, hash: mine.hash }], id: 0, tree: '' };
      hostile.reset({ listing: [entry], getFile: () => ({ version: 1, entry, getUrls: { [mine.hash]: pathToFileURL(chunk(mine.hash)).href } }) });
      expect(sha256(await v.readBytes('mine.bin'))).toBe(mine.hash);
      expect(hostile.readBlobs).toEqual([]);
    } finally {
      local.close();
    }
  });

  it('takes a stowage-code trailer naming an inherited property (toString, constructor) for an unknown code, not a class to construct', async () => {
    for (const stowageCode of ['toString', 'constructor', '__proto__', 'hasOwnProperty']) {
      hostile.reset({ listing: [], statFails: { code: status.NOT_FOUND, stowageCode } });
      // The gRPC status decides: NOT_FOUND, with the server's message.
      const err = await expectFailure(() => vol.stat('f'), NotFoundError, 'NOT_FOUND', new RegExp(`refused with stowage-code ${stowageCode}`));
      expect(err, stowageCode).toBeInstanceOf(StowageError);
      hostile.reset({ listing: [], statFails: { code: status.UNIMPLEMENTED, stowageCode } });
      await expectFailure(() => vol.stat('f'), InternalError, 'INTERNAL');
      // The same for an operation's error inside a batch (dict, queue) and a compute call's error.
      expect(fromOpError({ code: stowageCode, message: 'm' })).toBeInstanceOf(InternalError);
      expect(callError({ code: stowageCode, message: 'm', name: '', stack: '' }, 'c1', 'w1')).toBeInstanceOf(InternalError);
    }
  });

  it('cancels a listing the caller stops reading: a break out of iterdir, or a batch it refuses', async () => {
    hostile.reset({ listing: [], endlessListing: {} });
    for await (const e of vol.iterdir('data')) {
      expect(e.path).toBe('data/f000000000');
      break;
    }
    // Without a cancel the server would go on until the deadline (ListFiles: the 10-minute transfer one).
    await vi.waitFor(() => expect(hostile.listingCancelled).toBe(true), { timeout: 20_000, interval: 50 });

    hostile.reset({ listing: [], endlessListing: { badAt: 2 } });
    await expectFailure(() => vol.listdir('data'), IntegrityError, 'INTEGRITY', /the listing of "data"/, /"data\/\.\.\/\.\.\/x"/);
    await vi.waitFor(() => expect(hostile.listingCancelled).toBe(true), { timeout: 20_000, interval: 50 });
  });

  it('refuses a chunk read that brings more bytes than asked for, through the server or from a URL, without reporting damage', async () => {
    const data = Buffer.from('0123456789');
    const h = sha256(data);
    // Through the server's stream.
    hostile.reset({ listing: [hostile.file('f', data)], readBlobExtra: 100 });
    await expectFailure(
      () => vol.readBytes('f'),
      IntegrityError,
      'INTEGRITY',
      new RegExp(`refused a read of chunk ${h.slice(0, 16)}… \\(10 bytes at offset 0\\) from stowage server at ${hostile.address}: it sent more than the 10 bytes asked for`),
      /check that the server address names a stowage server you trust/,
    );
    expect(hostile.reported).toEqual([]);

    // From a presigned URL: a longer body announced, one that is not (chunked), and one that ignores the range and runs past any blob.
    const answers: Record<string, (res: import('node:http').ServerResponse) => void> = {
      announced: (res) => {
        res.writeHead(206, { 'content-length': '20' });
        res.end(Buffer.concat([data, data]));
      },
      chunked: (res) => {
        res.writeHead(206);
        res.write(data);
        res.end(randomBytes(100));
      },
      endless: (res) => {
        res.writeHead(200);
        const block = randomBytes(1024 * 1024);
        const more = (): void => {
          while (!res.destroyed && res.write(block));
          if (!res.destroyed) res.once('drain', more);
        };
        res.on('close', () => res.removeAllListeners('drain'));
        more();
      },
    };
    const http: HttpServer = createHttpServer((req, res) => answers[req.url!.slice(1)]!(res));
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
    const origin = `http://127.0.0.1:${(http.address() as { port: number }).port}`;
    try {
      for (const [how, says] of [
        ['announced', /it answered \(HTTP 206\) with more than the 10 bytes expected/],
        ['chunked', /it answered \(HTTP 206\) with more than the 10 bytes expected/],
        ['endless', /it answered \(HTTP 200\) with more than the 67108864 bytes expected/],
      ] as const) {
        hostile.reset({ listing: [hostile.file('f', data)] });
        hostile.script.getFile = (path) => ({ version: 1, entry: hostile.script.listing.find((e) => e.path === path)!, getUrls: { [h]: `${origin}/${how}` } });
        // A fresh Volume: its transport has not fallen back to the server's stream in an earlier case.
        const v = await Volume.fromName(name, { connection: conn });
        const err = await expectFailure(() => v.readBytes('f'), IntegrityError, 'INTEGRITY', new RegExp(`from the object store at ${origin}`), says);
        expect(err.message, how).toMatch(/nothing of it was used/);
        expect(hostile.readBlobs, `${how}: not read through the server instead`).toEqual([]);
        expect(hostile.reported).toEqual([]);
      }
    } finally {
      http.closeAllConnections();
      await new Promise((resolve) => http.close(resolve));
    }
  });

  it('does not read a local file a GetFile or PresignBlobs answer names by a file:// URL: the read goes to the server, which does not have it', async () => {
    const dir = caseDir('secret');
    const secretPath = join(dir, 'secret.txt');
    const secret = Buffer.from(`the local secret ${randomBytes(8).toString('hex')}\n`);
    writeFileSync(secretPath, secret);
    const h = sha256(secret);
    // The server does not hold these bytes: only the local file does.
    hostile.blobs.delete(h);
    const entry: FileEntry = { path: 'f', type: FileType.FILE_TYPE_FILE, size: secret.length, mode: 0o644, mtimeMs: 1, extents: [{ blob: h, offset: 0, length: secret.length, hash: h }], id: 0, tree: '' };
    const script = (): Script => ({
      listing: [entry],
      stat: (path) => (path === 'f' ? entry : { path, type: FileType.FILE_TYPE_DIRECTORY, size: 0, mode: 0o755, mtimeMs: 1, extents: [], id: 0, tree: '' }),
      getFile: () => ({ version: 1, entry, getUrls: { [h]: pathToFileURL(secretPath).href } }),
      getUrl: () => pathToFileURL(secretPath).href,
    });

    hostile.reset(script());
    await expect(vol.readBytes('f')).rejects.toThrow(/is missing from the store/);
    expect(hostile.readBlobs).toEqual([h]);

    hostile.reset(script());
    const out = join(dir, 'out');
    await expect(vol.download('f', join(out, 'f'))).rejects.toThrow(/is missing from the store/);
    expect(hostile.readBlobs).toEqual([h]);
    expect(treeOf(dir)).toEqual({ 'secret.txt': `file 644 ${h}`, out: 'dir 755' });

    hostile.reset(script());
    const cli = await runCliBytes(['volume', 'get', name, 'f', '-'], cliEnv);
    expect(cli.code).not.toBe(0);
    expect(cli.stdout.includes(secret)).toBe(false);
    const cliFile = await runCli(['volume', 'get', name, 'f', join(dir, 'cli-copy')], cliEnv);
    expect(cliFile.code).not.toBe(0);
    expect(treeOf(dir)).toEqual({ 'secret.txt': `file 644 ${h}`, out: 'dir 755' });
  });
});

describe('a mount of a hostile server', () => {
  const hostile = new HostileServer();
  let scratch: string;
  let env: Record<string, string>;
  const name = uniqueName('trust-mount');

  beforeAll(async () => {
    await hostile.start();
    scratch = tempDir('client-trust-mount');
    mkdirSync(join(scratch, 'no-data-dir'));
    env = { STOWAGE_SERVER: hostile.address, STOWAGE_TOKEN: TOKEN, STOWAGE_DATA_DIR: join(scratch, 'no-data-dir') };
  });
  afterAll(() => {
    cleanUpMounts();
    hostile.stop();
  });

  const mount = (label: string) =>
    startMountProcess({ volume: name, dir: join(scratch, label), cacheDir: join(scratch, `${label}-cache`), env });

  /** Tree objects for the mount: pages as the real server would store them, or bytes of anyone's making. */
  const objects = new Map<string, Buffer>();
  const page = (p: Page): string => {
    const { hash, bytes } = hashPage(p);
    objects.set(hash, bytes);
    return hash;
  };
  const raw = (body: unknown): string => {
    const bytes = Buffer.from(msgpackEncode(body));
    const hash = sha256(bytes);
    objects.set(hash, bytes);
    return hash;
  };
  const fileItem = (fileName: string, data: Buffer, mode: number, id: number): FileItem => {
    const h = sha256(data);
    hostile.blobs.set(h, data);
    return { kind: 'file', name: fileName, id, size: data.length, mode, mtimeMs: 1, extents: [{ blob: h, offset: 0, length: data.length, hash: h }] };
  };

  it('refuses tree pages that name a path out of the volume, and shows no setuid, setgid or sticky bit', { timeout: 60_000 }, async () => {
    // A root page whose only entry is "..": malformed, so the mount does not start on it.
    const h = Buffer.alloc(32, 7);
    const climbing = raw([1, 0, [['..', 0, 5, 4, 0o644, 1, [[h, 4]]]]]);
    hostile.reset({ listing: [], tree: { root: climbing, objects } });
    const refused = await mount('climb').then(
      (m) => `mounted: ${m.line}`,
      (err: unknown) => String(err),
    );
    expect(refused).toMatch(/exited with 8: .*tree object .*malformed.*invalid name "\.\."/s);

    // A directory whose page names "a/b" or "..": listing it fails with EIO, the rest of the mount reads.
    const badDir = raw([1, 0, [['a/b', 0, 6, 4, 0o644, 1, [[h, 4]]]]]);
    const files = [fileItem('sgid', Buffer.from('y\n'), 0o102755, 3), fileItem('sticky', Buffer.from('x\n'), 0o1777, 4), fileItem('suid', Buffer.from('#!/bin/sh\n'), 0o4755, 5)];
    const dirEntry: Entry = { kind: 'dir', name: 'bad', id: 2, mtimeMs: 1, tree: badDir, totals: { entries: 1, subdirs: 0, files: 1, dirs: 0, bytes: 4 } };
    const root = page({ kind: 'leaf', entries: [dirEntry, ...files] });
    hostile.reset({ listing: [], tree: { root, objects } });
    const m = await mount('modes');
    try {
      // Asynchronous calls only: the mount asks the hostile server, which answers from this process.
      const dir = join(scratch, 'modes');
      const modes: Record<string, number> = {};
      for (const f of await readdir(dir)) if (f !== 'bad') modes[f] = (await lstat(join(dir, f))).mode & 0o7777;
      expect(modes).toEqual({ suid: 0o555, sticky: 0o555, sgid: 0o555 });
      expect(await readFile(join(dir, 'suid'), 'utf8')).toBe('#!/bin/sh\n');
      expect(await readdir(join(dir, 'bad')).then(() => 'listed', (err: NodeJS.ErrnoException) => err.code)).toBe('EIO');
      expect(existsSync(join(scratch, 'a'))).toBe(false);
    } finally {
      await stopMount(m, 'SIGTERM');
    }
  });
});

describe('modes on the real server', () => {
  let stowage: Stowage;
  beforeAll(async () => {
    stowage = await startStowage();
  });
  afterAll(async () => {
    await stowage?.stop();
  });

  it('stores a raw commit of 0o4755, 0o2755 or 0o1777 as its permission bits only', async () => {
    const conn = stowage.connection;
    const vols = conn.volumes;
    const name = uniqueName('modes');
    await conn.unary(vols.createVolume.bind(vols), { name, ephemeral: false, existOk: false });
    const sent: Record<string, number> = { suid: 0o4755, sgid: 0o2755, sticky: 0o1777, bare: 0o4000, typed: 0o104644 };
    await conn.clientStream<CommitRequest, CommitResponse>((cb) => vols.commit(cb), [
      {
        volume: name,
        puts: Object.entries(sent).map(([path, mode]) => ({ path, type: FileType.FILE_TYPE_FILE, size: 0, mode, mtimeMs: 1, extents: [], id: 0, tree: '' })),
        removes: [],
        copies: [],
        force: false,
        commitId: '',
      },
    ]);
    const stored: Record<string, number> = {};
    for (const path of Object.keys(sent)) stored[path] = (await conn.unary(vols.stat.bind(vols), { volume: name, path, version: 0 })).entry!.mode;
    expect(stored).toEqual({ suid: 0o755, sgid: 0o755, sticky: 0o777, bare: 0o644, typed: 0o644 });
    const dir = join(tempDir('modes'), 'copy');
    await (await Volume.fromName(name, { connection: conn })).download('/', dir);
    expect(specialBits(dir)).toEqual([]);
  });
});
