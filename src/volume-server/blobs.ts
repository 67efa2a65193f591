/**
 * Blobs: what an upload must send, the bytes the server moves itself, and
 * damage.
 *
 * Only bytes checked against their hash are ever stored under a blob's key:
 * PutBlob hashes what it receives; a client on the server's host that writes
 * a blob itself (a file:// URL of the local store) writes it under
 * `incoming/`, and the first commit that uses it hashes it before moving it
 * to its key (a mismatch is deleted and fails that commit); presigned S3
 * uploads carry the SHA-256 that S3 checks.
 *
 * Planning an upload leases every blob it names (sent or found stored) for
 * the grace period, so that garbage collection leaves them alone until the
 * commit that uses them has landed.
 */
import { webcrypto } from 'node:crypto';
import pLimit from 'p-limit';
import { FailedPreconditionError, IntegrityError, NotFoundError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { checkHash } from '../common/validate.js';
import type { Extent } from '../gen/stowage/v1/volume.js';
import type { MetadataIndex } from './index/types.js';
import { blobKey, incomingKey, type BlobStore } from './store/interface.js';

export interface BlobOptions {
  /** Hand out presigned URLs when the store can make them (default true). */
  presign?: boolean;
  presignExpirySeconds?: number;
  /** How long a planned blob is leased against garbage collection. */
  leaseMs: number;
}

export interface UploadPlan {
  missingBlobs: string[];
  putUrls: Record<string, string>;
  knownContents: Record<string, Extent>;
}

/** SHA-256 off the main thread (WebCrypto runs in the thread pool), as hex. */
export async function sha256Async(data: Uint8Array): Promise<string> {
  return Buffer.from(await webcrypto.subtle.digest('SHA-256', data)).toString('hex');
}

export class BlobKeeper {
  private readonly presign: boolean;
  private readonly presignExpiry: number;
  private readonly storeLimit = pLimit(32);
  private readonly hashLimit = pLimit(4);

  constructor(
    readonly store: BlobStore,
    private readonly index: MetadataIndex,
    private readonly log: Logger,
    private readonly opts: BlobOptions,
  ) {
    this.presign = opts.presign ?? true;
    this.presignExpiry = opts.presignExpirySeconds ?? 3600;
  }

  /** Whether a caller may be given presigned URLs (`sameHost`: it called from this host). */
  canPresign(sameHost: boolean): boolean {
    return this.presign && (this.store.presignScope !== 'local-host' || sameHost);
  }

  async presignBlobs(blobs: string[]): Promise<Record<string, string>> {
    const urls: Record<string, string> = {};
    const presignGet = this.store.presignGet?.bind(this.store);
    if (!this.presign || !presignGet) return urls;
    for (const b of new Set(blobs)) urls[b] = await presignGet(blobKey(checkHash(b)), this.presignExpiry);
    return urls;
  }

  /** Reads a blob or a range of it, as stored (the client verifies hashes). */
  async readBlob(hash: string, offset: number, length: number): Promise<Buffer> {
    checkHash(hash);
    return this.store.get(blobKey(hash), { offset, length: length === 0 ? undefined : length });
  }

  async planUpload(blobs: string[], contents: string[], presign: boolean): Promise<UploadPlan> {
    const unique = [...new Set(blobs.map(checkHash))];
    // Leased before they are looked for: a collection that has not deleted one by now keeps it.
    const until = { expiresAtMs: Date.now() + this.opts.leaseMs };
    await this.index.putPlanned(unique, until);
    const present = await Promise.all(unique.map((b) => this.present(b)));
    const missingBlobs = unique.filter((_, i) => !present[i]);
    const putUrls: Record<string, string> = {};
    const presignPut = this.store.presignPut?.bind(this.store);
    if (presign && this.presign && presignPut) {
      // A client on this host writes beside the store's keys; the commit checks and moves (see above).
      const key = this.store.presignScope === 'local-host' ? incomingKey : blobKey;
      for (const b of missingBlobs) putUrls[b] = await presignPut(key(b), this.presignExpiry);
    }
    const knownContents: Record<string, Extent> = {};
    for (const c of new Set(contents.map(checkHash))) {
      const hit = this.index.findContent(c);
      if (hit) knownContents[c] = hit;
    }
    const contentBlobs = Object.values(knownContents).map((x) => x.blob);
    if (contentBlobs.length) await this.index.putPlanned(contentBlobs, until);
    return { missingBlobs, putUrls, knownContents };
  }

  /** Stores a blob sent through the server, after checking its hash. */
  async putBlob(hash: string, data: Buffer): Promise<boolean> {
    checkHash(hash);
    const actual = await sha256Async(data);
    if (actual !== hash) {
      throw new IntegrityError(`blob upload rejected: its bytes hash to ${actual}, not ${hash}`);
    }
    if (await this.present(hash)) return false;
    await this.store.put(blobKey(hash), data);
    await this.index.putPlanned([hash], { expiresAtMs: Date.now() + this.opts.leaseMs });
    return true;
  }

  /**
   * A client found bytes of this blob that do not match their hash, or none.
   * Re-read and check it; when it is damaged or gone, mark it so that the
   * next upload of the same data stores a good copy. With the file it was
   * found in, check every blob of that file likewise, so that one upload of
   * the file repairs them all. Returns the damaged blobs.
   */
  async reportDamaged(hash: string, fileBlobs: string[] = []): Promise<string[]> {
    checkHash(hash);
    const blobs = [...new Set([hash, ...fileBlobs.map(checkHash)])];
    const damaged: string[] = [];
    await Promise.all(
      blobs.map((b) =>
        this.hashLimit(async () => {
          if (await this.isDamaged(b)) damaged.push(b);
        }),
      ),
    );
    for (const b of damaged) {
      if (!this.index.isDamaged(b)) {
        await this.index.markDamaged(b);
        this.log.warn({ blob: b }, 'blob in the store is missing or does not match its hash: marked damaged, the next upload of it repairs it');
      }
    }
    return damaged.sort();
  }

  /**
   * Checks that every blob a commit references is stored, intact as far as
   * the server knows, and long enough (`need`: blob → end of its furthest
   * extent); moves blobs written by same-host clients into place after
   * checking them. Returns sizes read from the store.
   */
  async checkForCommit(need: Map<string, number>): Promise<Map<string, number>> {
    const sizes = new Map<string, number>();
    const missing: string[] = [];
    const damaged: string[] = [];
    const forged: string[] = [];
    await Promise.all(
      [...need].map(([blob, end]) =>
        this.storeLimit(async () => {
          if (this.index.isDamaged(blob)) {
            // A good copy may have arrived: sent through the server (replacing the bad one), or written under incoming/.
            const adopted = await this.adopt(blob);
            if (adopted === 'forged') return void forged.push(blob);
            if (adopted === undefined && (await this.isDamaged(blob))) return void damaged.push(blob);
            await this.index.clearDamaged(blob);
          }
          if ((this.index.blobSize(blob) ?? -1) >= end) return;
          let size = await this.store.head(blobKey(blob));
          if (size === undefined) {
            const adopted = await this.adopt(blob);
            if (adopted === 'forged') return void forged.push(blob);
            size = adopted;
          }
          if (size === undefined || size < end) missing.push(blob);
          else sizes.set(blob, size);
        }),
      ),
    );
    if (forged.length) {
      throw new IntegrityError(
        `commit refused: ${forged.length} chunk(s) written into the local store do not match their hash (first: ${forged[0]}); they were deleted: upload them again`,
      );
    }
    if (missing.length) {
      throw new FailedPreconditionError(
        `commit refused: ${missing.length} chunk(s) are not in the store (first: ${missing[0]}); upload them before committing`,
      );
    }
    if (damaged.length) {
      throw new FailedPreconditionError(
        `commit refused: ${damaged.length} chunk(s) in the store are damaged (first: ${damaged[0]}); upload them again before committing`,
      );
    }
    return sizes;
  }

  /** Whether the blob is stored intact, as far as can be known without reading it. */
  private async present(hash: string): Promise<boolean> {
    if (this.index.isDamaged(hash)) return false;
    if (this.index.blobSize(hash) !== undefined) return true;
    return (await this.storeLimit(() => this.store.head(blobKey(hash)))) !== undefined;
  }

  /** Reads the stored blob whole and checks it. */
  private async isDamaged(hash: string): Promise<boolean> {
    try {
      return (await sha256Async(await this.store.get(blobKey(hash)))) !== hash;
    } catch (err) {
      if (err instanceof NotFoundError) return true;
      throw err;
    }
  }

  /** A blob a same-host client wrote under incoming/: checked and moved to its key (its size), or deleted. */
  private async adopt(hash: string): Promise<number | 'forged' | undefined> {
    let data: Buffer;
    try {
      data = await this.store.get(incomingKey(hash));
    } catch (err) {
      if (err instanceof NotFoundError) return undefined;
      throw err;
    }
    const actual = await this.hashLimit(() => sha256Async(data));
    if (actual !== hash) {
      await this.store.delete(incomingKey(hash));
      this.log.warn({ blob: hash, actual }, 'a blob written into the local store by a client does not match its hash: deleted it');
      return 'forged';
    }
    try {
      if (this.store.move) await this.store.move(incomingKey(hash), blobKey(hash));
      else {
        await this.store.put(blobKey(hash), data);
        await this.store.delete(incomingKey(hash));
      }
    } catch (err) {
      // Another commit moved the same blob first.
      if (!(err instanceof NotFoundError) || (await this.store.head(blobKey(hash))) === undefined) throw err;
    }
    return data.length;
  }
}
