/** `stowage volume gc|retention|damaged|rebuild-index`: looking after volumes as a whole. */
import type { Command } from 'commander';
import { Volume, collectGarbage, listDamaged, rebuildIndex, setRetention } from '../client/index.js';
import { parseDuration } from '../common/duration.js';
import { InvalidArgumentError } from '../common/errors.js';
import { bytes, printJson } from './output.js';
import { UINT32_MAX, integerArg } from './values.js';

interface JsonFlag {
  json?: boolean;
}

/** "7d", "36h", "90m", "45s", or "-" for none. */
function duration(ms: number): string {
  if (ms === 0) return '-';
  for (const [unit, n] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) {
    if (ms % n === 0) return `${ms / n}${unit}`;
  }
  return `${ms}ms`;
}

/** Registers the commands on the `volume` command group. */
export function registerAdmin(vol: Command): void {
  vol
    .command('gc [volume]')
    .description(
      'remove versions retention no longer keeps (of VOLUME, or of every volume), then delete every chunk and tree object no kept version references',
    )
    .option('--grace <duration>', 'keep what is younger than this, and uploads planned this recently (default: the server\'s, 1h); 0 collects now, for when no upload is running')
    .option('--dry-run', 'report what would be deleted; delete nothing')
    .option('--json', 'print JSON')
    .action(async (volume: string | undefined, flags: JsonFlag & { grace?: string; dryRun?: boolean }) => {
      const graceMs = flags.grace === undefined ? undefined : parseDuration('--grace', flags.grace);
      const r = await collectGarbage({ volume, graceMs, dryRun: flags.dryRun });
      if (flags.json) return printJson(r);
      const verb = r.dryRun ? 'would remove' : 'removed';
      console.log(
        `${verb} ${r.versionsRemoved} version${r.versionsRemoved === 1 ? '' : 's'}, ` +
          `${r.blobsRemoved} chunk${r.blobsRemoved === 1 ? '' : 's'} (${bytes(r.blobBytesRemoved)}), ` +
          `${r.treesRemoved} tree object${r.treesRemoved === 1 ? '' : 's'} (${bytes(r.treeBytesRemoved)}) and ${r.otherRemoved} other object${r.otherRemoved === 1 ? '' : 's'}; ` +
          `${r.blobsLive} chunks and ${r.treesLive} tree objects are in use; ` +
          `${r.objectsKeptByGrace} unreferenced kept for the grace period (${duration(r.graceMs)}) (${r.seconds.toFixed(1)} s)`,
      );
    });

  vol
    .command('retention <volume>')
    .description('show or set which versions of a volume garbage collection keeps: the newest --keep-last, and every one younger than --keep-within (the latest always)')
    .option('--keep-last <n>', 'keep the newest N versions (0: no count rule)')
    .option('--keep-within <duration>', 'keep versions younger than this, e.g. 7d, 12h (0: no age rule)')
    .option('--default', "go back to the server's default retention")
    .option('--json', 'print JSON')
    .action(async (name: string, flags: JsonFlag & { keepLast?: string; keepWithin?: string; default?: boolean }) => {
      let info = await (await Volume.fromName(name)).info();
      const setting = flags.keepLast !== undefined || flags.keepWithin !== undefined;
      if (flags.default && setting) throw new InvalidArgumentError('--default cannot go with --keep-last or --keep-within');
      if (flags.default) info = await setRetention(name, { keepLast: 0, keepWithinMs: 0 });
      else if (setting) {
        const keepLast = integerArg('--keep-last', flags.keepLast, 0, UINT32_MAX) ?? info.keepLast;
        const keepWithinMs = flags.keepWithin === undefined ? Number(info.keepWithinMs) : parseDuration('--keep-within', flags.keepWithin);
        // The server stores 0 and 0 as "no rule of the volume's own" (catalog.ts setRetention).
        if (keepLast === 0 && keepWithinMs === 0) {
          throw new InvalidArgumentError(
            "--keep-last 0 with --keep-within 0 would not keep only the latest version: it sets the volume back to the server's default retention; say --default for that, or --keep-last 1 to keep only the latest",
          );
        }
        info = await setRetention(name, { keepLast, keepWithinMs });
      }
      const out = { volume: name, keepLast: info.keepLast, keepWithinMs: Number(info.keepWithinMs) };
      if (flags.json) return printJson(out);
      console.log(`${name} keeps the latest version, the newest ${out.keepLast || '-'} and every version younger than ${duration(out.keepWithinMs)}`);
    });

  vol
    .command('damaged')
    .description('list what the server found damaged or could not read in the store (skipped by the last index rebuild, or found by reads)')
    .option('--json', 'print JSON')
    .action(async (flags: JsonFlag) => {
      const objects = await listDamaged();
      if (flags.json) return printJson(objects);
      if (objects.length === 0) return console.log('nothing damaged is known');
      for (const o of objects) {
        const where = o.volume ? ` (volume ${o.volume}${o.version ? ` version ${o.version}` : ''})` : '';
        console.log(`${o.kind.padEnd(7)} ${o.key}${where}: ${o.reason}`);
      }
    });

  vol
    .command('rebuild-index')
    .description("rebuild the server's LMDB index from the volume and version records in the store (converting volumes of the manifest format)")
    .option('--json', 'print JSON')
    .action(async (flags: JsonFlag) => {
      const res = await rebuildIndex();
      if (flags.json) return printJson(res);
      const converted = res.converted ? `, ${res.converted} converted from the manifest format` : '';
      const skipped = res.skipped.length ? `; skipped ${res.skipped.length} damaged object(s): stowage volume damaged lists them` : '';
      console.log(`rebuilt the index: ${res.volumes} volumes, ${res.versions} versions${converted}${skipped}`);
    });
}
