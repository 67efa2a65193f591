/** `stowage bridge …`: what the compute bridge did and why (explain, calls, logs, workers, schedules, functions), cancel and undeploy. */
import type { Command } from 'commander';
import { BridgeAdmin, callLogs, defaultConnection, deleteApp, listDeployedFunctions } from '../client/index.js';
import { callStateName } from '../compute-bridge/types.js';
import type { CallInfo, PlacementDecision } from '../gen/stowage/v1/bridge.js';
import { bytes, printJson } from './output.js';
import { integerArg } from './values.js';

function callJson(c: CallInfo) {
  return {
    callId: c.callId,
    function: c.function?.function,
    module: c.function?.module,
    schedule: c.function?.schedule || undefined,
    state: callStateName(c.state),
    attempt: c.attempt,
    workerId: c.workerId,
    createdAt: new Date(c.createdAtMs).toISOString(),
    finishedAt: c.finishedAtMs ? new Date(c.finishedAtMs).toISOString() : undefined,
    versions: c.versions,
    reads: c.reads,
    error: c.error,
    decisions: c.decisions,
  };
}

function printDecision(d: PlacementDecision): void {
  console.log(`attempt ${d.attempt} -> ${d.workerId} (${d.policy}; waited ${d.waitedMs} ms): ${d.reason}`);
  console.log(`  reads ${bytes(d.readBytes)}`);
  console.log(`  ${'worker'.padEnd(24)} ${'cached'.padStart(12)} ${'share'.padStart(6)}  load`);
  for (const c of [...d.candidates].sort((a, b) => b.cachedBytes - a.cachedBytes)) {
    const share = d.readBytes ? `${Math.round((100 * c.cachedBytes) / d.readBytes)}%` : '-';
    const mark = c.workerId === d.workerId ? ' <-' : '';
    console.log(`  ${c.workerId.padEnd(24)} ${bytes(c.cachedBytes).padStart(12)} ${share.padStart(6)}  ${c.running}/${c.slots}${mark}`);
  }
}

export function register(program: Command): void {
  const bridge = program.command('bridge').description('the compute bridge: why calls went where they went, workers, schedules');

  bridge
    .command('explain <call-id>')
    .description('show where each attempt of a call was placed and why (candidates with their cached bytes)')
    .option('--json', 'print JSON')
    .action(async (id: string, flags: { json?: boolean }) => {
      const c = await BridgeAdmin.call(id);
      if (flags.json) return printJson(callJson(c));
      console.log(`call ${c.callId}: ${c.function?.function} (${c.function?.module}), ${callStateName(c.state)}${c.error ? ` (${c.error.code}: ${c.error.message})` : ''}`);
      console.log(`reads: ${c.reads.join(', ') || 'nothing declared'}; versions: ${Object.entries(c.versions).map(([v, n]) => `${v}@${n}`).join(', ') || '-'}`);
      if (!c.decisions.length) console.log('not placed yet');
      for (const d of c.decisions) printDecision(d);
    });

  bridge
    .command('calls')
    .description('recent calls, newest first')
    .option('--schedule <name>', 'only calls started by this schedule')
    .option('--limit <n>', 'at most this many', '50')
    .option('--json', 'print JSON')
    .action(async (flags: { schedule?: string; limit: string; json?: boolean }) => {
      const calls = await BridgeAdmin.calls({ schedule: flags.schedule, limit: integerArg('--limit', flags.limit) });
      if (flags.json) return printJson(calls.map(callJson));
      for (const c of calls) {
        console.log(`${c.callId}  ${callStateName(c.state).padEnd(9)} ${(c.workerId || '-').padEnd(20)} ${c.function?.function} (${c.function?.module})`);
      }
    });

  bridge
    .command('cancel <call-ids...>')
    .description('cancel queued or running calls: each fails with CANCELLED, and the function process running it is stopped')
    .option('--ignore-finished', 'pass over calls that already finished instead of failing (exit 5)')
    .option('--json', 'print {"cancelled": N}')
    .action(async (ids: string[], flags: { ignoreFinished?: boolean; json?: boolean }) => {
      const cancelled = await BridgeAdmin.cancel(ids, { ignoreFinished: flags.ignoreFinished });
      if (flags.json) return printJson({ cancelled });
      console.log(`cancelled ${cancelled} call${cancelled === 1 ? '' : 's'}${cancelled < ids.length ? ` (${ids.length - cancelled} had already finished)` : ''}`);
    });

  bridge
    .command('logs <call-id>')
    .description("what a call's function wrote to stdout and stderr (the newest 1 MiB is kept while its result is)")
    .option('-f, --follow', 'go on with new output until the call finishes')
    .option('--json', 'print JSON Lines: {stream, at, attempt, text} per run of output')
    .action(async (id: string, flags: { follow?: boolean; json?: boolean }) => {
      for await (const e of callLogs(defaultConnection(), id, { follow: flags.follow })) {
        if (!flags.json) {
          process.stdout.write(e.data);
          continue;
        }
        const line = { stream: e.stream, at: new Date(e.atMs).toISOString(), attempt: e.attempt, text: e.data.toString('utf8'), ...(e.droppedBytes ? { droppedBytes: e.droppedBytes } : {}) };
        process.stdout.write(`${JSON.stringify(line)}\n`);
      }
    });

  bridge
    .command('workers')
    .description('workers registered with the bridge')
    .option('--json', 'print JSON')
    .action(async (flags: { json?: boolean }) => {
      const workers = await BridgeAdmin.workers();
      if (flags.json) return printJson(workers);
      for (const w of workers) console.log(`${w.workerId.padEnd(24)} ${w.host.padEnd(16)} running ${w.running}/${w.slots}  cached chunks ${w.cachedChunks}${w.containers ? '  containers' : ''}`);
    });

  bridge
    .command('schedules')
    .description('registered schedules (stowage deploy registers them)')
    .option('--json', 'print JSON')
    .action(async (flags: { json?: boolean }) => {
      const list = await BridgeAdmin.schedules();
      if (flags.json) return printJson(list.map((s) => ({ name: s.name, cron: s.cron, timezone: s.timezone || undefined, function: s.function?.function, module: s.function?.module, nextRun: s.nextRunMs ? new Date(s.nextRunMs).toISOString() : undefined })));
      for (const s of list) console.log(`${s.name.padEnd(32)} ${s.cron.padEnd(16)} ${(s.timezone || 'UTC').padEnd(20)} next ${s.nextRunMs ? new Date(s.nextRunMs).toISOString() : '-'}`);
    });

  bridge
    .command('functions')
    .description('deployed functions (stowage deploy registers them; call one with: stowage run APP/FUNCTION)')
    .option('--app <name>', "only this app's")
    .option('--json', 'print JSON')
    .action(async (flags: { app?: string; json?: boolean }) => {
      const list = await listDeployedFunctions({ app: flags.app });
      const rows = list.map((f) => ({
        name: `${f.app}/${f.name}`,
        module: f.function?.module,
        volumes: f.function?.volumes,
        reads: f.function?.reads,
        timeoutMs: f.function?.timeoutMs || undefined,
        retries: f.function?.retries || undefined,
        cron: f.cron || undefined,
        timezone: f.timezone || undefined,
        deployedAt: new Date(f.deployedAtMs).toISOString(),
      }));
      if (flags.json) return printJson(rows);
      for (const r of rows) console.log(`${r.name.padEnd(40)} ${(r.module ?? '').padEnd(20)} ${r.cron ? `${r.cron}${r.timezone ? ` (${r.timezone})` : ''}` : '-'}  deployed ${r.deployedAt}`);
    });

  bridge
    .command('undeploy <app>')
    .description("remove an app's deployed functions and their schedules")
    .action(async (app: string) => {
      const removed = await deleteApp(app);
      console.log(`undeployed ${app}: ${removed.join(', ') || 'no functions'}`);
    });

  bridge
    .command('unschedule <name>')
    .description('delete a schedule')
    .action(async (name: string) => {
      await BridgeAdmin.deleteSchedule(name);
      console.log(`deleted schedule ${name}`);
    });
}
