/**
 * `stowage completion bash|zsh|fish|powershell`: prints a script that completes
 * commands, subcommands and flags. @bomb.sh/tab builds its model from the
 * commander tree and generates the scripts; on each TAB the script runs
 * `stowage complete -- WORDS…` (a hidden command the adapter adds), so the
 * candidates always match the installed version, never a stale copy.
 */
import tab from '@bomb.sh/tab/commander';
import type { Command } from 'commander';

/** Registers last: the adapter walks the command tree as it stands when called. */
export function register(program: Command): void {
  tab(program, { completionCommandName: 'completion' });
  program.commands
    .find((c) => c.name() === 'completion')
    ?.description('print a shell script that completes stowage commands and flags, e.g. source <(stowage completion bash)');
}
