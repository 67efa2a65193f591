/** BlobStore on any S3 API (AWS, MinIO, R2; s3rver in tests). */
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { NotFoundError, StowageError, UnavailableError, messageOf } from '../../common/errors.js';
import type { BlobStore, ByteRange, StoredObject } from './interface.js';

export interface S3StoreOptions {
  bucket: string;
  /** Key prefix inside the bucket ('' for none). */
  prefix?: string;
  /** Custom endpoint (MinIO, R2, s3rver); AWS when absent. */
  endpoint?: string;
  region?: string;
  /** Path-style addressing; defaults to true when an endpoint is given. */
  forcePathStyle?: boolean;
  /** Explicit credentials; otherwise the standard AWS chain (env, profile, role). */
  credentials?: { accessKeyId: string; secretAccessKey: string };
}

export class S3BlobStore implements BlobStore {
  readonly description: string;
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly prefix: string;

  constructor(opts: S3StoreOptions) {
    this.bucket = opts.bucket;
    this.prefix = opts.prefix ? `${opts.prefix.replace(/\/+$/, '')}/` : '';
    const where = opts.endpoint ?? `AWS ${opts.region ?? process.env.AWS_REGION ?? 'us-east-1'}`;
    this.description = `s3://${this.bucket}/${this.prefix} at ${where}`;
    const config: S3ClientConfig = {
      region: opts.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1',
      endpoint: opts.endpoint,
      forcePathStyle: opts.forcePathStyle ?? opts.endpoint !== undefined,
      credentials: opts.credentials,
      maxAttempts: 3,
      // Bounded timeouts so that an unreachable S3 turns into UNAVAILABLE in
      // seconds instead of hanging every caller.
      requestHandler: new NodeHttpHandler({
        connectionTimeout: 3000,
        requestTimeout: 120_000,
        httpAgent: new HttpAgent({ keepAlive: true, maxSockets: 64 }),
        httpsAgent: new HttpsAgent({ keepAlive: true, maxSockets: 64 }),
      }),
    };
    this.client = new S3Client(config);
  }

  private key(key: string): string {
    return this.prefix + key;
  }

  async put(key: string, data: Uint8Array): Promise<void> {
    await this.call(`write ${key}`, () =>
      this.client.send(
        new PutObjectCommand({ Bucket: this.bucket, Key: this.key(key), Body: data, ContentLength: data.length }),
      ),
    );
  }

  async putIfAbsent(key: string, data: Uint8Array): Promise<boolean> {
    try {
      await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: this.key(key), Body: data, ContentLength: data.length, IfNoneMatch: '*' }));
      return true;
    } catch (err) {
      // 412: the key exists; 409: a concurrent conditional write to it is under way (it may land).
      const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
      if (status === 412 || status === 409) return false;
      throw this.translate(`write ${key} if absent`, err);
    }
  }

  async get(key: string, range?: ByteRange): Promise<Buffer> {
    // Only closed ranges: some S3 servers get suffix ranges wrong.
    let Range: string | undefined;
    if (range) {
      if (range.length === 0) {
        // No bytes, but the object must be there.
        if ((await this.head(key)) === undefined) throw new NotFoundError(`object ${key} not found in ${this.description}`);
        return Buffer.alloc(0);
      }
      Range =
        range.length === undefined
          ? `bytes=${range.offset}-`
          : `bytes=${range.offset}-${range.offset + range.length - 1}`;
    }
    try {
      return await this.call(`read ${key}`, async () => {
        const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.key(key), Range }));
        const bytes = await out.Body!.transformToByteArray();
        return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      });
    } catch (err) {
      // A range that starts at the end of the object reads no bytes, as a file would (S3 answers 416;
      // some servers drop the connection): the object's size tells.
      if (range && !(err instanceof NotFoundError) && range.offset >= ((await this.head(key).catch(() => undefined)) ?? Infinity)) {
        return Buffer.alloc(0);
      }
      throw err;
    }
  }

  async head(key: string): Promise<number | undefined> {
    try {
      const out = await this.call(`stat ${key}`, () =>
        this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.key(key) })),
      );
      return out.ContentLength ?? 0;
    } catch (err) {
      if (err instanceof NotFoundError) return undefined;
      throw err;
    }
  }

  async delete(key: string): Promise<void> {
    await this.call(`delete ${key}`, () =>
      this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.key(key) })),
    );
  }

  async *list(prefix: string): AsyncIterable<string> {
    for await (const o of this.scan(prefix)) yield o.key;
  }

  async *scan(prefix: string): AsyncIterable<StoredObject> {
    let token: string | undefined;
    do {
      const out = await this.call(`list ${prefix}`, () =>
        this.client.send(
          new ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: this.key(prefix),
            ContinuationToken: token,
          }),
        ),
      );
      for (const obj of out.Contents ?? []) {
        if (obj.Key) yield { key: obj.Key.slice(this.prefix.length), size: obj.Size ?? 0, modifiedMs: obj.LastModified?.getTime() ?? Date.now() };
      }
      token = out.IsTruncated ? out.NextContinuationToken : undefined;
    } while (token);
  }

  presignPut(key: string, expiresInSeconds: number): Promise<string> {
    return getSignedUrl(this.client, new PutObjectCommand({ Bucket: this.bucket, Key: this.key(key) }), {
      expiresIn: expiresInSeconds,
    });
  }

  presignGet(key: string, expiresInSeconds: number): Promise<string> {
    return getSignedUrl(this.client, new GetObjectCommand({ Bucket: this.bucket, Key: this.key(key) }), {
      expiresIn: expiresInSeconds,
    });
  }

  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw this.translate(what, err);
    }
  }

  private translate(what: string, err: unknown): StowageError {
    const e = err as { name?: string; $metadata?: { httpStatusCode?: number }; code?: string };
    const httpStatus = e.$metadata?.httpStatusCode;
    if (e.name === 'NoSuchKey' || e.name === 'NotFound' || httpStatus === 404) {
      return new NotFoundError(`object ${what.split(' ').pop()} not found in ${this.description}`);
    }
    if (e.name === 'NoSuchBucket') {
      return new UnavailableError(
        `bucket ${this.bucket} does not exist at ${this.description} (create it, or pass another --s3-bucket)`,
      );
    }
    if (httpStatus === 403 || e.name === 'AccessDenied' || e.name === 'InvalidAccessKeyId') {
      return new UnavailableError(`access denied by ${this.description} on ${what}: check the AWS credentials`);
    }
    return new UnavailableError(`S3 unreachable: cannot ${what} at ${this.description}: ${e.name ?? ''} ${messageOf(err)}`.trim(), {
      cause: err,
    });
  }
}
