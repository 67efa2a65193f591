/**
 * Node 20 reached end of life in April 2026, and AWS SDK releases from January
 * 2027 need Node 22 (issue 12, "Node.js"). On Node < 22 the CLI says so in one
 * line on stderr, once per process tree, never on stdout; the AWS SDK's own
 * warning is not hidden. On Node 22 and newer neither appears.
 */
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, removeDir, spawnStowage, startS3rver, startStowage, tempDir, type S3Server, type Stowage } from './support/processes.js';

const OLD_NODE = Number(process.versions.node.split('.')[0]) < 22;
const NOTICE = /^stowage: Node v\d+\.\d+\.\d+ is past its end of life \(Node 20 reached it in April 2026\); AWS SDK releases from January 2027 need Node 22 or newer: use Node 22 or 24$/;
const SDK_WARNING = /NodeVersionSupportWarning: The AWS SDK for JavaScript \(v3\)/g;

/** The CLI's raw output (runCli leaves out the notices this test is about). */
function cli(args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

describe(`the CLI on Node ${process.version}`, () => {
  let stowage: Stowage;
  let env: Record<string, string>;
  beforeAll(async () => {
    stowage = await startStowage();
    env = { STOWAGE_SERVER: stowage.server.address, STOWAGE_TOKEN: stowage.server.token };
  });
  afterAll(async () => {
    await stowage?.stop();
    if (stowage) removeDir(stowage.dataDir);
  });

  it(OLD_NODE ? 'says once, on stderr, that this Node is past its end of life; --json stdout stays JSON' : 'prints no Node version notice', async () => {
    const r = await cli(['dict', 'list', '--json'], env);
    expect(r.code, r.stderr).toBe(0);
    expect(() => JSON.parse(r.stdout) as unknown).not.toThrow();
    const lines = r.stderr.split('\n').filter((l) => l !== '');
    if (OLD_NODE) expect(lines).toEqual([expect.stringMatching(NOTICE)]);
    else expect(lines).toEqual([]);
  });

  it('leaves the notice to the stowage process that started this one (STOWAGE_NODE_WARNED)', async () => {
    const r = await cli(['dict', 'list', '--json'], { ...env, STOWAGE_NODE_WARNED: '1' });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
  });
});

describe(`stowage serve on S3, Node ${process.version}`, () => {
  let s3: S3Server;
  beforeAll(async () => {
    s3 = await startS3rver();
  });
  afterAll(async () => {
    await s3?.stop();
  });

  it(OLD_NODE ? "does not hide the AWS SDK's Node version warning" : 'prints no Node version warning', async () => {
    const dataDir = tempDir('node-version-s3');
    const server = await spawnStowage(dataDir, ['--s3-endpoint', s3.endpoint, '--s3-bucket', s3.bucket, '--s3-region', 'us-east-1'], {
      AWS_ACCESS_KEY_ID: 'S3RVER',
      AWS_SECRET_ACCESS_KEY: 'S3RVER',
    });
    try {
      const r = await cli(['dict', 'list'], { STOWAGE_SERVER: server.address, STOWAGE_TOKEN: server.token });
      expect(r.code, r.stderr).toBe(0);
      await server.kill('SIGTERM');
      // The raw stderr: ChildServer.stderr() leaves the notices out.
      const raw = server.rawStderr();
      expect(raw.match(SDK_WARNING) ?? []).toHaveLength(OLD_NODE ? 1 : 0);
      expect(raw.split('\n').filter((l) => NOTICE.test(l))).toHaveLength(OLD_NODE ? 1 : 0);
    } finally {
      await server.kill();
      removeDir(dataDir);
    }
  });
});
