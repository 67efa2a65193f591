/**
 * How `--redis-url`, `--redis-cluster` and `--redis-wait` are read
 * (common/redis-connect.ts, common/redis-commands.ts), and how such a URL is
 * redacted for messages; no Redis needed.
 */
import { describe, expect, it } from 'vitest';
import { isStowageError } from '../src/common/errors.js';
import { parseRedisWait } from '../src/common/redis-commands.js';
import { parseRedisUrl } from '../src/common/redis-connect.js';
import { redactUrl } from '../src/common/urls.js';

function refused(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(isStowageError(err, 'INVALID_ARGUMENT'), String(err)).toBe(true);
    return (err as Error).message;
  }
  throw new Error('accepted');
}

describe('--redis-url', () => {
  it('is one Redis for one host, a Cluster for several (JuiceFS style) or with --redis-cluster', () => {
    expect(parseRedisUrl('redis://127.0.0.1:6379/2')).toEqual({
      cluster: false, tls: false, hosts: [{ host: '127.0.0.1', port: 6379 }], username: undefined, password: undefined, db: 2,
    });
    expect(parseRedisUrl('rediss://u:p%40ss@a:7000,b:7001,[::1]:7002')).toEqual({
      cluster: true, tls: true, username: 'u', password: 'p@ss', db: 0,
      hosts: [{ host: 'a', port: 7000 }, { host: 'b', port: 7001 }, { host: '::1', port: 7002 }],
    });
    expect(parseRedisUrl('redis://:secret@h', true)).toMatchObject({ cluster: true, password: 'secret', hosts: [{ host: 'h', port: 6379 }] });
  });

  it('refuses what a Cluster cannot do and malformed URLs, without printing the password', () => {
    expect(refused(() => parseRedisUrl('redis://:pw@a:1,b:2/3'))).toContain('only database 0');
    expect(refused(() => parseRedisUrl('redis://:pw@a:1,b:2/3'))).not.toContain('pw');
    expect(refused(() => parseRedisUrl('http://a:1'))).toContain('redis://');
    expect(refused(() => parseRedisUrl('redis://a:99999'))).toContain('bad port');
  });
});

describe('--redis-wait', () => {
  it('reads N[/TIMEOUT] with the duration parser (default 1 s)', () => {
    expect(parseRedisWait('--redis-wait', '1')).toEqual({ replicas: 1, timeoutMs: 1000 });
    expect(parseRedisWait('--redis-wait', '1/500ms')).toEqual({ replicas: 1, timeoutMs: 500 });
    expect(parseRedisWait('--redis-wait', '2/2s')).toEqual({ replicas: 2, timeoutMs: 2000 });
    expect(parseRedisWait('--redis-wait', '3/250')).toEqual({ replicas: 3, timeoutMs: 250 });
  });

  it('refuses no replicas, a timeout of 0 (WAIT would block forever) and junk', () => {
    for (const bad of ['0', '-1', 'x', '1/', '1/0', '1/2/3', '1/soon']) refused(() => parseRedisWait('--redis-wait', bad));
  });
});

describe('redactUrl', () => {
  it('hides the password of a several-host URL too', () => {
    expect(redactUrl('redis://u:secret@a:1,b:2')).toBe('redis://u:***@a:1,b:2');
    expect(redactUrl('redis://:secret@a:1,b:2/0')).toBe('redis://:***@a:1,b:2/0');
    expect(redactUrl('redis://a:1,b:2')).toBe('redis://a:1,b:2');
  });
});
