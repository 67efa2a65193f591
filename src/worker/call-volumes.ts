/**
 * The volumes of one call on a worker: read-only ones are the worker's shared
 * mounts of the versions the bridge pinned (mounts.ts acquire/release);
 * writable ones are mounts of the call's own, of the newest version.
 *
 * Life of a writable volume's writes: staged in the call's mount; a
 * `volume(path).commit()` in the function commits them at once (a commit
 * request to the mount); when the handler returns normally the worker commits
 * what is left, and the call succeeds only if that worked; when it throws, its
 * runner dies or it is cancelled, the mount is stopped and what is staged is
 * dropped, said in a log line and in the call's error. A worker killed
 * meanwhile takes its mounts with it, and they drop what they staged: a
 * version is made only by a whole commit (the server commits a batch
 * atomically), never by a half-written file.
 *
 * reload(): a writable mount reloads in place (its staged writes stay over the
 * new version); a read-only volume moves to the worker's mount of the newest
 * version (the runner re-binds its declared path), kept until the call ends.
 */
import type { CallError, Assignment } from '../gen/stowage/v1/bridge.js';
import { Volume, type Connection } from '../client/index.js';
import { FailedPreconditionError, InvalidArgumentError, StowageError, messageOf } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { commitMount, reloadMount } from '../fuse-mount/mount-state.js';
import type { MountManager, WritableMount } from './mounts.js';
import type { CallMount } from './runner-binds.js';
import type { VolumeOpReply, VolumeOpRequest } from './runner.js';

type Reply = VolumeOpReply['volumeOpReply'];

export class CallVolumes {
  private readonly mounts: (CallMount & { version: number })[] = [];
  /** Shared read-only mounts this call holds: [volume, version]. */
  private readonly acquired: [string, number][] = [];
  /** Its own writable mounts, by declared path, until committed and stopped, or dropped. */
  private readonly writables = new Map<string, WritableMount>();

  constructor(
    private readonly a: Assignment,
    private readonly manager: MountManager,
    private readonly connection: Connection,
    private readonly log: Logger,
  ) {}

  /** Mounts what is not mounted yet (it may be called again after a failure). */
  async mount(): Promise<void> {
    const spec = this.a.function!;
    for (const [path, volume] of Object.entries(spec.volumes)) {
      if (this.mounts.some((m) => m.path === path)) continue;
      if (spec.writable.includes(path)) {
        const w = await this.manager.startWritable(volume);
        this.writables.set(path, w);
        this.mounts.push({ path, volume, source: w.dir, writable: true, version: 0 });
      } else {
        const version = this.a.versions[volume]!;
        const dir = await this.manager.acquire(volume, version);
        this.acquired.push([volume, version]);
        this.mounts.push({ path, volume, source: dir, writable: false, version });
      }
    }
  }

  /** What the runner binds. */
  list(): CallMount[] {
    return this.mounts.map(({ path, volume, source, writable }) => ({ path, volume, source, writable }));
  }

  /** A function's volume(path).commit() or .reload(). */
  async request(op: VolumeOpRequest['volumeOp']): Promise<Reply> {
    const { id } = op;
    try {
      const m = this.mounts.find((x) => x.path === op.path);
      if (!m) throw new InvalidArgumentError(`no volume is declared at ${op.path}`);
      if (op.action === 'commit') {
        if (!m.writable) {
          throw new FailedPreconditionError(
            `volume ${m.volume} is mounted read-only at ${m.path}: nothing to commit; declare it writable to write to it: volumes: { '${m.path}': { name: '${m.volume}', writable: true } }`,
          );
        }
        const r = await commitMount(m.source);
        if (r.version !== r.from) this.log.info({ call: this.a.callId, volume: m.volume, version: r.version }, `worker: call ${this.a.callId} committed ${m.volume} version ${r.version}`);
        return { id, ok: true, version: r.version };
      }
      if (m.writable) return { id, ok: true, version: (await reloadMount(m.source)).to };
      const vol = await Volume.fromName(m.volume, { connection: this.connection });
      const latest = (await vol.info()).latestVersion;
      if (latest <= m.version) return { id, ok: true, version: m.version };
      const dir = await this.manager.acquire(m.volume, latest);
      this.acquired.push([m.volume, latest]);
      m.source = dir;
      m.version = latest;
      return { id, ok: true, version: latest, source: dir };
    } catch (err) {
      return { id, ok: false, code: err instanceof StowageError ? err.code : 'INTERNAL', message: messageOf(err) };
    }
  }

  /** The call returned: commits what each writable mount still stages. undefined when all of it went in, else the call's error. */
  async commit(): Promise<CallError | undefined> {
    for (const [path, w] of this.writables) {
      try {
        const r = await commitMount(w.dir);
        if (r.version !== r.from) this.log.info({ call: this.a.callId, volume: w.volume, version: r.version }, `worker: call ${this.a.callId} committed ${w.volume} version ${r.version}`);
      } catch (err) {
        const code = err instanceof StowageError ? err.code : 'INTERNAL';
        const dropped = await this.drop(`committing its writes to ${w.volume} (${path}) failed`);
        return { code, message: `the function returned, but committing its writes to volume ${w.volume} (${path}) failed: ${messageOf(err)}${dropped}`, name: '', stack: '' };
      }
    }
    await this.stopWritables();
    return undefined;
  }

  /** Stops the writable mounts, dropping what they stage; returns what the call's error says of it ('' when it has none). */
  async drop(why: string): Promise<string> {
    if (!this.writables.size) return '';
    const names = [...this.writables].map(([p, w]) => `${w.volume} (${p})`).join(', ');
    this.log.warn({ call: this.a.callId }, `worker: call ${this.a.callId}: ${why}: its uncommitted writes to ${names} are dropped`);
    await this.stopWritables();
    return ` (its writes to ${names} not yet committed were dropped: a call's writes are committed when it returns normally, or by volume(path).commit())`;
  }

  /** The call is over: drops what is still staged (a cancelled call's), gives back the shared mounts. */
  async release(why: string): Promise<void> {
    await this.drop(why);
    for (const [v, n] of this.acquired.splice(0)) this.manager.release(v, n);
  }

  private async stopWritables(): Promise<void> {
    const ws = [...this.writables.values()];
    this.writables.clear();
    await Promise.all(ws.map((w) => w.stop()));
  }
}
