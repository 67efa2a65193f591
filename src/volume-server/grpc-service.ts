/** The VolumeService gRPC handlers: decode, check the token, call the catalogue, encode errors. */
import { InvalidArgumentError } from '../common/errors.js';
import { authCheck, clientStream, fromSameHost, serverStream, unary } from '../common/grpc-server.js';
import type { Logger } from '../common/logger.js';
import { quote } from '../common/quote.js';
import type { VolumeServiceServer } from '../gen/stowage/v1/volume.js';
import type { VolumeCatalog } from './catalog.js';

/** Largest blob accepted through PutBlob (a chunk, or a pack of small files). */
export const MAX_BLOB_BYTES = 64 * 1024 * 1024;
const FRAME = 1024 * 1024;
const LIST_BATCH = 1000;

export function volumeService(catalog: VolumeCatalog, token: string, log: Logger): VolumeServiceServer {
  const check = authCheck(token);
  return {
    createVolume: unary(check, log, (r) => catalog.createVolume(r.name, r.ephemeral, r.existOk)),
    getVolume: unary(check, log, (r) => catalog.getVolume(r.name)),
    listVolumes: unary(check, log, (r) => ({ volumes: catalog.listVolumes(r.includeEphemeral) })),
    deleteVolume: unary(check, log, async (r) => {
      await catalog.deleteVolume(r.name);
      return {};
    }),
    renameVolume: unary(check, log, (r) => catalog.renameVolume(r.name, r.newName)),
    heartbeat: unary(check, log, (r) => {
      catalog.heartbeat(r.name);
      return {};
    }),
    listVersions: unary(check, log, (r) => ({ versions: catalog.listVersions(r.name) })),
    listFiles: serverStream(check, log, async (r, write) => {
      const { version, entries } = catalog.listFiles(r.volume, r.path, r.recursive, r.version);
      if (entries.length === 0) await write({ entries: [], version });
      for (let i = 0; i < entries.length; i += LIST_BATCH) {
        await write({ entries: entries.slice(i, i + LIST_BATCH), version });
      }
    }),
    stat: unary(check, log, (r) => catalog.stat(r.volume, r.path, r.version)),
    getFile: unary(check, log, (r, call) =>
      catalog.getFile(r.volume, r.path, r.version, r.presign && catalog.canPresign(fromSameHost(call))),
    ),
    presignBlobs: unary(check, log, async (r, call) => ({
      getUrls: catalog.canPresign(fromSameHost(call)) ? await catalog.presignBlobs(r.blobs) : {},
    })),
    planUpload: unary(check, log, (r, call) =>
      catalog.planUpload(r.volume, r.blobs, r.contents, r.presign && catalog.canPresign(fromSameHost(call))),
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
      const stored = await catalog.putBlob(hash, Buffer.concat(parts, size));
      return { hash, stored };
    }),
    readBlob: serverStream(check, log, async (r, write) => {
      const data = await catalog.readBlob(r.hash, r.offset, r.length);
      for (let i = 0; i < data.length; i += FRAME) await write({ data: data.subarray(i, i + FRAME) });
      if (data.length === 0) await write({ data: Buffer.alloc(0) });
    }),
    reportDamagedBlob: unary(check, log, async (r) => ({ damaged: await catalog.reportDamaged(r.hash) })),
    commit: unary(check, log, (r) =>
      catalog.commit({ volume: r.volume, puts: r.puts, removes: r.removes, copies: r.copies, force: r.force }),
    ),
    rebuildIndex: unary(check, log, () => catalog.rebuildIndex()),
  };
}
