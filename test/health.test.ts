/**
 * The standard grpc.health.v1 health service on the gRPC port (issue 15),
 * asked by a plain grpc-js client WITHOUT a token, as Kubernetes probes and
 * load balancers ask: SERVING for the server ("") and each hosted service,
 * NOT_SERVING for a service left out with `only`, NOT_FOUND for a name it
 * does not know, and NOT_SERVING to watchers as soon as stop() begins. The
 * exemption from the token is only for the health service.
 */
import { Client, credentials, status, type ServiceError } from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GRPC_SERVICE_NAMES, SERVICE_NAMES } from '../src/server/server.js';
import { startStowage, type Stowage } from './support/processes.js';
import { eventually } from './support/state-servers.js';

type HealthStatus = { status: string };

/** A health client of `address`, with no token. */
function healthClient(address: string) {
  const client = new Client(address, credentials.createInsecure());
  const check = healthService.Check!;
  const watch = healthService.Watch!;
  return {
    check: (service: string) =>
      new Promise<string>((resolve, reject) =>
        client.makeUnaryRequest(
          check.path,
          check.requestSerialize,
          check.responseDeserialize as (b: Buffer) => HealthStatus,
          { service },
          (err, res) => (err ? reject(err) : resolve(res!.status)),
        ),
      ),
    /** Every status the server sends for `service`, as they come. */
    watch(service: string): { seen: string[]; cancel(): void } {
      const seen: string[] = [];
      const call = client.makeServerStreamRequest(watch.path, watch.requestSerialize, watch.responseDeserialize as (b: Buffer) => HealthStatus, { service });
      call.on('data', (m: HealthStatus) => seen.push(m.status));
      call.on('error', () => undefined);
      return { seen, cancel: () => call.cancel() };
    },
    close: () => client.close(),
  };
}

describe('grpc.health.v1 on a server hosting every service', () => {
  let stowage: Stowage;
  let health: ReturnType<typeof healthClient>;
  beforeAll(async () => {
    stowage = await startStowage();
    health = healthClient(stowage.server.address);
  });
  afterAll(async () => {
    health?.close();
    await stowage?.stop();
  });

  it('answers SERVING for the server and each hosted service, without a token', async () => {
    expect(await health.check('')).toBe('SERVING');
    for (const s of SERVICE_NAMES) expect(await health.check(GRPC_SERVICE_NAMES[s]), s).toBe('SERVING');
    expect(Object.values(GRPC_SERVICE_NAMES).sort()).toEqual([
      'stowage.v1.BridgeService',
      'stowage.v1.DictService',
      'stowage.v1.QueueService',
      'stowage.v1.VolumeService',
    ]);
  });

  it('answers NOT_FOUND for a service it does not know', async () => {
    await expect(health.check('stowage.v1.NoSuchService')).rejects.toMatchObject({ code: status.NOT_FOUND });
  });

  it('lets only the health service through without a token', async () => {
    const client = new Client(stowage.server.address, credentials.createInsecure());
    try {
      const err = await new Promise<ServiceError | null>((resolve) =>
        client.makeUnaryRequest('/stowage.v1.DictService/ListDicts', () => Buffer.alloc(0), (b: Buffer) => b, {}, (e) => resolve(e)),
      );
      expect(err?.code).toBe(status.UNAUTHENTICATED);
    } finally {
      client.close();
    }
  });
});

describe('grpc.health.v1 on a server started with only: [volume]', () => {
  let stowage: Stowage | undefined;
  let health: ReturnType<typeof healthClient> | undefined;
  afterAll(async () => {
    health?.close();
    await stowage?.stop();
  });

  it('answers NOT_SERVING for the services left out, and turns everything NOT_SERVING when stop() begins', async () => {
    stowage = await startStowage({ only: ['volume'] });
    health = healthClient(stowage.server.address);
    expect(await health.check('')).toBe('SERVING');
    expect(await health.check('stowage.v1.VolumeService')).toBe('SERVING');
    expect(await health.check('stowage.v1.DictService')).toBe('NOT_SERVING');
    expect(await health.check('stowage.v1.QueueService')).toBe('NOT_SERVING');
    expect(await health.check('stowage.v1.BridgeService')).toBe('NOT_SERVING');

    const watcher = health.watch('');
    await eventually('first status', () => watcher.seen.length === 1);
    expect(watcher.seen).toEqual(['SERVING']);
    const stopping = stowage.stop();
    await eventually('NOT_SERVING sent', () => watcher.seen.includes('NOT_SERVING'), 10_000);
    watcher.cancel();
    await stopping;
    stowage = undefined;
  });
});
