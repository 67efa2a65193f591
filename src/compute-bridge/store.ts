/**
 * CallStore on LMDB (lmdb-js) under <data-dir>/bridge: `calls` id -> record,
 * `schedules` name -> schedule, `logs` [call id, n] -> LogEntry (proto bytes,
 * n counting up per call) and `logmeta` call id -> where its entries start and
 * end and how many bytes they hold, and `deployments` app -> its deploy. Each write is committed before it resolves, so
 * a call acknowledged to its caller survives a killed bridge; a write that
 * cannot be committed (a full disk) rejects, naming the directory (LmdbEnv).
 */
import type { Database } from 'lmdb';
import { LmdbEnv } from '../common/lmdb.js';
import type { Logger } from '../common/logger.js';
import { DeployAppRequest, LogEntry, Schedule } from '../gen/stowage/v1/bridge.js';
import type { CallRecord, CallStore, KeptLogs } from './types.js';

/** Schedules and deploys are kept as their proto bytes (FunctionSpec has maps and defaults the proto codec restores). */
type StoredProto = Buffer;

/** A call's kept output: its entries are keys [id, first] to [id, next - 1]. */
interface LogMeta {
  first: number;
  next: number;
  bytes: number;
  dropped: number;
}
type LogKey = [string, number];

export class LmdbCallStore implements CallStore {
  private readonly env: LmdbEnv;
  private readonly calls: Database<CallRecord, string>;
  private readonly schedules: Database<StoredProto, string>;
  private readonly deployments: Database<StoredProto, string>;
  private readonly logs: Database<Buffer, LogKey>;
  private readonly logMeta: Database<LogMeta, string>;

  constructor(path: string, log: Logger) {
    this.env = new LmdbEnv({ dir: path, what: 'bridge call store', log });
    this.calls = this.env.root.openDB({ name: 'calls' });
    this.schedules = this.env.root.openDB({ name: 'schedules', encoding: 'binary' });
    this.logs = this.env.root.openDB({ name: 'logs', encoding: 'binary' });
    this.logMeta = this.env.root.openDB({ name: 'logmeta' });
    this.deployments = this.env.root.openDB({ name: 'deployments', encoding: 'binary' });
  }

  async loadCalls(): Promise<CallRecord[]> {
    return [...this.calls.getRange()].map(({ value }) => ({
      ...value,
      args: Buffer.from(value.args),
      value: value.value ? Buffer.from(value.value) : undefined,
    }));
  }

  async putCalls(calls: readonly CallRecord[]): Promise<void> {
    await this.env.transaction(() => {
      for (const call of calls) void this.calls.put(call.id, call);
    });
  }

  async deleteCalls(ids: string[]): Promise<void> {
    await this.env.transaction(() => {
      for (const id of ids) {
        void this.calls.remove(id);
        const meta = this.logMeta.get(id);
        if (!meta) continue;
        for (let n = meta.first; n < meta.next; n++) void this.logs.remove([id, n]);
        void this.logMeta.remove(id);
      }
    });
  }

  async appendLogs(callId: string, entries: readonly LogEntry[], keepBytes: number): Promise<void> {
    if (!entries.length) return;
    const encoded = entries.map((e) => Buffer.from(LogEntry.encode(e).finish()));
    await this.env.transaction(() => {
      const meta = { ...(this.logMeta.get(callId) ?? { first: 0, next: 0, bytes: 0, dropped: 0 }) };
      for (const b of encoded) {
        void this.logs.put([callId, meta.next++], b);
        meta.bytes += b.length;
      }
      while (meta.bytes > keepBytes && meta.first < meta.next) {
        const key: LogKey = [callId, meta.first++];
        const old = this.logs.getBinary(key);
        void this.logs.remove(key);
        if (!old) continue;
        const e = LogEntry.decode(old);
        meta.bytes -= old.length;
        meta.dropped += e.droppedBytes || e.data.length;
      }
      void this.logMeta.put(callId, meta);
    });
  }

  async readLogs(callId: string): Promise<KeptLogs> {
    const meta = this.logMeta.get(callId);
    if (!meta) return { entries: [], droppedBytes: 0 };
    const entries = [...this.logs.getRange({ start: [callId, meta.first], end: [callId, meta.next] })].map(({ value }) => LogEntry.decode(value));
    return { entries, droppedBytes: meta.dropped };
  }

  async loadSchedules(): Promise<Schedule[]> {
    return [...this.schedules.getRange()].map(({ value }) => Schedule.decode(value));
  }

  async putSchedule(schedule: Schedule): Promise<void> {
    const bytes = Buffer.from(Schedule.encode(schedule).finish());
    await this.env.transaction(() => void this.schedules.put(schedule.name, bytes));
  }

  async deleteSchedule(name: string): Promise<boolean> {
    return this.env.transaction(() => {
      if (!this.schedules.doesExist(name)) return false;
      void this.schedules.remove(name);
      return true;
    });
  }

  async loadDeployments(): Promise<DeployAppRequest[]> {
    return [...this.deployments.getRange()].map(({ value }) => DeployAppRequest.decode(value));
  }

  async putDeployment(deployment: DeployAppRequest): Promise<void> {
    const bytes = Buffer.from(DeployAppRequest.encode(deployment).finish());
    await this.env.transaction(() => void this.deployments.put(deployment.app, bytes));
  }

  async deleteDeployment(app: string): Promise<boolean> {
    return this.env.transaction(() => {
      if (!this.deployments.doesExist(app)) return false;
      void this.deployments.remove(app);
      return true;
    });
  }

  async close(): Promise<void> {
    await this.env.close();
  }
}
