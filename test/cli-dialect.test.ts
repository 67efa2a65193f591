/**
 * The CLI speaks Modal's dialect (issue 14): `volume cp -r`, `delete
 * --allow-missing`, `dict items NAME N`, `queue peek NAME N`, `-p`/`-t`/`-a`
 * on the queue commands, and one duration syntax (500ms, 30s, 5m, 1h; plain
 * numbers are milliseconds) for every flag that takes a time. The built
 * command in its own process, against an in-process server; bad input exits 2,
 * names what was wrong, and changes nothing.
 * Needs `npm run build` first (bin/stowage.js loads dist/).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Dict, NotFoundError, Queue, Volume } from '../src/client/index.js';
import { removeDir, runCli, startStowage, tempDir, uniqueName, type CliResult, type Stowage } from './support/processes.js';

interface FileJson {
  path: string;
  type: 'file' | 'directory';
}
const DURATION_EXAMPLES = 'examples: 500ms, 30s, 5m, 1h';

describe('stowage CLI in the words of modal', () => {
  let stowage: Stowage;
  let env: Record<string, string>;
  let work: string;
  const made = { volumes: [] as string[], dicts: [] as string[], queues: [] as string[] };

  const cli = (args: string[]) => runCli(args, env);
  async function ok(args: string[]): Promise<CliResult> {
    const r = await cli(args);
    expect(r.code, `stowage ${args.join(' ')}: ${r.stderr}`).toBe(0);
    return r;
  }
  /** A command that must fail with `code`, saying so on stderr and nothing on stdout. */
  async function fails(code: number, args: string[]): Promise<string> {
    const r = await cli(args);
    expect(r.code, `stowage ${args.join(' ')}: ${r.stderr}`).toBe(code);
    expect(r.stdout).toBe('');
    return r.stderr;
  }
  const lines = (r: CliResult) => r.stdout.split('\n').filter((l) => l !== '');
  const conn = () => ({ connection: stowage.connection });
  const paths = (r: CliResult) => (JSON.parse(r.stdout) as FileJson[]).map((f) => `${f.type === 'directory' ? 'dir' : 'file'} ${f.path}`).sort();

  beforeAll(async () => {
    stowage = await startStowage();
    env = { STOWAGE_SERVER: stowage.server.address, STOWAGE_TOKEN: stowage.server.token };
    work = tempDir('cli-dialect');
  });
  afterAll(async () => {
    const gone = (err: unknown) => {
      if (!(err instanceof NotFoundError)) throw err;
    };
    if (stowage) {
      await Promise.all([
        ...made.volumes.map((n) => Volume.delete(n, conn()).catch(gone)),
        ...made.dicts.map((n) => Dict.delete(n, conn()).catch(gone)),
        ...made.queues.map((n) => Queue.delete(n, conn()).catch(gone)),
      ]);
    }
    await stowage?.stop();
    for (const dir of [work, stowage?.dataDir]) if (dir) removeDir(dir);
  });

  it('volume cp copies directories only with -r, refusing the whole copy without it', async () => {
    const name = uniqueName('vol');
    made.volumes.push(name);
    const local = join(work, 'tree');
    mkdirSync(join(local, 'sub'), { recursive: true });
    writeFileSync(join(local, 'one.txt'), 'one');
    writeFileSync(join(local, 'sub', 'two.txt'), 'two');
    writeFileSync(join(work, 'a.txt'), 'alpha');
    await ok(['volume', 'create', name]);
    await ok(['volume', 'put', name, local, 'dir']);
    await ok(['volume', 'put', name, join(work, 'a.txt'), 'a.txt']);

    // A file source and a directory source: without -r nothing at all is copied.
    const refused = await fails(5, ['volume', 'cp', name, 'a.txt', 'dir', 'copies/']);
    expect(refused).toContain('"dir"');
    expect(refused).toContain(`stowage volume cp -r ${name} dir`);
    expect(JSON.parse((await ok(['volume', 'versions', name, '--json'])).stdout)).toHaveLength(2);
    await fails(3, ['volume', 'ls', name, 'copies']);

    // Files alone need no -r; -r and --recursive copy directories as modal volume cp does.
    await ok(['volume', 'cp', name, 'a.txt', 'b.txt']);
    await ok(['volume', 'cp', '-r', name, 'dir', 'dir2']);
    await ok(['volume', 'cp', name, '--recursive', 'a.txt', 'dir/sub', 'copies/']);
    const [dir2, copies, b] = await Promise.all([
      ok(['volume', 'ls', '-r', name, 'dir2', '--json']),
      ok(['volume', 'ls', '-r', name, 'copies', '--json']),
      ok(['volume', 'get', name, 'b.txt', '-']),
    ]);
    expect(paths(dir2)).toEqual(['dir dir2/sub', 'file dir2/one.txt', 'file dir2/sub/two.txt']);
    expect(paths(copies)).toEqual(['dir copies/sub', 'file copies/a.txt', 'file copies/sub/two.txt']);
    expect(b.stdout).toBe('alpha');
    // The global -V/--version did not take the --version of a subcommand.
    expect(paths(await ok(['volume', 'ls', name, '--version', '2', '--json']))).toEqual(['dir dir', 'file a.txt']);
  });

  it('delete --allow-missing succeeds for a volume, dict or queue that does not exist, and still deletes one that does', async () => {
    const missing = uniqueName('missing');
    for (const kind of ['volume', 'dict', 'queue']) {
      expect(await fails(3, [kind, 'delete', missing, '--yes'])).toContain(missing);
      const r = await ok([kind, 'delete', missing, '--allow-missing']);
      expect(r.stdout).toBe(`${kind} ${missing} does not exist; nothing to delete\n`);
    }
    const name = uniqueName('del');
    made.volumes.push(name);
    await ok(['volume', 'create', name]);
    // --allow-missing does not stand in for --yes.
    expect(await fails(2, ['volume', 'delete', name, '--allow-missing'])).toContain('--yes');
    expect((await ok(['volume', 'delete', name, '--allow-missing', '-y'])).stdout).toContain(`deleted volume ${name}`);
    expect((await Volume.list(conn())).map((v) => v.name)).not.toContain(name);
  });

  it('dict items NAME N prints at most N items; N must be a whole number', async () => {
    const name = uniqueName('dict');
    made.dicts.push(name);
    await ok(['dict', 'create', name, '--idle-timeout', '10m']);
    const d = await Dict.fromName<string, number>(name, conn());
    await d.update(Array.from({ length: 5 }, (_, i) => [`k${i}`, i] as const));

    const [two, twoJson, all, more, bad, zero] = await Promise.all([
      ok(['dict', 'items', name, '2']),
      ok(['dict', 'items', name, '2', '--json']),
      ok(['dict', 'items', name]),
      ok(['dict', 'items', name, '10']),
      fails(2, ['dict', 'items', name, 'abc']),
      fails(2, ['dict', 'items', name, '0']),
    ]);
    expect(lines(two)).toHaveLength(2);
    expect(lines(twoJson).map((l) => Object.keys(JSON.parse(l) as object))).toEqual([
      ['key', 'value'],
      ['key', 'value'],
    ]);
    expect(lines(all)).toHaveLength(5);
    expect(lines(more)).toHaveLength(5);
    expect(bad).toContain('N "abc"');
    expect(zero).toContain('N "0"');
    const info = (await Dict.list(conn())).find((x) => x.name === name);
    expect(info?.idleTimeoutMs).toBe(600_000);
  });

  it('queue peek NAME N, and -p/-t/-a on put, get, peek, len and clear', async () => {
    const name = uniqueName('queue');
    made.queues.push(name);
    await ok(['queue', 'create', name, '--idle-timeout', '1h']);
    await ok(['queue', 'put', name, 'a', 'b', 'c']);
    expect((await ok(['queue', 'put', name, '-p', 'side', 'p1', 'p2', 'p3'])).stdout).toContain('(partition side)');

    const [peek2, peekN, peek1, peekSide, both, badN, len, lenSide, total, totalLong] = await Promise.all([
      ok(['queue', 'peek', name, '2']),
      ok(['queue', 'peek', name, '-n', '2']),
      ok(['queue', 'peek', name]),
      ok(['queue', 'peek', name, '2', '-p', 'side', '--json']),
      fails(2, ['queue', 'peek', name, '2', '-n', '2']),
      fails(2, ['queue', 'peek', name, 'abc']),
      ok(['queue', 'len', name]),
      ok(['queue', 'len', name, '-p', 'side']),
      ok(['queue', 'len', name, '-t']),
      ok(['queue', 'len', name, '--total']),
    ]);
    expect(lines(peek2)).toEqual(['"a"', '"b"']);
    expect(lines(peekN)).toEqual(['"a"', '"b"']);
    expect(lines(peek1)).toEqual(['"a"']);
    expect(JSON.parse(peekSide.stdout)).toEqual(['p1', 'p2']);
    expect(both).toContain('not both');
    expect(badN).toContain('N "abc"');
    expect([len.stdout, lenSide.stdout, total.stdout, totalLong.stdout]).toEqual(['3\n', '3\n', '6\n', '6\n']);
    expect(await fails(2, ['queue', 'len', name, '-p', 'side', '-t'])).toContain('--total');

    // A duration for --timeout: the item is there, so this returns at once.
    expect(lines(await ok(['queue', 'get', name, '-p', 'side', '--timeout', '30s']))).toEqual(['"p1"']);
    expect(lines(await ok(['queue', 'get', name, '--partition', 'side', '--timeout', '5000']))).toEqual(['"p2"']);

    expect((await ok(['queue', 'clear', name, '-p', 'side', '-y'])).stdout).toContain('cleared partition side');
    const q = await Queue.fromName(name, conn());
    expect([await q.len({ partition: 'side' }), await q.len()]).toEqual([0, 3]);
    await q.put('again', { partition: 'side' });
    expect((await ok(['queue', 'clear', name, '-a', '-y'])).stdout).toContain('cleared every partition');
    expect(await q.len({ total: true })).toBe(0);
    expect((await Queue.list(conn())).find((x) => x.name === name)?.idleTimeoutMs).toBe(3_600_000);
  });

  it('every flag that takes a time refuses what is not a duration, naming the flag, with examples, and creates nothing', async () => {
    const d = uniqueName('dict');
    const q = uniqueName('queue');
    made.dicts.push(d);
    made.queues.push(q);
    await Promise.all([ok(['dict', 'create', d]), ok(['queue', 'create', q])]);
    const newDict = uniqueName('never');
    const newQueue = uniqueName('never');
    const cases: [string[], string][] = [
      [['dict', 'create', newDict, '--idle-timeout', 'soon'], '--idle-timeout'],
      [['dict', 'put', d, 'k', 'v', '--ttl', '5 minutes'], '--ttl'],
      [['queue', 'create', newQueue, '--idle-timeout', '1w'], '--idle-timeout'],
      [['queue', 'put', q, 'x', '--timeout', '-1s'], '--timeout'],
      [['queue', 'get', q, '--timeout', 'soon'], '--timeout'],
      [['serve', '--data-dir', join(work, 'never-served'), '--port', '0', '--locality-wait', 'soon'], '--locality-wait'],
      [['worker', '--idle-timeout', 'soon'], '--idle-timeout'],
      [['mount', d, join(work, 'never-mounted'), '--report-interval', 'soon'], '--report-interval'],
      [['run', join(work, 'none.mjs#f'), '--timeout', 'soon'], '--timeout'],
      [['volume', 'gc', '--grace', 'soon'], '--grace'],
      [['token', 'create', '--scope', 'volume:x:read', '--ttl', 'soon'], '--ttl'],
    ];
    const errors = await Promise.all(cases.map(([args]) => fails(2, args)));
    errors.forEach((stderr, i) => {
      const [args, flag] = cases[i]!;
      expect(stderr, args.join(' ')).toContain(`${flag} "${args[args.length - 1]}" is not a duration`);
      expect(stderr, args.join(' ')).toContain(DURATION_EXAMPLES);
    });
    // 0 is refused where it would not mean "never".
    const [zeroTtl, zeroTimeout] = await Promise.all([
      fails(2, ['dict', 'put', d, 'k', 'v', '--ttl', '0']),
      fails(2, ['queue', 'get', q, '--timeout', '0s']),
    ]);
    expect(zeroTtl).toContain('--ttl "0": must be at least 1ms');
    expect(zeroTimeout).toContain('--timeout "0s": must be at least 1ms');

    expect(await (await Dict.fromName(d, conn())).len()).toBe(0);
    expect(await (await Queue.fromName(q, conn())).len({ total: true })).toBe(0);
    expect((await Dict.list(conn())).map((x) => x.name)).not.toContain(newDict);
    expect((await Queue.list(conn())).map((x) => x.name)).not.toContain(newQueue);

    // Durations that parse do what they say.
    expect((await ok(['dict', 'put', d, 'k', 'v', '--ttl', '1h'])).stdout).toContain('stored');
    expect(await (await Dict.fromName<string, string>(d, conn())).get('k')).toBe('v');
    expect((await ok(['queue', 'get', q, '--timeout', '200ms'])).stdout).toBe('');
  });
});
