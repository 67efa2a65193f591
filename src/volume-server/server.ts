/**
 * `stowage serve`: one gRPC server hosting the services on one port. The
 * embedded default keeps chunks and manifests under <data-dir>/store and the
 * index under <data-dir>/index; with an S3 bucket, chunks and manifests go there.
 */
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { loadOrCreateToken } from '../common/auth.js';
import { DEFAULT_DATA_DIR, DEFAULT_HOST, DEFAULT_PORT } from '../common/config.js';
import { UnavailableError } from '../common/errors.js';
import { createLogger, type Logger } from '../common/logger.js';
import { VolumeServiceService } from '../gen/stowage/v1/volume.js';
import { VolumeCatalog, type CatalogOptions } from './catalog.js';
import { volumeService } from './grpc-service.js';
import { LmdbIndex } from './index/lmdb.js';
import type { BlobStore } from './store/interface.js';
import { LocalBlobStore } from './store/local.js';
import { S3BlobStore, type S3StoreOptions } from './store/s3.js';

export const GRPC_MESSAGE_LIMIT = 256 * 1024 * 1024;

export interface ServeOptions {
  dataDir?: string;
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  s3?: S3StoreOptions;
  /** A store to use as it is (tests wrap stores to count or inject faults). */
  store?: BlobStore;
  catalog?: CatalogOptions;
  log?: Logger;
}

export interface RunningServer {
  address: string;
  port: number;
  token: string;
  tokenPath: string;
  tokenCreated: boolean;
  dataDir: string;
  store: BlobStore;
  catalog: VolumeCatalog;
  stop(): Promise<void>;
}

export async function startServer(opts: ServeOptions = {}): Promise<RunningServer> {
  const log = opts.log ?? createLogger('stowage');
  const dataDir = resolve(opts.dataDir ?? DEFAULT_DATA_DIR);
  mkdirSync(dataDir, { recursive: true });
  const { token, path: tokenPath, created } = loadOrCreateToken(dataDir);
  const store = opts.store ?? (opts.s3 ? new S3BlobStore(opts.s3) : new LocalBlobStore(join(dataDir, 'store')));
  const index = new LmdbIndex(join(dataDir, 'index'));
  const catalog = new VolumeCatalog(store, index, log, opts.catalog);
  await catalog.init();

  const server = new Server({
    'grpc.max_receive_message_length': GRPC_MESSAGE_LIMIT,
    'grpc.max_send_message_length': GRPC_MESSAGE_LIMIT,
  });
  server.addService(VolumeServiceService, volumeService(catalog, token, log));
  const host = opts.host ?? DEFAULT_HOST;
  const port = await new Promise<number>((res, rej) =>
    server.bindAsync(`${host}:${opts.port ?? DEFAULT_PORT}`, ServerCredentials.createInsecure(), (err, p) =>
      err
        ? rej(new UnavailableError(`cannot listen on ${host}:${opts.port ?? DEFAULT_PORT}: ${err.message} (pick another with --port)`))
        : res(p),
    ),
  );
  const reaper = setInterval(() => {
    catalog.reapEphemeral().catch((err: unknown) => log.warn({ err: (err as Error).message }, 'ephemeral reaper failed'));
  }, 30_000);
  reaper.unref();

  return {
    address: `${host}:${port}`,
    port,
    token,
    tokenPath,
    tokenCreated: created,
    dataDir,
    store,
    catalog,
    async stop() {
      clearInterval(reaper);
      await catalog.close();
      await new Promise<void>((res) => server.tryShutdown(() => res()));
      await index.close();
    },
  };
}
