/**
 * `stowage dict …` and `stowage queue …` as a user runs them: the built
 * command in its own process, against an in-process server found through
 * STOWAGE_SERVER / STOWAGE_TOKEN, checked against the SDK both ways.
 * Needs `npm run build` first (bin/stowage.js loads dist/).
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Dict, NotFoundError, Queue } from '../src/client/index.js';
import { removeDir, runCli, startStowage, uniqueName, type CliResult, type Stowage } from './support/processes.js';

interface DictJson {
  name: string;
  createdAt: string;
  idleTimeoutMs: number;
}
interface QueueJson {
  name: string;
  maxSize: number;
  maxDeliveries: number;
  idleTimeoutMs: number;
}

describe('stowage dict and queue (CLI)', () => {
  let stowage: Stowage;
  let env: Record<string, string>;
  const dicts: string[] = [];
  const queues: string[] = [];

  const cli = (args: string[]) => runCli(args, env);
  /** Runs a command that must succeed; the assertion shows its stderr when it does not. */
  async function ok(args: string[]): Promise<CliResult> {
    const r = await cli(args);
    expect(r.code, `stowage ${args.join(' ')}: ${r.stderr}`).toBe(0);
    return r;
  }
  /** Runs a command that must fail with `code`, saying something on stderr and nothing on stdout. */
  async function fails(code: number, args: string[]): Promise<string> {
    const r = await cli(args);
    expect(r.code, `stowage ${args.join(' ')}: ${r.stderr}`).toBe(code);
    expect(r.stdout).toBe('');
    return r.stderr;
  }
  const lines = (r: CliResult) => r.stdout.split('\n').filter((l) => l !== '');
  const jsonLines = (r: CliResult) => lines(r).map((l) => JSON.parse(l) as unknown);
  const conn = () => ({ connection: stowage.connection });

  async function newDict(...flags: string[]): Promise<string> {
    const name = uniqueName('dict');
    dicts.push(name);
    expect((await ok(['dict', 'create', name, ...flags])).stdout).toContain(`created dict ${name}`);
    return name;
  }
  async function newQueue(...flags: string[]): Promise<string> {
    const name = uniqueName('queue');
    queues.push(name);
    expect((await ok(['queue', 'create', name, ...flags])).stdout).toContain(`created queue ${name}`);
    return name;
  }

  beforeAll(async () => {
    stowage = await startStowage();
    env = { STOWAGE_SERVER: stowage.server.address, STOWAGE_TOKEN: stowage.server.token };
  });
  afterEach(async () => {
    const gone = (err: unknown) => {
      if (!(err instanceof NotFoundError)) throw err;
    };
    await Promise.all([
      ...dicts.splice(0).map((n) => Dict.delete(n, conn()).catch(gone)),
      ...queues.splice(0).map((n) => Queue.delete(n, conn()).catch(gone)),
    ]);
  });
  afterAll(async () => {
    await stowage?.stop();
    if (stowage) removeDir(stowage.dataDir);
  });

  it('creates, lists and deletes dicts, with exit codes for a duplicate, a bad name, a bad flag and an unknown dict', async () => {
    const name = await newDict('--idle-timeout', '600000');
    const missing = uniqueName('missing');
    const [again, badName, badTimeout, unknown, listed, table, noYes] = await Promise.all([
      fails(4, ['dict', 'create', name]),
      fails(2, ['dict', 'create', 'bad name!']),
      fails(2, ['dict', 'create', uniqueName(), '--idle-timeout', 'soon']),
      fails(3, ['dict', 'get', missing, 'k']),
      ok(['dict', 'list', '--json']),
      ok(['dict', 'list']),
      fails(2, ['dict', 'delete', name]),
    ]);
    expect(again).toContain(name);
    expect(badName).toContain('invalid dict name');
    expect(badTimeout).toContain('--idle-timeout');
    expect(unknown).toContain(`stowage dict create ${missing}`);
    expect(noYes).toContain('--yes');
    const info = (JSON.parse(listed.stdout) as DictJson[]).find((d) => d.name === name);
    expect(info).toMatchObject({ name, idleTimeoutMs: 600000 });
    expect(Number.isNaN(Date.parse(info!.createdAt))).toBe(false);
    expect(table.stdout).toMatch(new RegExp(`${name}\\s+\\S+Z\\s+600000ms`));

    expect((await ok(['dict', 'delete', name, '--yes'])).stdout).toContain(`deleted dict ${name}`);
    expect((await Dict.list(conn())).map((d) => d.name)).not.toContain(name);
    expect(await fails(3, ['dict', 'delete', name, '--yes'])).toContain(`stowage dict create ${name}`);
  });

  it('puts, gets, counts, increments and clears keys', async () => {
    const name = await newDict();
    const [plain, json, ttl] = await Promise.all([
      ok(['dict', 'put', name, 'greeting', 'hello']),
      ok(['dict', 'put', name, 'config', '{"epoch":3,"tags":["a"]}', '--json-value', '--json']),
      ok(['dict', 'put', name, 'short', 'lived', '--ttl', '60000']),
    ]);
    expect(plain.stdout).toContain(`stored "greeting" in ${name}`);
    expect(JSON.parse(json.stdout)).toEqual({ stored: true });
    expect(ttl.stdout).toContain('stored');

    const [skipped, skippedJson, got, gotJson, gotObject, missingKey, badTtl, badJson, badBy, len0] = await Promise.all([
      ok(['dict', 'put', name, 'greeting', 'other', '--skip-if-exists']),
      ok(['dict', 'put', name, 'greeting', 'other', '--skip-if-exists', '--json']),
      ok(['dict', 'get', name, 'greeting']),
      ok(['dict', 'get', name, 'greeting', '--json']),
      ok(['dict', 'get', name, 'config']),
      fails(3, ['dict', 'get', name, 'nope']),
      fails(2, ['dict', 'put', name, 'x', 'y', '--ttl', 'abc']),
      fails(2, ['dict', 'put', name, 'x', '{not json', '--json-value']),
      fails(2, ['dict', 'incr', name, 'n', '1.5']),
      ok(['dict', 'len', name]),
    ]);
    expect(skipped.stdout).toContain('not stored');
    expect(JSON.parse(skippedJson.stdout)).toEqual({ stored: false });
    // Strings print as JSON too, so output is unambiguous.
    expect(got.stdout).toBe('"hello"\n');
    expect(JSON.parse(gotJson.stdout)).toMatchObject({ key: 'greeting', value: 'hello' });
    expect(JSON.parse(gotObject.stdout)).toEqual({ epoch: 3, tags: ['a'] });
    expect(missingKey).toContain('"nope" is not in dict');
    expect(badTtl).toContain('--ttl');
    expect(badJson).toContain('not valid JSON');
    expect(badBy).toContain('BY');
    expect(len0.stdout).toBe('3\n');

    const d = await Dict.fromName<string, unknown>(name, conn());
    // Nothing was written by the failed puts.
    expect(await d.contains('x')).toBe(false);

    const [up, down] = await Promise.all([ok(['dict', 'incr', name, 'n']), ok(['dict', 'incr', name, 'm', '-5'])]);
    expect([up.stdout, down.stdout]).toEqual(['1\n', '-5\n']);
    expect((await ok(['dict', 'incr', name, 'n', '41'])).stdout).toBe('42\n');
    expect(await d.get('n')).toBe(42);

    const [text, jsonl, lenJson] = await Promise.all([ok(['dict', 'items', name]), ok(['dict', 'items', name, '--json']), ok(['dict', 'len', name, '--json'])]);
    expect(lines(text)).toContain('"greeting"\t"hello"');
    expect(jsonLines(jsonl)).toEqual(
      expect.arrayContaining([
        { key: 'greeting', value: 'hello' },
        { key: 'config', value: { epoch: 3, tags: ['a'] } },
        { key: 'n', value: 42 },
      ]),
    );
    expect(jsonLines(jsonl)).toHaveLength(5);
    expect(JSON.parse(lenJson.stdout)).toEqual({ len: 5 });

    expect((await ok(['dict', 'clear', name, '--yes'])).stdout).toContain(`cleared dict ${name}`);
    expect(await d.len()).toBe(0);
  });

  it('reads what the SDK wrote and the SDK reads what it wrote, bytes included, over more than one page', async () => {
    const name = await newDict();
    const d = await Dict.fromName<string, unknown>(name, conn());
    const many = Array.from({ length: 2500 }, (_, i) => [`k${i}`, i] as const);
    await d.update([...many, ['blob', new Uint8Array([0, 1, 255])], ['obj', { a: [1, null, 'x'] }], ['str', 'from sdk']]);

    const [str, obj, blob, items] = await Promise.all([
      ok(['dict', 'get', name, 'str']),
      ok(['dict', 'get', name, 'obj']),
      ok(['dict', 'get', name, 'blob']),
      ok(['dict', 'items', name, '--json']),
    ]);
    expect(JSON.parse(str.stdout)).toBe('from sdk');
    expect(JSON.parse(obj.stdout)).toEqual({ a: [1, null, 'x'] });
    expect(JSON.parse(blob.stdout)).toEqual({ $base64: Buffer.from([0, 1, 255]).toString('base64') });
    const all = jsonLines(items) as { key: string; value: unknown }[];
    expect(all).toHaveLength(2503);
    expect(new Set(all.map((e) => e.key)).size).toBe(2503);

    await Promise.all([
      ok(['dict', 'put', name, 'cli-str', '42']),
      ok(['dict', 'put', name, 'cli-num', '42', '--json-value']),
      ok(['dict', 'put', name, 'cli-bytes', blob.stdout.trim(), '--json-value']),
    ]);
    expect(await d.getMany(['cli-str', 'cli-num'])).toEqual(['42', 42]);
    expect(Buffer.from((await d.get('cli-bytes')) as Uint8Array)).toEqual(Buffer.from([0, 1, 255]));
  });

  it('creates, lists and deletes queues, with exit codes for a duplicate, bad flags and an unknown queue', async () => {
    const name = await newQueue('--max-size', '50', '--max-deliveries', '3', '--idle-timeout', '600000');
    const missing = uniqueName('missing');
    const [again, badSize, badName, unknown, listed, table] = await Promise.all([
      fails(4, ['queue', 'create', name]),
      fails(2, ['queue', 'create', uniqueName(), '--max-size', '0']),
      fails(2, ['queue', 'create', '../q']),
      fails(3, ['queue', 'get', missing, '--no-block']),
      ok(['queue', 'list', '--json']),
      ok(['queue', 'list']),
    ]);
    expect(again).toContain(name);
    expect(badSize).toContain('--max-size');
    expect(badName).toContain('invalid queue name');
    expect(unknown).toContain(`stowage queue create ${missing}`);
    expect((JSON.parse(listed.stdout) as QueueJson[]).find((q) => q.name === name)).toMatchObject({
      maxSize: 50,
      maxDeliveries: 3,
      idleTimeoutMs: 600000,
    });
    expect(table.stdout).toMatch(new RegExp(`${name}\\s+50\\s+3\\s+600000ms`));

    expect((await ok(['queue', 'delete', name, '-y'])).stdout).toContain(`deleted queue ${name}`);
    await fails(3, ['queue', 'len', name]);
  });

  it('puts and gets in FIFO order, peeks, counts and clears partitions, and returns empty without waiting forever', async () => {
    const name = await newQueue();
    expect((await ok(['queue', 'put', name, 'a', 'b', 'c'])).stdout).toContain(`put 3 items on ${name}`);
    await Promise.all([
      ok(['queue', 'put', name, '{"n":4}', '5', '--json-value']),
      ok(['queue', 'put', name, 'p1', 'p2', '--partition', 'side']),
    ]);
    const [badJson, badN, both] = await Promise.all([
      fails(2, ['queue', 'put', name, '[1,', '--json-value']),
      fails(2, ['queue', 'get', name, '-n', 'many']),
      fails(2, ['queue', 'len', name, '--partition', 'side', '--total']),
    ]);
    expect(badJson).toContain('not valid JSON');
    expect(badN).toContain('-n');
    expect(both).toContain('--total');

    const [peek1, peek3, peekSide, len, lenSide, total] = await Promise.all([
      ok(['queue', 'peek', name]),
      ok(['queue', 'peek', name, '-n', '3', '--json']),
      ok(['queue', 'peek', name, '--partition', 'side', '-n', '10']),
      ok(['queue', 'len', name]),
      ok(['queue', 'len', name, '--partition', 'side', '--json']),
      ok(['queue', 'len', name, '--total']),
    ]);
    expect(peek1.stdout).toBe('"a"\n');
    expect(JSON.parse(peek3.stdout)).toEqual(['a', 'b', 'c']);
    expect(lines(peekSide)).toEqual(['"p1"', '"p2"']);
    expect([len.stdout, JSON.parse(lenSide.stdout), total.stdout]).toEqual(['5\n', { len: 2 }, '7\n']);

    // FIFO: one, then two, then the rest; the JSON values come back as put.
    expect((await ok(['queue', 'get', name])).stdout).toBe('"a"\n');
    expect(lines(await ok(['queue', 'get', name, '-n', '2']))).toEqual(['"b"', '"c"']);
    expect(JSON.parse((await ok(['queue', 'get', name, '-n', '10', '--json'])).stdout)).toEqual([{ n: 4 }, 5]);

    const started = performance.now();
    const [noBlock, noBlockJson, timedOut] = await Promise.all([
      ok(['queue', 'get', name, '--no-block']),
      ok(['queue', 'get', name, '--no-block', '--json']),
      ok(['queue', 'get', name, '--timeout', '200']),
    ]);
    expect(noBlock.stdout).toBe('');
    expect(JSON.parse(noBlockJson.stdout)).toEqual([]);
    expect(timedOut.stdout).toBe('');
    expect(performance.now() - started).toBeLessThan(10_000);

    const q = await Queue.fromName(name, conn());
    await Promise.all([q.put('left'), q.put('again', { partition: 'side' })]);
    expect((await ok(['queue', 'clear', name, '--partition', 'side', '--yes'])).stdout).toContain('cleared partition side');
    expect([await q.len({ partition: 'side' }), await q.len()]).toEqual([0, 1]);
    await q.put('again', { partition: 'side' });
    expect((await ok(['queue', 'clear', name, '--all', '-y'])).stdout).toContain('cleared every partition');
    expect(await q.len({ total: true })).toBe(0);
  });

  it('fails at once on a full queue with --no-block, and interoperates with the SDK both ways', async () => {
    const name = await newQueue('--max-size', '2');
    const q = await Queue.fromName(name, conn());
    await q.putMany([{ from: 'sdk' }, new Uint8Array([7, 8])]);
    const full = await fails(5, ['queue', 'put', name, 'x', '--no-block']);
    expect(full).not.toBe('');

    expect(jsonLines(await ok(['queue', 'get', name, '-n', '2']))).toEqual([{ from: 'sdk' }, { $base64: Buffer.from([7, 8]).toString('base64') }]);

    await ok(['queue', 'put', name, '"from cli"', '[1,2]', '--json-value', '--partition', 'p']);
    expect(await q.getMany(2, { partition: 'p', block: false })).toEqual(['from cli', [1, 2]]);
  });
});
