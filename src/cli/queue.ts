/**
 * `stowage queue …`: a thin layer over the SDK, following `modal queue`.
 *
 * Items given on the command line are strings unless --json-value; items are
 * printed one per line as JSON (bytes as {"$base64": "…"}), or as one JSON
 * array with --json.
 */
import type { Command } from 'commander';
import { InvalidArgumentError, Queue, defaultConnection, type QueueInfo } from '../client/index.js';
import { checkName } from '../common/validate.js';
import {
  ALLOW_MISSING_FLAGS,
  ALLOW_MISSING_HELP,
  allowMissing,
  confirm,
  countArg,
  duration,
  durationArg,
  exitOnClosedStdout,
  formatValue,
  integerArg,
  parseValue,
  printItems,
} from './values.js';
import { printJson } from './output.js';

interface JsonFlag {
  json?: boolean;
}
interface PartitionFlag {
  partition?: string;
}

function queueRow(q: QueueInfo): string {
  return `${q.name.padEnd(24)} ${String(q.maxSize).padStart(9)} ${String(q.maxDeliveries).padStart(14)}  ${duration(q.idleTimeoutMs).padEnd(12)}  ${q.createdAt.toISOString()}`;
}

/** -p, as `modal queue … -p`; the long name stays. */
const PARTITION_FLAGS = '-p, --partition <key>';

/** --timeout waits at most that long; it means nothing with --no-block. */
function waitOptions(flags: { block: boolean; timeout?: string }): { block: boolean; timeoutMs: number | undefined } {
  const timeoutMs = durationArg('--timeout', flags.timeout, 1);
  if (timeoutMs !== undefined && !flags.block) throw new InvalidArgumentError('--timeout and --no-block cannot be used together');
  return { block: flags.block, timeoutMs };
}

export function register(program: Command): void {
  const queue = program.command('queue').description('named FIFO queues shared by many workers');

  queue
    .command('create <name>')
    .description('create a queue')
    .option('--max-size <n>', 'most items held at once, all partitions together (default: the server default)')
    .option('--max-deliveries <n>', 'deliveries in ack mode before an item moves to the dead-letter partition')
    .option('--idle-timeout <duration>', 'delete the queue after this long without use, e.g. 1h, 7d (default: never)')
    .action(async (name: string, flags: { maxSize?: string; maxDeliveries?: string; idleTimeout?: string }) => {
      const req = {
        name: checkName('queue', name),
        existOk: false,
        maxSize: integerArg('--max-size', flags.maxSize) ?? 0,
        maxDeliveries: integerArg('--max-deliveries', flags.maxDeliveries) ?? 0,
        idleTimeoutMs: durationArg('--idle-timeout', flags.idleTimeout) ?? 0,
      };
      const conn = defaultConnection();
      await conn.unary(conn.queues.createQueue.bind(conn.queues), req);
      console.log(`created queue ${name}`);
    });

  queue
    .command('list')
    .description('list queues')
    .option('--json', 'print JSON')
    .action(async (flags: JsonFlag) => {
      const queues = await Queue.list();
      if (flags.json) return printJson(queues);
      console.log(`${'NAME'.padEnd(24)} ${'MAX SIZE'.padStart(9)} ${'MAX DELIVERIES'.padStart(14)}  ${'IDLE TIMEOUT'.padEnd(12)}  CREATED`);
      for (const q of queues) console.log(queueRow(q));
    });

  queue
    .command('put <name> <values...>')
    .description('add items at the end of a partition, in order, all or none (strings unless --json-value)')
    .option(PARTITION_FLAGS, 'a partition key (default: the default partition)')
    .option('--json-value', 'parse each value as JSON ({"$base64": "…"} is bytes)')
    .option('--no-block', 'fail at once (exit 5) if the queue is full, instead of waiting')
    .option('--timeout <duration>', 'wait at most this long for room (then exit 5), e.g. 500ms, 30s')
    .action(async (name: string, raw: string[], flags: PartitionFlag & { jsonValue?: boolean; block: boolean; timeout?: string }) => {
      const wait = waitOptions(flags);
      const values = raw.map((r) => parseValue(r, flags.jsonValue));
      const q = await Queue.fromName(name);
      await q.putMany(values, { partition: flags.partition, ...wait });
      console.log(`put ${values.length} item${values.length === 1 ? '' : 's'} on ${name}${flags.partition ? ` (partition ${flags.partition})` : ''}`);
    });

  queue
    .command('get <name>')
    .description(
      'remove and print up to N items, one per line as JSON; waits for the first item unless --no-block or --timeout. ' +
        'When none comes it prints nothing (--json: []) and exits 0',
    )
    .option('-n <n>', 'most items to get', '1')
    .option(PARTITION_FLAGS, 'a partition key (default: the default partition)')
    .option('--no-block', 'return at once, with what is there')
    .option('--timeout <duration>', 'wait at most this long for the first item, e.g. 500ms, 30s')
    .option('--json', 'print one JSON array')
    .action(async (name: string, flags: JsonFlag & PartitionFlag & { n: string; block: boolean; timeout?: string }) => {
      const n = integerArg('-n', flags.n) ?? 1;
      const wait = waitOptions(flags);
      const q = await Queue.fromName(name);
      await printItems(await q.getMany(n, { partition: flags.partition, ...wait }), flags.json);
    });

  queue
    .command('peek <name> [n]')
    .description('print the first N items (default 1) of a partition without removing them')
    .option('-n <n>', 'most items to print, as N')
    .option(PARTITION_FLAGS, 'a partition key (default: the default partition)')
    .option('--json', 'print one JSON array')
    .action(async (name: string, count: string | undefined, flags: JsonFlag & PartitionFlag & { n?: string }) => {
      const n = countArg(count, flags.n, 1)!;
      exitOnClosedStdout();
      const q = await Queue.fromName(name);
      const items: unknown[] = [];
      for await (const item of q.iterate({ partition: flags.partition })) {
        items.push(item);
        if (items.length >= n) break;
      }
      await printItems(items, flags.json);
    });

  queue
    .command('len <name>')
    .description('print the number of items in a partition (default: the default partition), or in the whole queue')
    .option(PARTITION_FLAGS, 'count this partition')
    .option('-t, --total', 'count every partition')
    .option('--json', 'print {"len": N}')
    .action(async (name: string, flags: JsonFlag & PartitionFlag & { total?: boolean }) => {
      if (flags.partition !== undefined && flags.total) throw new InvalidArgumentError('--partition and --total cannot be used together');
      const len = await (await Queue.fromName(name)).len({ partition: flags.partition, total: flags.total });
      console.log(flags.json ? formatValue({ len }) : String(len));
    });

  queue
    .command('clear <name>')
    .description('remove the items of a partition (default: the default partition), or of every partition with --all')
    .option(PARTITION_FLAGS, 'clear this partition')
    .option('-a, --all', 'clear every partition')
    .option('-y, --yes', 'do not ask for confirmation')
    .action(async (name: string, flags: PartitionFlag & { all?: boolean; yes?: boolean }) => {
      if (flags.partition !== undefined && flags.all) throw new InvalidArgumentError('--partition and --all cannot be used together');
      const q = await Queue.fromName(name);
      const which = flags.all ? 'every partition' : flags.partition ? `partition ${flags.partition}` : 'the default partition';
      await confirm(flags.yes, `remove the items of ${which} of queue "${name}"?`, name, `clearing queue "${name}"`);
      await q.clear({ partition: flags.partition, all: flags.all });
      console.log(`cleared ${which} of queue ${name}`);
    });

  queue
    .command('delete <name>')
    .description('delete a queue and everything in it')
    .option('-y, --yes', 'do not ask for confirmation')
    .option(ALLOW_MISSING_FLAGS, ALLOW_MISSING_HELP)
    .action(async (name: string, flags: { yes?: boolean; allowMissing?: boolean }) => {
      await allowMissing(flags.allowMissing, `queue ${name}`, async () => {
        await Queue.fromName(name);
        await confirm(flags.yes, `delete queue "${name}" and everything in it?`, name, `deleting queue "${name}"`);
        await Queue.delete(name);
        console.log(`deleted queue ${name}`);
      });
    });
}
