/**
 * Every SDK call has a deadline (issue 13, "Trust nothing"): against a server
 * that accepts connections and never answers, or whose handlers never call
 * back, calls, `fromName` and dict and queue operations reject with
 * UNAVAILABLE naming the server and the call, instead of waiting forever. A
 * session stream that answers nothing is given up, and the next operation
 * opens a new one. Blocking queue gets are not cut by the deadline: theirs
 * covers their own timeout (or there is none when they wait without end).
 * Short deadlines (the timeoutMs option) keep the tests short; nothing here
 * asserts on time.
 */
import { Server, ServerCredentials, type ServerDuplexStream } from '@grpc/grpc-js';
import { createServer, type Server as NetServer, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Connection, Dict, InvalidArgumentError, Queue, UnavailableError } from '../src/client/index.js';
import { dictOp, queueOp } from '../src/client/ops.js';
import { DEFAULT_TIMEOUT_MS, DEFAULT_TRANSFER_TIMEOUT_MS, resolveClientTimeouts } from '../src/common/config.js';
import { DictOpKind, DictServiceService, type DictBatch, type DictBatchResult } from '../src/gen/stowage/v1/dict.js';
import { QueueOpKind } from '../src/gen/stowage/v1/queue.js';
import { escapeRegExp, expectFailure } from './support/checks.js';
import { removeDir, startStowage, uniqueName, type Stowage } from './support/processes.js';
import { eventually, sleep } from './support/state-servers.js';

const dictGet = (dict: string) => dictOp({ kind: DictOpKind.DICT_OP_KIND_GET, dict, key: Buffer.from('k') });

describe('a server that accepts connections and never answers', () => {
  let fake: NetServer;
  let address: string;
  const sockets = new Set<Socket>();
  beforeAll(async () => {
    fake = createServer((socket) => {
      sockets.add(socket);
      socket.on('data', () => undefined);
      socket.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => fake.listen(0, '127.0.0.1', resolve));
    address = `127.0.0.1:${(fake.address() as { port: number }).port}`;
  });
  afterAll(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((resolve) => fake?.close(resolve));
  });

  it('unary calls, fromName, dict and queue operations and streams reject at their deadline, naming the server and the call', async () => {
    const conn = new Connection({ server: address, token: 't', timeoutMs: 1000, transferTimeoutMs: 1000 });
    const server = escapeRegExp(address);
    try {
      await expectFailure(
        () => conn.unary(conn.dicts.listDicts.bind(conn.dicts), {}),
        UnavailableError,
        'UNAVAILABLE',
        server,
        /DictService\/ListDicts got no answer within its deadline of 1 s/,
        /STOWAGE_TIMEOUT/,
      );
      await expectFailure(() => Dict.fromName('d', { connection: conn }), UnavailableError, 'UNAVAILABLE', server, /DictService\/GetDict/);
      await expectFailure(
        () => Queue.fromName('q', { connection: conn, createIfMissing: true }),
        UnavailableError,
        'UNAVAILABLE',
        server,
        /QueueService\/CreateQueue/,
      );
      await expectFailure(() => conn.dictOps.run(dictGet('d')), UnavailableError, 'UNAVAILABLE', server, /did not answer dict get on "d"/);
      // A blocking get's deadline is its own timeout plus the margin; it passes too.
      await expectFailure(
        () => conn.queueOps.run(queueOp({ kind: QueueOpKind.QUEUE_OP_KIND_GET, queue: 'q', block: true, timeoutMs: 500, max: 1 })),
        UnavailableError,
        'UNAVAILABLE',
        server,
        /did not answer queue get on "q" within 1500 ms/,
      );
      // A data call (a server stream) has the transfer deadline.
      await expectFailure(
        async () => {
          for await (const _ of conn.stream(conn.volumes.readBlob({ hash: '0'.repeat(64), offset: 0, length: 1 }))) {
            // nothing comes
          }
        },
        UnavailableError,
        'UNAVAILABLE',
        server,
        /VolumeService\/ReadBlob got no answer/,
        /STOWAGE_TRANSFER_TIMEOUT/,
      );
    } finally {
      conn.close();
    }
  });
});

describe('a gRPC server whose handlers never call back', () => {
  let server: Server;
  let address: string;
  const sessions: ServerDuplexStream<DictBatch, DictBatchResult>[] = [];
  const cancelled = new Set<ServerDuplexStream<DictBatch, DictBatchResult>>();
  beforeAll(async () => {
    server = new Server();
    server.addService(DictServiceService, {
      getDict: () => undefined,
      session: (call: ServerDuplexStream<DictBatch, DictBatchResult>) => {
        sessions.push(call);
        call.on('data', () => undefined);
        call.on('cancelled', () => cancelled.add(call));
        call.on('error', () => undefined);
      },
    });
    const port = await new Promise<number>((res, rej) =>
      server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) => (err ? rej(err) : res(p))),
    );
    address = `127.0.0.1:${port}`;
  });
  afterAll(() => server?.forceShutdown());

  it('a unary call rejects at its deadline; a session that answers nothing is given up and the next operation opens a new one', async () => {
    const conn = new Connection({ server: address, token: 't', timeoutMs: 1000 });
    try {
      await expectFailure(() => Dict.fromName('d', { connection: conn }), UnavailableError, 'UNAVAILABLE', escapeRegExp(address), /DictService\/GetDict/);
      await expectFailure(
        () => conn.dictOps.run(dictGet('d')),
        UnavailableError,
        'UNAVAILABLE',
        /did not answer dict get on "d" within 1000 ms/,
        /stream is given up/,
        /whether it took effect is unknown/,
      );
      await eventually('the server to see the stalled session cancelled', () => sessions.length === 1 && cancelled.has(sessions[0]!));
      await expectFailure(() => conn.dictOps.run(dictGet('e')), UnavailableError, 'UNAVAILABLE', /dict get on "e"/);
      expect(sessions.length).toBe(2);
    } finally {
      conn.close();
    }
  });
});

describe('blocking queue gets against a real server, with a short deadline', () => {
  let stowage: Stowage;
  let conn: Connection;
  beforeAll(async () => {
    stowage = await startStowage();
    conn = new Connection({ server: stowage.server.address, token: stowage.server.token, timeoutMs: 2000 });
  });
  afterAll(async () => {
    conn?.close();
    await stowage?.stop();
    if (stowage) removeDir(stowage.dataDir);
  });

  it('a get whose own timeout is longer than the deadline waits for its timeout, not less', async () => {
    const q = await Queue.fromName<string>(uniqueName('wait'), { createIfMissing: true, connection: conn });
    expect(await q.get({ timeoutMs: 5000 })).toBeUndefined();
    // The session is still good.
    await q.put('x');
    expect(await q.get({ block: false })).toBe('x');
  });

  it('a get without a timeout waits for as long as it takes', async () => {
    const name = uniqueName('forever');
    const q = await Queue.fromName<string>(name, { createIfMissing: true, connection: conn });
    const got = q.get();
    // Longer than the deadline of a call that does not wait on purpose.
    await sleep(3000);
    await (await Queue.fromName<string>(name, { connection: stowage.connection })).put('late');
    expect(await got).toBe('late');
  });
});

describe('deadline settings', () => {
  const saved = { timeout: process.env.STOWAGE_TIMEOUT, transfer: process.env.STOWAGE_TRANSFER_TIMEOUT };
  afterAll(() => {
    for (const [k, v] of [['STOWAGE_TIMEOUT', saved.timeout], ['STOWAGE_TRANSFER_TIMEOUT', saved.transfer]] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });

  it('come from options, then STOWAGE_TIMEOUT and STOWAGE_TRANSFER_TIMEOUT, then the defaults; a bad value names its source', async () => {
    delete process.env.STOWAGE_TIMEOUT;
    delete process.env.STOWAGE_TRANSFER_TIMEOUT;
    expect(resolveClientTimeouts()).toEqual({ timeoutMs: DEFAULT_TIMEOUT_MS, transferTimeoutMs: DEFAULT_TRANSFER_TIMEOUT_MS });
    process.env.STOWAGE_TIMEOUT = '2s';
    process.env.STOWAGE_TRANSFER_TIMEOUT = '30m';
    expect(resolveClientTimeouts()).toEqual({ timeoutMs: 2000, transferTimeoutMs: 1_800_000 });
    expect(resolveClientTimeouts({ timeoutMs: 500 })).toEqual({ timeoutMs: 500, transferTimeoutMs: 1_800_000 });
    process.env.STOWAGE_TIMEOUT = 'soon';
    await expectFailure(() => resolveClientTimeouts(), InvalidArgumentError, 'INVALID_ARGUMENT', /STOWAGE_TIMEOUT "soon" is not a duration/);
    process.env.STOWAGE_TIMEOUT = '0';
    await expectFailure(() => resolveClientTimeouts(), InvalidArgumentError, 'INVALID_ARGUMENT', /STOWAGE_TIMEOUT must be more than 0/);
  });
});
