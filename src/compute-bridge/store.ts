/**
 * CallStore on LMDB (lmdb-js) under <data-dir>/bridge: `calls` id -> record,
 * `schedules` name -> schedule. Each write is committed before it resolves, so
 * a call acknowledged to its caller survives a killed bridge; a write that
 * cannot be committed (a full disk) rejects, naming the directory (LmdbEnv).
 */
import type { Database } from 'lmdb';
import { LmdbEnv } from '../common/lmdb.js';
import type { Logger } from '../common/logger.js';
import { Schedule } from '../gen/stowage/v1/bridge.js';
import type { CallRecord, CallStore } from './types.js';

/** Schedules are kept as their proto bytes (FunctionSpec has maps and defaults the proto codec restores). */
type StoredSchedule = Buffer;

export class LmdbCallStore implements CallStore {
  private readonly env: LmdbEnv;
  private readonly calls: Database<CallRecord, string>;
  private readonly schedules: Database<StoredSchedule, string>;

  constructor(path: string, log: Logger) {
    this.env = new LmdbEnv({ dir: path, what: 'bridge call store', log });
    this.calls = this.env.root.openDB({ name: 'calls' });
    this.schedules = this.env.root.openDB({ name: 'schedules', encoding: 'binary' });
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
      for (const id of ids) void this.calls.remove(id);
    });
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

  async close(): Promise<void> {
    await this.env.close();
  }
}
