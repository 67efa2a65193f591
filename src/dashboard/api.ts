/**
 * The dashboard's JSON endpoints (their shapes: types.ts), over the sources
 * the server hands it. Each answer is built from what the services hold now;
 * the only state kept here is the History of rates and the volume usage
 * already computed (per volume, recomputed when its versions change).
 *
 * Volume usage walks a volume's tree pages (volume-server/usage.ts), so it
 * is never computed inside a request: a request for the list starts the walks
 * that are missing, one at a time in the background, and answers null for
 * them until they are done (the page polls, and shows the ratio a moment
 * later).
 */
import { InvalidArgumentError, messageOf } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { ScopeService } from '../common/scopes.js';
import { checkName, normalizePath } from '../common/validate.js';
import { History } from './history.js';
import type { CallSummary, VolumeSummary } from './api-types.js';
import type { DashboardSources, QueueRow } from './types.js';

/** Whether the caller may read a name (the token's scopes: common/scopes.ts canRead); list answers keep only those. */
export type Readable = (service: ScopeService, name: string) => boolean;
const everything: Readable = () => true;

const MAX_ENTRIES = 1000;
const MAX_CALLS = 200;

interface Usage {
  key: string;
  logicalBytes: number;
  storedBytes: number | null;
}

export class DashboardApi {
  readonly history: History;
  private readonly usage = new Map<string, Usage>();
  private usageRun: Promise<void> | undefined;

  constructor(
    readonly sources: DashboardSources,
    private readonly log: Logger,
    sampleEveryMs?: number,
  ) {
    this.history = new History(sources.metrics, sampleEveryMs);
  }

  close(): void {
    this.history.close();
  }

  whoami(): object {
    return { server: this.sources.server };
  }

  async volumes(readable: Readable = everything): Promise<object> {
    const v = this.sources.volumes;
    if (!v) return { hosted: false };
    const rows: VolumeSummary[] = (await v.list()).filter((r) => readable('volume', r.name)).map((r) => {
      const key = `${r.latestVersion}/${r.versionCount}`;
      const u = this.usage.get(r.name);
      const known = u?.key === key ? u : undefined;
      const ratio = known && known.storedBytes ? known.logicalBytes / known.storedBytes : null;
      return { ...r, logicalBytes: known?.logicalBytes ?? null, storedBytes: known?.storedBytes ?? null, dedupRatio: ratio };
    });
    const stale = rows.filter((r) => this.usage.get(r.name)?.key !== `${r.latestVersion}/${r.versionCount}`);
    if (stale.length && !this.usageRun) this.usageRun = this.computeUsage(stale).finally(() => (this.usageRun = undefined));
    return { volumes: rows };
  }

  async versions(name: string): Promise<object> {
    const v = this.sources.volumes;
    if (!v) return { hosted: false };
    checkName('volume', name);
    return { volume: name, versions: await v.versions(name) };
  }

  async files(name: string, version: number, path: string): Promise<object> {
    const v = this.sources.volumes;
    if (!v) return { hosted: false };
    checkName('volume', name);
    const dir = normalizePath(path);
    const listing = await v.listDir(name, version, dir, MAX_ENTRIES);
    return { volume: name, version: listing.version, path: `/${dir}`, entries: listing.entries, truncated: listing.truncated };
  }

  async dicts(readable: Readable = everything): Promise<object> {
    const { dicts, queues } = this.sources;
    if (!dicts && !queues) return { hosted: false };
    const rate = (key: string) => ({ opsPerSec: this.history.rateOf(key), history: this.history.opsOf(key) });
    const dictRows = dicts ? (await dicts.list()).filter((d) => readable('dict', d.name)).map((d) => ({ ...d, ...rate(`dict:${d.name}`) })) : [];
    const queueRows = queues ? (await queues.list()).filter((q) => readable('queue', q.name)).map((q: QueueRow) => ({ ...q, ...rate(`queue:${q.name}`) })) : [];
    return { dicts: dictRows, queues: queueRows, dictsHosted: !!dicts, queuesHosted: !!queues };
  }

  bridge(): object {
    const b = this.sources.bridge;
    if (!b) return { hosted: false };
    const calls: CallSummary[] = b.calls(MAX_CALLS);
    const p = this.sources.metrics?.placementCounts() ?? { hits: 0, total: 0 };
    return { workers: b.workers(), calls, placement: { ...p, history: this.history.placementHistory() } };
  }

  mounts(readable: Readable = everything): object {
    return { mounts: this.sources.mounts.list().filter((m) => readable('volume', m.volume)) };
  }

  /** A version number from a query string ('' or absent: 0, the latest). */
  static versionParam(raw: string | null): number {
    if (raw === null || raw === '') return 0;
    const n = Number(raw);
    if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError(`version ${JSON.stringify(raw)} is not a version number (1, 2, …; 0 or none: the latest)`);
    return n;
  }

  private async computeUsage(rows: VolumeSummary[]): Promise<void> {
    const v = this.sources.volumes!;
    for (const r of rows) {
      const key = `${r.latestVersion}/${r.versionCount}`;
      try {
        const u = await v.usage(r.name);
        this.usage.set(r.name, { key, logicalBytes: u?.logicalBytes ?? 0, storedBytes: u ? u.storedBytes : null });
      } catch (err) {
        // Deleted meanwhile, or a page out of reach: shown without a ratio, tried again when the volume changes.
        this.log.debug({ volume: r.name, err: messageOf(err) }, 'dashboard: volume usage not computed');
        this.usage.set(r.name, { key, logicalBytes: 0, storedBytes: null });
      }
    }
    const live = new Set((await v.list()).map((r) => r.name));
    for (const name of this.usage.keys()) if (!live.has(name)) this.usage.delete(name);
  }
}
