/**
 * CallStore on LMDB (lmdb-js) under <data-dir>/bridge: `calls` id -> record,
 * `schedules` name -> schedule. Each put is committed before it resolves, so
 * a call acknowledged to its caller survives a killed bridge.
 */
import { open, type Database, type RootDatabase } from 'lmdb';
import { Schedule } from '../gen/stowage/v1/bridge.js';
import type { CallRecord, CallStore } from './types.js';

/** Schedules are kept as their proto bytes (FunctionSpec has maps and defaults the proto codec restores). */
type StoredSchedule = Buffer;

export class LmdbCallStore implements CallStore {
  private readonly root: RootDatabase;
  private readonly calls: Database<CallRecord, string>;
  private readonly schedules: Database<StoredSchedule, string>;

  constructor(path: string) {
    this.root = open({ path, compression: false });
    this.calls = this.root.openDB({ name: 'calls' });
    this.schedules = this.root.openDB({ name: 'schedules', encoding: 'binary' });
  }

  loadCalls(): CallRecord[] {
    return [...this.calls.getRange()].map(({ value }) => ({
      ...value,
      args: Buffer.from(value.args),
      value: value.value ? Buffer.from(value.value) : undefined,
    }));
  }

  async putCall(call: CallRecord): Promise<void> {
    await this.calls.put(call.id, call);
  }

  async deleteCalls(ids: string[]): Promise<void> {
    await this.calls.transaction(() => {
      for (const id of ids) void this.calls.remove(id);
    });
  }

  loadSchedules(): Schedule[] {
    return [...this.schedules.getRange()].map(({ value }) => Schedule.decode(value));
  }

  async putSchedule(schedule: Schedule): Promise<void> {
    await this.schedules.put(schedule.name, Buffer.from(Schedule.encode(schedule).finish()));
  }

  async deleteSchedule(name: string): Promise<boolean> {
    if (!this.schedules.doesExist(name)) return false;
    await this.schedules.remove(name);
    return true;
  }

  async close(): Promise<void> {
    await this.root.close();
  }
}
