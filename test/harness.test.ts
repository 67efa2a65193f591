import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Volume } from '../src/client/index.js';
import { startS3rver, startStowage, uniqueName, type S3Server, type Stowage } from './support/processes.js';

describe('test harness', () => {
  let s3: S3Server;
  let stowage: Stowage;
  beforeAll(async () => {
    s3 = await startS3rver();
    stowage = await startStowage({ s3: s3.storeOptions() });
  });
  afterAll(async () => {
    await stowage?.stop();
    await s3?.stop();
  });

  it('counts S3 requests on the server side', async () => {
    await s3.resetStats();
    const vol = await Volume.fromName(uniqueName(), { createIfMissing: true, connection: stowage.connection });
    await vol.batchUpload().putFile(Buffer.from('x'.repeat(5000)), 'a.txt').commit();
    const stats = await s3.stats();
    expect(stats['PUT chunks']).toBe(1);
    expect(stats['PUT versions']).toBe(1);
    expect(stats['PUT trees']).toBe(1);
  });
});
