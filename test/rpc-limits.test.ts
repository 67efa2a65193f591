/**
 * What a call may carry, and what an error may say (issue 13, "Trust nothing").
 *
 * - An error message quotes a bounded prefix of its input, and no status
 *   message is longer than MAX_STATUS_MESSAGE_BYTES: a longer one used to make
 *   Node's HTTP/2 tear down the server's session without the client hearing
 *   of it, so that the call (and its connection) hung.
 * - The token is checked from the metadata, before a message is read: many
 *   large unauthenticated calls cost the server no memory to speak of.
 * - A request over the server-wide limit is refused from its length prefix
 *   (RESOURCE_EXHAUSTED naming the limit), one over its method's limit is
 *   INVALID_ARGUMENT naming it, and the SDK refuses to send one that could
 *   not fit.
 */
import { Client, Metadata, Server, ServerCredentials, credentials, status, type ServiceError } from '@grpc/grpc-js';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Connection, Dict, InvalidArgumentError, Queue, ResourceExhaustedError, UnauthenticatedError } from '../src/client/index.js';
import { ErrorCode, InvalidArgumentError as ServerInvalidArgument, StowageError } from '../src/common/errors.js';
import { MAX_STATUS_MESSAGE_BYTES, fromGrpcError, toGrpcError } from '../src/common/grpc-errors.js';
import { unary } from '../src/common/grpc-server.js';
import { createLogger } from '../src/common/logger.js';
import { MAX_REQUEST_BYTES } from '../src/common/message-limits.js';
import { QUOTE_MAX_CHARS, quote } from '../src/common/quote.js';
import { DictBatch, DictOpKind, DictServiceService } from '../src/gen/stowage/v1/dict.js';
import { dictOp } from '../src/client/ops.js';
import { expectFailure } from './support/checks.js';
import { removeDir, spawnStowage, startStowage, tempDir, uniqueName, type ChildServer, type Stowage } from './support/processes.js';

const MiB = 1024 * 1024;
/** A name of 100,000 bytes that percent-encodes to 3 times that in a status message (spaces and é). */
const HUGE_NAME = `${'é '.repeat(33_333)}x`;
/** Under the 64 KiB limit of CreateDict, so that the server's own name check answers it. */
const BIG_NAME = 'é '.repeat(60_000 / 3);
/** A generous bound for "a short message": the quoted prefix is 64 characters. */
const SHORT = 1000;

describe('error messages stay short whatever the input', () => {
  it('quote() keeps a prefix of the input and says how long it was', () => {
    expect(quote('weights')).toBe('"weights"');
    const q = quote(HUGE_NAME);
    expect(q.length).toBeLessThan(SHORT);
    expect(q).toContain(JSON.stringify(HUGE_NAME.slice(0, QUOTE_MAX_CHARS)));
    expect(q).toContain(`(${Buffer.byteLength(HUGE_NAME)} bytes)`);
    // Control characters are escaped, and still bounded.
    expect(quote('\u0001'.repeat(100_000)).length).toBeLessThan(SHORT);
    expect(quote(Buffer.alloc(100_000, 0xab))).toMatch(/^0x(ab)+… \(100000 bytes\)$/);
  });

  it('toGrpcError cuts any status message to MAX_STATUS_MESSAGE_BYTES, saying so', () => {
    const long = new ServerInvalidArgument(`bad: ${'ü'.repeat(200_000)}`);
    const s = toGrpcError(long);
    expect(s.code).toBe(status.INVALID_ARGUMENT);
    expect(Buffer.byteLength(s.details)).toBeLessThanOrEqual(MAX_STATUS_MESSAGE_BYTES);
    expect(s.details).toMatch(/^bad: ü+ … \[message cut: 400005 bytes in all\]$/);
    const internal = toGrpcError(new Error('x'.repeat(1_000_000)));
    expect(Buffer.byteLength(internal.details)).toBeLessThanOrEqual(MAX_STATUS_MESSAGE_BYTES);
    // A short message is left alone.
    expect(toGrpcError(new ServerInvalidArgument('short')).details).toBe('short');
    // And the client believes no more from a server.
    const fromServer = fromGrpcError({ code: status.NOT_FOUND, details: 'y'.repeat(1_000_000), metadata: new Metadata() }, 'host:1');
    expect(fromServer.code).toBe(ErrorCode.NOT_FOUND);
    expect(Buffer.byteLength(fromServer.message)).toBeLessThanOrEqual(MAX_STATUS_MESSAGE_BYTES);
  });

  describe('over gRPC', () => {
    let stowage: Stowage;
    let connection: Connection;
    beforeAll(async () => {
      stowage = await startStowage();
      // A short deadline: if an answer is lost, the call fails (with the wrong code) instead of hanging the test.
      connection = new Connection({ server: stowage.server.address, token: stowage.server.token, timeoutMs: 15_000 });
    });
    afterAll(async () => {
      connection?.close();
      await stowage?.stop();
      if (stowage) removeDir(stowage.dataDir);
    });

    it("the server's refusal of a 60 KB name arrives, short, and the connection keeps answering", async () => {
      const d = connection.dicts;
      const err = await expectFailure(
        () => connection.unary(d.createDict.bind(d), { name: BIG_NAME, existOk: false, idleTimeoutMs: 0 }),
        InvalidArgumentError,
        'INVALID_ARGUMENT',
        /invalid dict name "é é é/,
        /\(60000 bytes\): use 1 to 64 characters/,
      );
      expect(err.message.length).toBeLessThan(SHORT);
      // The same connection (the one that hung before) answers the next call.
      const name = uniqueName('after');
      await connection.unary(d.createDict.bind(d), { name, existOk: false, idleTimeoutMs: 0 });
      expect((await connection.unary(d.listDicts.bind(d), {})).dicts.map((i) => i.name)).toContain(name);
    });

    it('a 100,000-byte name is refused by the method limit, naming it, and nothing is created', async () => {
      const d = connection.dicts;
      const q = connection.queues;
      const v = connection.volumes;
      for (const call of [
        () => connection.unary(d.createDict.bind(d), { name: HUGE_NAME, existOk: false, idleTimeoutMs: 0 }),
        () => connection.unary(q.getQueue.bind(q), { name: HUGE_NAME }),
        () => connection.unary(v.createVolume.bind(v), { name: HUGE_NAME, ephemeral: false, existOk: false }),
      ]) {
        const err = await expectFailure(call, InvalidArgumentError, 'INVALID_ARGUMENT', /over the limit of 65536 bytes for this method/);
        expect(err.message.length).toBeLessThan(SHORT);
      }
      expect((await connection.unary(d.listDicts.bind(d), {})).dicts.map((i) => i.name)).not.toContain(HUGE_NAME);
    });

    it('Dict.fromName and Queue.fromName refuse such a name with INVALID_ARGUMENT, briefly', async () => {
      for (const open of [
        () => Dict.fromName(HUGE_NAME, { connection }),
        () => Dict.fromName(HUGE_NAME, { connection, createIfMissing: true }),
        () => Queue.fromName(HUGE_NAME, { connection }),
        () => Queue.fromName(HUGE_NAME, { connection, createIfMissing: true }),
      ]) {
        const err = await expectFailure(open, InvalidArgumentError, 'INVALID_ARGUMENT', /invalid (dict|queue) name .*\(100000 bytes\)/);
        expect(err.message.length).toBeLessThan(SHORT);
      }
    });

    it('the SDK refuses, before sending, an operation too large for one request; other operations go on', async () => {
      const d = await Dict.fromName<string, Buffer>(uniqueName('big'), { connection, createIfMissing: true, encoding: 'raw' });
      const half = Buffer.alloc(MAX_REQUEST_BYTES / 2 + MiB);
      const pending = d.put('small', Buffer.from('ok'));
      await expectFailure(
        () => d.update([['a', half], ['b', half]]),
        InvalidArgumentError,
        'INVALID_ARGUMENT',
        new RegExp(`over the limit of \\d+ bytes for one request`),
      );
      expect(await pending).toBe(true);
      expect((await d.get('small'))?.toString()).toBe('ok');
      expect(await d.contains('a')).toBe(false);
    });
  });

  describe('a handler whose error message is huge', () => {
    let server: Server;
    let address: string;
    beforeAll(async () => {
      // A real gRPC server built with the server wrappers, its handler throwing a message no HTTP/2 trailer can carry.
      server = new Server();
      const log = createLogger('test');
      const none = () => undefined;
      server.addService(DictServiceService, {
        getDict: unary(none, log, () => {
          throw new ServerInvalidArgument(`no such thing: ${'ü '.repeat(150_000)}`);
        }),
        listDicts: unary(none, log, () => ({ dicts: [] })),
      });
      const port = await new Promise<number>((res, rej) =>
        server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) => (err ? rej(err) : res(p))),
      );
      address = `127.0.0.1:${port}`;
    });
    afterAll(() => server?.forceShutdown());

    it('reaches the client cut short, and the connection keeps answering', async () => {
      const connection = new Connection({ server: address, token: 't', timeoutMs: 15_000 });
      try {
        const d = connection.dicts;
        const err = await expectFailure(() => connection.unary(d.getDict.bind(d), { name: 'x' }), InvalidArgumentError, 'INVALID_ARGUMENT', /^no such thing: ü ü/, /message cut/);
        expect(Buffer.byteLength(err.message)).toBeLessThanOrEqual(MAX_STATUS_MESSAGE_BYTES);
        expect(await connection.unary(d.listDicts.bind(d), {})).toEqual({ dicts: [] });
      } finally {
        connection.close();
      }
    });
  });
});

/** Peak resident memory of a process (kB), from /proc: catches a peak that a later GC gave back. */
function peakRssKb(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('VmHWM:'));
  return Number(/(\d+)/.exec(line ?? '')?.[1]);
}

/** A DictService/Batch call with raw bytes (to send what the SDK would refuse), with `token`. */
function rawBatch(client: Client, body: Buffer, token: string): Promise<StowageError> {
  const metadata = new Metadata();
  metadata.set('authorization', `Bearer ${token}`);
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(
      '/stowage.v1.DictService/Batch',
      (b: Buffer) => b,
      (b: Buffer) => b,
      body,
      metadata,
      { deadline: Date.now() + 120_000 },
      (err: ServiceError | null) => (err ? resolve(fromGrpcError(err, 'test')) : reject(new Error('the call succeeded'))),
    );
  });
}

function batchOf(valueBytes: number, dict: string): Buffer {
  const op = dictOp({ kind: DictOpKind.DICT_OP_KIND_PUT, dict, key: Buffer.from('k'), value: Buffer.alloc(valueBytes, 7) });
  return Buffer.from(DictBatch.encode({ id: 1, ops: [op] }).finish());
}

describe('a `stowage serve` process and large requests', () => {
  let serve: ChildServer;
  let client: Client;
  beforeAll(async () => {
    serve = await spawnStowage(tempDir('limits'));
    // No send limit of its own: this client sends what the SDK would not.
    client = new Client(serve.address, credentials.createInsecure(), { 'grpc.max_send_message_length': -1 });
  });
  afterAll(async () => {
    client?.close();
    await serve?.kill();
    if (serve) removeDir(serve.dataDir);
  });

  it('refuses 16 concurrent 16 MiB calls with a wrong token without reading them', async () => {
    const calls = 16;
    const body = batchOf(16 * MiB, uniqueName('anon'));
    const before = peakRssKb(serve.pid);
    const errors = await Promise.all(Array.from({ length: calls }, () => rawBatch(client, body, 'not-the-token')));
    for (const e of errors) {
      expect(e).toBeInstanceOf(UnauthenticatedError);
      expect(e.message).toMatch(/STOWAGE_TOKEN/);
    }
    const grownBytes = (peakRssKb(serve.pid) - before) * 1024;
    const sentBytes = calls * body.length;
    // Reading the bodies before the token check would cost at least the bytes sent.
    expect(grownBytes).toBeLessThan(sentBytes / 4);
  });

  it('refuses an authenticated request over the server-wide limit with RESOURCE_EXHAUSTED naming the limit', async () => {
    const err = await rawBatch(client, batchOf(MAX_REQUEST_BYTES + MiB, uniqueName('big')), serve.token);
    expect(err).toBeInstanceOf(ResourceExhaustedError);
    expect(err.code).toBe('RESOURCE_EXHAUSTED');
    expect(err.message).toContain(`over the limit of ${MAX_REQUEST_BYTES} bytes`);
    // The server is fine, and a request under the limit goes through.
    const connection = new Connection({ server: serve.address, token: serve.token });
    try {
      const d = await Dict.fromName<string, Buffer>(uniqueName('after'), { connection, createIfMissing: true, encoding: 'raw' });
      expect(await d.put('k', Buffer.alloc(MiB))).toBe(true);
    } finally {
      connection.close();
    }
  });
});
