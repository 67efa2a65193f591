/**
 * TLS (common/tls.ts, server/certs.ts): `stowage certs create`, a server with
 * --tls-cert/--tls-key serving the CLI, the SDK, a FUSE mount, a worker (and
 * the mount and function process it starts) and the HTTPS dashboard; mutual
 * TLS; what a client is told when the two sides do not agree (untrusted
 * certificate, plain against TLS and the reverse, no client certificate);
 * the one warning line of a server listening beyond loopback without TLS;
 * bad certificate and key files refused with exit 2. Every process started
 * here is stopped by PID, also when a test fails.
 */
import { X509Certificate, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { App, Connection, Dict, Volume } from '../src/client/index.js';
import { Client, Metadata, credentials, status } from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { fromGrpcError } from '../src/common/grpc-errors.js';
import { loadServerTls } from '../src/common/tls.js';
import { FIXTURE, cleanUpWorkers, startWorker, type WorkerProcess } from './support/bridge.js';
import { cleanUpMounts, startMountProcess, stopMount } from './support/mount.js';
import { runCli, runCliBytes, spawnStowage, startStowage, tempDir, uniqueName, type ChildServer, type Stowage } from './support/processes.js';

const scratch = tempDir('tls');
const certs = join(scratch, 'certs');
const file = (name: string) => join(certs, name);
const cert = (name: string) => new X509Certificate(readFileSync(file(name)));

/** Runs `fn`, and how long it took in ms. */
async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t0 = Date.now();
  const r = await fn();
  return [r, Date.now() - t0];
}

/** What a failed SDK call rejected with. */
async function failure(p: Promise<unknown>): Promise<{ code?: string; message: string }> {
  try {
    await p;
  } catch (err) {
    return err as { code?: string; message: string };
  }
  throw new Error('the call succeeded');
}

beforeAll(async () => {
  const r = await runCli(['certs', 'create', '--dir', certs, '--host', 'node1.internal', '--host', '10.1.2.3', '--client', 'worker-1', '--days', '30'], {});
  expect(r.code, r.stderr).toBe(0);
});
afterAll(() => {
  cleanUpMounts();
  cleanUpWorkers();
});

describe('stowage certs create', () => {
  it('writes a CA, a server certificate for the hosts, localhost and 127.0.0.1, and a client certificate; keys 0600', () => {
    const ca = cert('ca.pem');
    expect(ca.ca).toBe(true);
    const server = cert('server.pem');
    expect(server.verify(ca.publicKey)).toBe(true);
    expect(server.subjectAltName).toBe('DNS:node1.internal, IP Address:10.1.2.3, DNS:localhost, IP Address:127.0.0.1');
    expect(server.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(server.checkHost('localhost')).toBe('localhost');
    expect(server.checkIP('127.0.0.2')).toBeUndefined();
    expect(server.ca).toBe(false);
    const client = cert('client.pem');
    expect(client.verify(ca.publicKey)).toBe(true);
    expect(client.subject).toContain('CN=worker-1');
    const days = (Date.parse(server.validTo) - Date.now()) / 86_400_000;
    expect(days).toBeGreaterThan(29);
    expect(days).toBeLessThan(31);
    for (const key of ['ca-key.pem', 'server-key.pem', 'client-key.pem']) expect(statSync(file(key)).mode & 0o777).toBe(0o600);
    for (const c of ['ca.pem', 'server.pem', 'client.pem']) expect(statSync(file(c)).mode & 0o777).toBe(0o644);
    // The pair the server loads: each key is its certificate's.
    expect(loadServerTls({ cert: file('server.pem'), key: file('server-key.pem'), clientCa: file('ca.pem') })?.clientCa).toBeDefined();
  });

  it('refuses to overwrite without --force (writing nothing), and replaces with it', async () => {
    const before = readFileSync(file('ca.pem'), 'utf8');
    const refused = await runCli(['certs', 'create', '--dir', certs], {});
    expect(refused.code).toBe(4);
    expect(refused.stderr).toMatch(/ca\.pem, .*server-key\.pem already exist: give --force/);
    expect(readFileSync(file('ca.pem'), 'utf8')).toBe(before);
    const other = join(scratch, 'replaced');
    expect((await runCli(['certs', 'create', '--dir', other], {})).code).toBe(0);
    const first = readFileSync(join(other, 'ca.pem'), 'utf8');
    const forced = await runCli(['certs', 'create', '--dir', other, '--force'], {});
    expect(forced.code, forced.stderr).toBe(0);
    expect(readFileSync(join(other, 'ca.pem'), 'utf8')).not.toBe(first);
    expect(forced.stdout).toContain(`--tls-cert ${join(other, 'server.pem')}`);
    expect(forced.stdout).toMatch(/STOWAGE_TLS_CA=\S*ca\.pem/);
    const bad = await runCli(['certs', 'create', '--dir', join(scratch, 'bad'), '--host', 'no spaces'], {});
    expect(bad.code).toBe(2);
  });
});

describe('a server with TLS', () => {
  let child: ChildServer;
  let env: Record<string, string>;
  let httpsAddress: string;

  beforeAll(async () => {
    child = await spawnStowage(tempDir('tls-server'), ['--tls-cert', file('server.pem'), '--tls-key', file('server-key.pem'), '--http', '127.0.0.1:0']);
    env = { STOWAGE_SERVER: child.address, STOWAGE_TOKEN: child.token };
    const m = /dashboard on https:\/\/(\S+)\//.exec(await waitForStderr(child, /dashboard on/));
    httpsAddress = m![1]!;
  });
  afterAll(async () => child?.kill());

  it('says TLS in its start line, and gives no warning', () => {
    expect(child.stderr()).toMatch(/stowage serving on 127\.0\.0\.1:\d+ \(.*; TLS\)/);
    expect(child.stderr()).not.toContain('warning');
  });

  it('serves the CLI with --tls-ca and STOWAGE_TLS_CA: volume put/get byte-exact, a dict op', async () => {
    const volume = uniqueName('vol');
    const data = randomBytes(700_000);
    writeFileSync(join(scratch, 'data.bin'), data);
    const tlsCa = ['--tls-ca', file('ca.pem')];
    expect((await runCli([...tlsCa, 'volume', 'create', volume], env)).code).toBe(0);
    const put = await runCli(['volume', 'put', volume, join(scratch, 'data.bin'), '/data.bin', ...tlsCa], env);
    expect(put.code, put.stderr).toBe(0);
    const got = await runCliBytes(['volume', 'get', volume, '/data.bin', '-'], { ...env, STOWAGE_TLS_CA: file('ca.pem') });
    expect(got.code, got.stderr).toBe(0);
    expect(got.stdout.equals(data)).toBe(true);
    const dict = uniqueName('dict');
    const caEnv = { ...env, STOWAGE_TLS_CA: file('ca.pem') };
    expect((await runCli(['dict', 'create', dict], caEnv)).code).toBe(0);
    expect((await runCli(['dict', 'put', dict, 'k', 'v'], caEnv)).code).toBe(0);
    const get = await runCli(['dict', 'get', dict, 'k'], caEnv);
    expect(get.code, get.stderr).toBe(0);
    expect(get.stdout.trim()).toBe('"v"');
  });

  it('serves the SDK with tlsCa as PEM text or as a path', async () => {
    for (const tlsCa of [readFileSync(file('ca.pem'), 'utf8'), file('ca.pem')]) {
      const connection = new Connection({ server: child.address, token: child.token, tlsCa });
      try {
        const d = await Dict.fromName<string, number>(uniqueName('sdk'), { connection, createIfMissing: true });
        await d.put('n', 42);
        expect(await d.get('n')).toBe(42);
        const vol = await Volume.fromName(uniqueName('sdk-vol'), { connection, createIfMissing: true });
        const bytes = randomBytes(100_000);
        await vol.batchUpload().putFile(bytes, '/b.bin').commit();
        expect((await vol.readBytes('/b.bin')).equals(bytes)).toBe(true);
      } finally {
        connection.close();
      }
    }
  });

  it('a client that does not trust the certificate fails saying so (exit 6)', async () => {
    const [r, ms] = await timed(() => runCli(['volume', 'list'], { ...env, STOWAGE_TLS: '1' }));
    expect(r.code).toBe(6);
    expect(r.stderr).toMatch(/cannot connect to 127\.0\.0\.1:\d+: the server's TLS certificate is not trusted \(.+\); give its CA with --tls-ca or STOWAGE_TLS_CA/);
    expect(ms).toBeLessThan(15_000);
    // Trusting another CA is not trusting this one.
    const other = join(scratch, 'other-ca');
    await runCli(['certs', 'create', '--dir', other], {});
    const wrong = await runCli(['volume', 'list', '--tls-ca', join(other, 'ca.pem')], env);
    expect(wrong.code).toBe(6);
    expect(wrong.stderr).toMatch(/TLS certificate is not trusted/);
  });

  it('a plain client fails quickly, told to give the CA', async () => {
    const [r, ms] = await timed(() => runCli(['volume', 'list'], env));
    expect(r.code).toBe(6);
    expect(r.stderr).toMatch(/server closed the connection during its setup \(.+\); a server with TLS closes plain connections \(give its CA with --tls-ca/);
    expect(ms).toBeLessThan(15_000);
    const connection = new Connection({ server: child.address, token: child.token });
    try {
      const err = await failure(Dict.fromName(uniqueName('plain'), { connection, createIfMissing: true }));
      expect(err.code).toBe('UNAVAILABLE');
      expect(err.message).toMatch(/--tls-ca/);
    } finally {
      connection.close();
    }
  });

  it('a FUSE mount reads a file byte-exact over TLS', async () => {
    const volume = uniqueName('mnt');
    const data = randomBytes(1_500_000);
    const connection = new Connection({ server: child.address, token: child.token, tlsCa: file('ca.pem') });
    try {
      const vol = await Volume.fromName(volume, { connection, createIfMissing: true });
      await vol.batchUpload().putFile(data, '/weights.bin').commit();
    } finally {
      connection.close();
    }
    const dir = join(scratch, 'mnt');
    mkdirSync(dir, { recursive: true });
    const m = await startMountProcess({ volume, dir, cacheDir: join(scratch, 'mnt-cache'), env: { ...env, STOWAGE_TLS_CA: file('ca.pem') } });
    try {
      expect(readFileSync(join(dir, 'weights.bin')).equals(data)).toBe(true);
    } finally {
      expect(await stopMount(m, 'SIGTERM')).toBe(0);
    }
  });

  it('answers the health service over TLS, without a token', async () => {
    const client = new Client(child.address, credentials.createSsl(readFileSync(file('ca.pem'))));
    const check = healthService.Check!;
    try {
      const answer = await new Promise<{ status: string }>((resolve, reject) =>
        client.makeUnaryRequest(check.path, check.requestSerialize, check.responseDeserialize as (b: Buffer) => { status: string }, { service: '' }, (err, res) =>
          err ? reject(err) : resolve(res!),
        ),
      );
      expect(answer.status).toBe('SERVING');
    } finally {
      client.close();
    }
  });

  it('serves the dashboard over HTTPS with the same certificate: /api/whoami with the token', async () => {
    const get = (token: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const [host, port] = [httpsAddress.slice(0, httpsAddress.lastIndexOf(':')), Number(httpsAddress.slice(httpsAddress.lastIndexOf(':') + 1))];
        const req = request({ host, port, path: '/api/whoami', ca: readFileSync(file('ca.pem')), headers: { authorization: `Bearer ${token}` } }, (res) => {
          let body = '';
          res.on('data', (d: Buffer) => (body += d.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        });
        req.on('error', reject);
        req.end();
      });
    const ok = await get(child.token);
    expect(ok.status).toBe(200);
    expect(JSON.parse(ok.body)).toMatchObject({ server: { address: child.address } });
    expect((await get('wrong')).status).toBe(401);
    // Plain HTTP gets no answer from an HTTPS port.
    await expect(fetch(`http://${httpsAddress}/api/whoami`, { signal: AbortSignal.timeout(10_000) })).rejects.toThrow();
  });
});

describe('a TLS client against a plain server', () => {
  let stowage: Stowage;
  beforeAll(async () => {
    stowage = await startStowage({}, { tlsCa: file('ca.pem') });
  });
  afterAll(async () => stowage?.stop());

  it('fails quickly, told that the server does not speak TLS', async () => {
    const [err, ms] = await timed(() => failure(Dict.fromName(uniqueName('d'), { connection: stowage.connection, createIfMissing: true })));
    expect(err.code).toBe('UNAVAILABLE');
    expect(err.message).toMatch(/cannot connect to 127\.0\.0\.1:\d+: this client speaks TLS .* but the server does not \(wrong version number\); drop those, or start the server with --tls-cert and --tls-key/);
    expect(ms).toBeLessThan(10_000);
    const cli = await runCli(['volume', 'list', '--tls-ca', file('ca.pem')], { STOWAGE_SERVER: stowage.server.address, STOWAGE_TOKEN: stowage.server.token });
    expect(cli.code).toBe(6);
    expect(cli.stderr).toMatch(/but the server does not/);
  });
});

describe('mutual TLS', () => {
  let child: ChildServer;
  let env: Record<string, string>;
  beforeAll(async () => {
    child = await spawnStowage(tempDir('mtls-server'), [], {
      STOWAGE_TLS_CERT: file('server.pem'),
      STOWAGE_TLS_KEY: file('server-key.pem'),
      STOWAGE_TLS_CLIENT_CA: file('ca.pem'),
    });
    env = { STOWAGE_SERVER: child.address, STOWAGE_TOKEN: child.token, STOWAGE_TLS_CA: file('ca.pem') };
  });
  afterAll(async () => child?.kill());

  it('refuses a client without a client certificate, saying it needs one', async () => {
    expect(child.stderr()).toMatch(/; TLS, client certificates required\)/);
    const r = await runCli(['volume', 'list'], env);
    expect(r.code).toBe(6);
    expect(r.stderr).toMatch(/cannot connect to 127\.0\.0\.1:\d+: the server (requires a client certificate signed by its CA \(mutual TLS\) and refused this client|closed the .*mutual TLS).*--tls-client-cert and --tls-client-key/);
  });

  it('refuses a client certificate of another CA', async () => {
    const other = join(scratch, 'other-client');
    await runCli(['certs', 'create', '--dir', other, '--client', 'stranger'], {});
    const r = await runCli(['volume', 'list', '--tls-client-cert', join(other, 'client.pem'), '--tls-client-key', join(other, 'client-key.pem')], env);
    expect(r.code).toBe(6);
    // The server's alert or its closing the connection, whichever reaches the client first.
    expect(r.stderr).toMatch(/cannot connect to 127\.0\.0\.1:\d+: the server (requires a client certificate signed by its CA|closed the TLS connection during its setup .*its CA did not sign)/);
  });

  it('serves a client with a certificate its CA signed (CLI flags, SDK options)', async () => {
    const volume = uniqueName('m');
    const r = await runCli(['volume', 'create', volume, '--tls-client-cert', file('client.pem'), '--tls-client-key', file('client-key.pem')], env);
    expect(r.code, r.stderr).toBe(0);
    const connection = new Connection({ server: child.address, token: child.token, tlsCa: file('ca.pem'), tlsClientCert: file('client.pem'), tlsClientKey: file('client-key.pem') });
    try {
      expect((await Volume.list({ connection })).map((v) => v.name)).toContain(volume);
    } finally {
      connection.close();
    }
  });
});

describe('a worker started with --tls-ca', () => {
  let stowage: Stowage;
  let worker: WorkerProcess;
  beforeAll(async () => {
    const tls = loadServerTls({ cert: file('server.pem'), key: file('server-key.pem') });
    stowage = await startStowage({ tls }, { tlsCa: file('ca.pem') });
    worker = await startWorker({ id: 'tls-w1', server: stowage.server.address, token: stowage.server.token, args: ['--tls-ca', file('ca.pem')] });
  }, 90_000);
  afterAll(async () => {
    await worker?.kill();
    cleanUpWorkers();
    await stowage?.stop();
  });

  it('passes it on to the mount and the function processes it starts', async () => {
    const dataset = uniqueName('tls-data');
    const data = randomBytes(300_000);
    const vol = await Volume.fromName(dataset, { connection: stowage.connection, createIfMissing: true });
    await vol.batchUpload().putFile(data, '/f.bin').commit();
    const app = new App(uniqueName('tls-app'), { connection: stowage.connection });
    const digest = app.function<[string], unknown>({ module: FIXTURE, name: 'digest', volumes: { '/data': dataset } }, () => undefined);
    const { createHash } = await import('node:crypto');
    expect(await digest.remote('/f.bin')).toMatchObject({ sha256: createHash('sha256').update(data).digest('hex'), worker: 'tls-w1' });
 
    // The function process talks to the server itself, with the SDK.
    const dict = uniqueName('tls-dict');
    await Dict.fromName(dict, { connection: stowage.connection, createIfMissing: true });
    const remember = app.function<[string, string, string], unknown>({ module: FIXTURE.replace('jobs.mjs', 'tls.mjs'), name: 'remember' }, () => undefined);
    expect(await remember.remote(dict, 'k', 'over TLS')).toEqual({ stored: 'over TLS', worker: 'tls-w1' });
    expect(await (await Dict.fromName<string, string>(dict, { connection: stowage.connection })).get('k')).toBe('over TLS');
  });
});

describe('fromGrpcError on a certificate made out for other names', () => {
  it('says the certificate is not trusted, and for which address', () => {
    // What grpc-js reported connecting to 127.0.0.2 with a certificate for 127.0.0.1 (checked by hand: the tests' servers bind 127.0.0.1 only).
    const details =
      "No connection established. Last error: Error [ERR_TLS_CERT_ALTNAME_INVALID]: Hostname/IP does not match certificate's altnames: IP: 127.0.0.2 is not in the cert's list: 127.0.0.1. Resolution note: ";
    const err = fromGrpcError({ code: status.UNAVAILABLE, details, metadata: new Metadata() }, '127.0.0.2:7420');
    expect(err.code).toBe('UNAVAILABLE');
    expect(err.message).toBe(
      "cannot connect to 127.0.0.2:7420: the server's TLS certificate is not trusted: it is not made out for the name or address connected to " +
        "(Hostname/IP does not match certificate's altnames: IP: 127.0.0.2 is not in the cert's list: 127.0.0.1); connect by a name it holds, or make it for this one (stowage certs create --host NAME)",
    );
  });
});

describe('fromGrpcError on a connection reset during the handshake', () => {
  it('names mutual TLS to a TLS client, and TLS to a plain one', () => {
    // What a client whose certificate another CA signed sometimes gets instead of "Failed to connect" (the server's close wins the race).
    const reset = { code: status.UNAVAILABLE, details: 'No connection established. Last error: read ECONNRESET (2026-12-06T21:05:59.306Z)', metadata: new Metadata() };
    expect(fromGrpcError(reset, '127.0.0.1:7420', 'client-cert').message).toBe(
      'cannot connect to 127.0.0.1:7420: the server closed the TLS connection during its setup (read ECONNRESET); a server with mutual TLS closes those whose client certificate its CA did not sign: give one it signed with --tls-client-cert and --tls-client-key',
    );
    expect(fromGrpcError(reset, '127.0.0.1:7420', 'tls').message).toMatch(/closes those without a client certificate: give one with --tls-client-cert/);
    expect(fromGrpcError(reset, '127.0.0.1:7420', 'plain').message).toMatch(/the server closed the connection during its setup \(read ECONNRESET\); a server with TLS closes plain connections \(give its CA/);
    // A reset of a connection that was working is no handshake failure.
    const later = { ...reset, details: 'read ECONNRESET' };
    expect(fromGrpcError(later, '127.0.0.1:7420', 'client-cert').message).toMatch(/^stowage server at 127\.0\.0\.1:7420 is unreachable \(read ECONNRESET\)/);
  });
});

describe('serve', () => {
  it('warns in one line when it listens beyond loopback without TLS, and not with TLS', async () => {
    const plain = await spawnStowage(tempDir('open'), ['--host', '0.0.0.0']);
    try {
      const line = await waitForStderr(plain, /warning/);
      const warnings = plain.stderr().split('\n').filter((l) => l.includes('warning'));
      expect(warnings).toHaveLength(1);
      expect(line).toMatch(/^warning: stowage listens without TLS \(gRPC on 0\.0\.0\.0\): the token and data cross the network readable \(give --tls-cert and --tls-key/);
    } finally {
      await plain.kill();
    }
    const withHttp = await spawnStowage(tempDir('open-http'), ['--host', '0.0.0.0', '--http', '0.0.0.0:0']);
    try {
      await waitForStderr(withHttp, /warning/);
      const warnings = withHttp.stderr().split('\n').filter((l) => l.includes('warning'));
      expect(warnings).toEqual([expect.stringMatching(/without TLS \(gRPC on 0\.0\.0\.0, the dashboard on 0\.0\.0\.0\)/)]);
    } finally {
      await withHttp.kill();
    }
    const tls = await spawnStowage(tempDir('open-tls'), ['--host', '0.0.0.0', '--http', '0.0.0.0:0', '--tls-cert', file('server.pem'), '--tls-key', file('server-key.pem')]);
    try {
      await waitForStderr(tls, /dashboard on https:/);
      await new Promise((r) => setTimeout(r, 300));
      expect(tls.stderr()).not.toContain('warning');
    } finally {
      await tls.kill();
    }
  });

  it('refuses unreadable, unparsable and mismatched certificate and key files with exit 2, naming the file', async () => {
    const junk = join(scratch, 'junk.pem');
    writeFileSync(junk, 'not a certificate\n');
    const dataDir = tempDir('bad-tls');
    const serve = (...args: string[]) => runCli(['serve', '--data-dir', dataDir, '--port', '0', ...args], {});
    const cases: [string[], RegExp][] = [
      [['--tls-cert', join(scratch, 'absent.pem'), '--tls-key', file('server-key.pem')], /--tls-cert \S*absent\.pem: cannot read it \(ENOENT\)/],
      [['--tls-cert', junk, '--tls-key', file('server-key.pem')], /--tls-cert \S*junk\.pem: not a PEM certificate/],
      [['--tls-cert', file('server.pem'), '--tls-key', junk], /--tls-key \S*junk\.pem: not a PEM private key/],
      [['--tls-cert', file('server.pem'), '--tls-key', file('ca-key.pem')], /--tls-key \S*ca-key\.pem is not the key of --tls-cert \S*server\.pem/],
      [['--tls-cert', file('server.pem')], /give --tls-cert and --tls-key together/],
      [['--tls-cert', file('server.pem'), '--tls-key', file('server-key.pem'), '--tls-client-ca', junk], /--tls-client-ca \S*junk\.pem: not a PEM certificate/],
    ];
    for (const [args, message] of cases) {
      const r = await serve(...args);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(r.stderr).toMatch(message);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    }
  });
});

/** Waits (up to 10 s) for a line of the child's stderr that matches, and returns it. */
async function waitForStderr(child: ChildServer, pattern: RegExp): Promise<string> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const line = child.stderr().split('\n').find((l) => pattern.test(l));
    if (line !== undefined) return line;
    if (Date.now() > deadline) throw new Error(`no line matching ${pattern} in: ${child.stderr()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
