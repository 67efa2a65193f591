/**
 * `stowage --version` and `stowage completion bash|zsh|fish` (issue 14). The
 * bash script runs in a real bash with bash-completion loaded, as on a user's
 * machine, finding the built `stowage` on PATH; COMP_WORDS/COMP_CWORD stand for
 * what the user typed before TAB. No server is needed.
 * Needs `npm run build` first (bin/stowage.js loads dist/).
 */
import { execFile } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, ROOT, removeDir, runCli, tempDir } from './support/processes.js';

const run = promisify(execFile);
/** Where Debian's bash-completion puts what a login shell sources (scripts/setup.sh installs it). */
const BASH_COMPLETION = '/usr/share/bash-completion/bash_completion';
const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

describe('stowage --version and shell completion', () => {
  let bin: string;
  let script: string;

  /** The candidates bash offers for `line` (a trailing space: a new word), sorted. */
  async function bashComplete(line: string): Promise<string[]> {
    const words = line.split(' ');
    const body = [
      `source ${quote(BASH_COMPLETION)}`,
      `source ${quote(script)}`,
      `COMP_WORDS=(${words.map(quote).join(' ')})`,
      `COMP_CWORD=${words.length - 1}`,
      `COMP_LINE=${quote(line)}`,
      `COMP_POINT=${line.length}`,
      // compopt complains outside a real completion; the candidates are what counts.
      '__stowage_complete 2>/dev/null',
      `printf '%s\\n' "\${COMPREPLY[@]}"`,
    ].join('\n');
    const { stdout } = await run('bash', ['-c', body], { env: { ...process.env, PATH: `${bin}:${process.env.PATH}` }, timeout: 120_000 });
    return stdout.split('\n').filter((l) => l !== '').sort();
  }

  beforeAll(async () => {
    expect(existsSync(BASH_COMPLETION), `${BASH_COMPLETION} is missing: install bash-completion (scripts/setup.sh does)`).toBe(true);
    bin = tempDir('completion');
    // `stowage` as a user has it on PATH: the script calls it back by that name on each TAB.
    writeFileSync(join(bin, 'stowage'), `#!/bin/sh\nexec ${quote(process.execPath)} ${quote(CLI)} "$@"\n`);
    chmodSync(join(bin, 'stowage'), 0o755);
    const r = await runCli(['completion', 'bash'], {});
    expect(r.code, r.stderr).toBe(0);
    script = join(bin, 'stowage.bash');
    writeFileSync(script, r.stdout);
  });
  afterAll(() => {
    if (bin) removeDir(bin);
  });

  it('prints the package version for --version and -V', async () => {
    const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    const [long, short, help] = await Promise.all([runCli(['--version'], {}), runCli(['-V'], {}), runCli(['--help'], {})]);
    expect([long.code, short.code]).toEqual([0, 0]);
    expect([long.stdout, short.stdout]).toEqual([`${version}\n`, `${version}\n`]);
    expect(help.stdout).toMatch(/-V, --version\s+print stowage's version/);
  });

  it('completes commands, subcommands and flags in bash', async () => {
    const [vol, volume, cpFlags, cpRecursive, lenTotal, shells, nothing] = await Promise.all([
      bashComplete('stowage vol'),
      bashComplete('stowage volume '),
      bashComplete('stowage volume cp -'),
      bashComplete('stowage volume cp --rec'),
      bashComplete('stowage queue len --to'),
      bashComplete('stowage completion '),
      bashComplete('stowage nonsense --zz'),
    ]);
    expect(vol).toEqual(['volume']);
    expect(volume).toEqual(expect.arrayContaining(['cp', 'create', 'delete', 'get', 'list', 'ls', 'put', 'rm', 'versions']));
    // Only what is below `volume`.
    expect(volume).not.toContain('volume');
    expect(volume).not.toContain('serve');
    expect(cpFlags).toEqual(expect.arrayContaining(['-f', '-r']));
    expect(cpRecursive).toEqual(['--recursive']);
    expect(lenTotal).toEqual(['--total']);
    expect(shells).toEqual(['bash', 'fish', 'powershell', 'zsh']);
    expect(nothing).toEqual([]);
  });

  it('prints zsh and fish scripts that call back the same completer, and refuses an unknown shell', async () => {
    const [zsh, fish, candidates, tcsh] = await Promise.all([
      runCli(['completion', 'zsh'], {}),
      runCli(['completion', 'fish'], {}),
      runCli(['complete', '--', 'dict', ''], {}),
      runCli(['completion', 'tcsh'], {}),
    ]);
    expect(zsh.stdout).toMatch(/^#compdef stowage\n/);
    expect(zsh.stdout).toContain('stowage complete --');
    expect(fish.stdout).toContain('complete -c stowage');
    expect(fish.stdout).toContain('stowage complete --');
    // The protocol both use: one candidate a line with its description, then the directive.
    const names = candidates.stdout.split('\n').map((l) => l.split('\t')[0]);
    expect(names).toEqual(expect.arrayContaining(['create', 'get', 'items', 'put', 'delete']));
    expect(candidates.stdout).toMatch(/\n:\d+\n$/);
    expect(tcsh.code).toBe(2);
    expect(tcsh.stderr).toContain("'tcsh' is invalid");
    expect(tcsh.stdout).toBe('');
  });
});
