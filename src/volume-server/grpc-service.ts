/** The VolumeService gRPC handlers: decode, check the token, call the catalogue, encode errors. */
import { InvalidArgumentError } from '../common/errors.js';
import { authCheck, clientStream, fromSameHost, serverStream, unary } from '../common/grpc-server.js';
import type { Authenticator } from '../common/tokens.js';
import type { Logger } from '../common/logger.js';
import { quote } from '../common/quote.js';
import { MAX_BLOB_BYTES } from '../common/validate.js';
import type { CommitRequest, FileEntry, VolumeServiceServer } from '../gen/stowage/v1/volume.js';
import type { VolumeCatalog } from './catalog.js';
import { collectGarbage } from './gc.js';
import type { MountReports } from './mount-reports.js';

/** Largest blob accepted through PutBlob (a chunk, or a pack of small files); clients refuse longer extents. */
export { MAX_BLOB_BYTES };
const FRAME = 1024 * 1024;

export function volumeService(catalog: VolumeCatalog, mounts: MountReports, token: Authenticator | string, log: Logger): VolumeServiceServer {
  const check = authCheck(token);
  return {
    createVolume: unary(check, log, (r) => catalog.createVolume(r.name, r.ephemeral, r.existOk)),
    getVolume: unary(check, log, (r) => catalog.getVolume(r.name)),
    listVolumes: unary(check, log, async (r) => ({ volumes: await catalog.listVolumes(r.includeEphemeral) })),
    deleteVolume: unary(check, log, async (r) => {
      await catalog.deleteVolume(r.name);
      return {};
    }),
    renameVolume: unary(check, log, (r) => catalog.renameVolume(r.name, r.newName)),
    heartbeat: unary(check, log, async (r) => {
      await catalog.heartbeat(r.name);
      return {};
    }),
    listVersions: unary(check, log, async (r) => ({ versions: await catalog.listVersions(r.name) })),
    getVersion: unary(check, log, (r) => catalog.getVersion(r.volume, r.version)),
    listFiles: serverStream(check, log, async (r, write) => {
      for await (const b of catalog.listFiles(r.volume, r.path, r.recursive, r.version, r.pageSize, r.pageToken, !r.withoutExtents)) {
        await write({ entries: b.entries, version: b.version, nextPageToken: b.nextPageToken ?? '' });
      }
    }),
    stat: unary(check, log, (r) => catalog.stat(r.volume, r.path, r.version)),
    getFile: unary(check, log, (r, call) =>
      catalog.getFile(r.volume, r.path, r.version, r.presign && catalog.blobs.canPresign(fromSameHost(call))),
    ),
    getTreeObjects: serverStream(check, log, async (r, write) => {
      for await (const o of catalog.treeObjects(r.volume, r.hashes)) await write(o);
    }),
    presignBlobs: unary(check, log, async (r, call) => ({
      getUrls: catalog.blobs.canPresign(fromSameHost(call)) ? await catalog.blobs.presignBlobs(r.blobs) : {},
    })),
    planUpload: unary(check, log, (r, call) =>
      catalog.planUpload(r.volume, r.blobs, r.contents, r.presign && catalog.blobs.canPresign(fromSameHost(call))),
    ),
    putBlob: clientStream(check, log, async (messages) => {
      let hash = '';
      let size = 0;
      const parts: Buffer[] = [];
      let received = 0;
      for await (const m of messages) {
        if (!hash) {
          hash = m.hash;
          size = m.size;
          if (size > MAX_BLOB_BYTES) {
            throw new InvalidArgumentError(`blob of ${size} bytes is over the limit of ${MAX_BLOB_BYTES}`);
          }
        }
        if (m.data.length) {
          received += m.data.length;
          if (received > size) throw new InvalidArgumentError(`blob ${quote(hash)}: more bytes than the announced ${size}`);
          parts.push(m.data);
        }
      }
      if (!hash) throw new InvalidArgumentError('PutBlob stream had no header');
      if (received !== size) {
        throw new InvalidArgumentError(`blob ${quote(hash)}: stream ended after ${received} of ${size} bytes`);
      }
      const stored = await catalog.blobs.putBlob(hash, Buffer.concat(parts, size));
      return { hash, stored };
    }),
    readBlob: serverStream(check, log, async (r, write) => {
      const data = await catalog.blobs.readBlob(r.hash, r.offset, r.length);
      for (let i = 0; i < data.length; i += FRAME) await write({ data: data.subarray(i, i + FRAME) });
      if (data.length === 0) await write({ data: Buffer.alloc(0) });
    }),
    reportDamagedBlob: unary(check, log, async (r) => {
      const damagedBlobs = await catalog.reportDamaged(r.hash, r.volume ? { volume: r.volume, path: r.path, version: r.version } : undefined);
      return { damaged: damagedBlobs.includes(r.hash), damagedBlobs };
    }),
    commit: clientStream(check, log, async (messages) => {
      const it = messages[Symbol.asyncIterator]();
      const first = await it.next();
      if (first.done) throw new InvalidArgumentError('Commit stream had no header');
      const head: CommitRequest = first.value;
      async function* puts(): AsyncGenerator<FileEntry[]> {
        yield head.puts;
        for (let m = await it.next(); !m.done; m = await it.next()) {
          if (m.value.volume || m.value.removes.length || m.value.copies.length) {
            throw new InvalidArgumentError('Commit stream: only the first message names the volume and carries removals and copies');
          }
          yield m.value.puts;
        }
      }
      return catalog.commit({ volume: head.volume, removes: head.removes, copies: head.copies, force: head.force, commitId: head.commitId }, puts());
    }),
    rebuildIndex: unary(check, log, async () => {
      const r = await catalog.rebuildIndex();
      return { volumes: r.volumes, versions: r.versions, converted: r.converted, skipped: r.skipped.map(damagedObject) };
    }),
    listDamaged: unary(check, log, () => ({ objects: catalog.listDamaged().map(damagedObject) })),
    reportMount: unary(check, log, (r) => {
      mounts.report(r);
      return {};
    }),
    setRetention: unary(check, log, (r) => catalog.setRetention(r.name, r.keepLast, r.keepWithinMs)),
    collectGarbage: unary(check, log, (r) =>
      collectGarbage(catalog, { volume: r.volume || undefined, graceMs: r.graceMs, dryRun: r.dryRun }),
    ),
  };
}

function damagedObject(d: { kind: string; key: string; volume?: string; version?: number; reason: string; foundAtMs: number }) {
  return { kind: d.kind, key: d.key, volume: d.volume ?? '', version: d.version ?? 0, reason: d.reason, foundAtMs: d.foundAtMs };
}
