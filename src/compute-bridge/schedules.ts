/**
 * Schedules: a function submitted at each tick of a cron expression (croner;
 * five fields, or six with seconds first), read in the schedule's IANA time
 * zone, or without one in UTC (as Modal's Cron). Kept in the CallStore, so they
 * survive a restart; ticks missed while the bridge was down are not made up.
 * A scheduled call has no arguments; its result is kept like any call's
 * (`stowage bridge calls --schedule NAME`).
 */
import { Cron } from 'croner';
import { InvalidArgumentError, NotFoundError, messageOf } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { quote } from '../common/quote.js';
import type { FunctionSpec, Schedule } from '../gen/stowage/v1/bridge.js';
import type { CallStore } from './types.js';

/** msgpack of an empty array: a scheduled call's arguments. */
const NO_ARGS = Buffer.from([0x90]);

export class Schedules {
  private readonly jobs = new Map<string, { schedule: Schedule; cron: Cron }>();
  private stopped = false;

  constructor(
    private readonly store: CallStore,
    private readonly submit: (spec: FunctionSpec, args: Buffer) => Promise<unknown>,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    const kept = await this.store.loadSchedules();
    if (this.stopped) return;
    for (const s of kept) {
      try {
        this.run(s);
      } catch (err) {
        this.log.warn({ schedule: s.name, err: messageOf(err) }, 'bridge: a kept schedule cannot run');
      }
    }
  }

  async put(schedule: Schedule): Promise<Schedule> {
    checkSchedule(schedule);
    const spec = { ...schedule.function!, schedule: schedule.name };
    const s: Schedule = { name: schedule.name, cron: schedule.cron, function: spec, nextRunMs: 0, timezone: schedule.timezone };
    await this.store.putSchedule(s);
    this.run(s);
    return this.describe(s.name);
  }

  list(): Schedule[] {
    return [...this.jobs.keys()].sort().map((n) => this.describe(n));
  }

  async delete(name: string): Promise<void> {
    const job = this.jobs.get(name);
    const existed = await this.store.deleteSchedule(name);
    if (!job && !existed) throw new NotFoundError(`schedule ${quote(name)} not found (list them with: stowage bridge schedules)`);
    job?.cron.stop();
    this.jobs.delete(name);
  }

  /** Deletes a schedule if there is one (a deploy removing its function's); false when there was none. */
  async remove(name: string): Promise<boolean> {
    const existed = await this.store.deleteSchedule(name);
    this.jobs.get(name)?.cron.stop();
    return this.jobs.delete(name) || existed;
  }

  stop(): void {
    this.stopped = true;
    for (const j of this.jobs.values()) j.cron.stop();
    this.jobs.clear();
  }

  private describe(name: string): Schedule {
    const job = this.jobs.get(name)!;
    return { ...job.schedule, nextRunMs: job.cron.nextRun()?.getTime() ?? 0 };
  }

  private run(s: Schedule): void {
    this.jobs.get(s.name)?.cron.stop();
    const spec = s.function!;
    // protect: a tick is skipped while the previous tick's submit is still in progress.
    const cron = new Cron(s.cron, { protect: true, ...zoneOf(s) }, async () => {
      try {
        await this.submit(spec, NO_ARGS);
      } catch (err) {
        this.log.warn({ schedule: s.name, err: messageOf(err) }, 'bridge: a scheduled call could not be submitted');
      }
    });
    this.jobs.set(s.name, { schedule: s, cron });
  }
}

/** Refuses a schedule the bridge could not run (bad name, cron expression or time zone), before anything is written. */
export function checkSchedule(schedule: Schedule): void {
  if (!/^[A-Za-z0-9._-]{1,128}$/.test(schedule.name)) {
    throw new InvalidArgumentError(`schedule name ${quote(schedule.name)} must be 1 to 128 of [A-Za-z0-9._-]`);
  }
  if (!schedule.function) throw new InvalidArgumentError(`schedule ${quote(schedule.name)} names no function`);
  checkTimezone(schedule.name, schedule.timezone);
  checkCron(schedule.cron);
}

/** croner's option for the schedule's zone: UTC when it names none, as Modal's Cron (never the server's local zone, which differs from host to host). */
const zoneOf = (s: Pick<Schedule, 'timezone'>): { timezone: string } => ({ timezone: s.timezone || 'UTC' });

// croner does not refuse an unknown zone (it fails later, at a tick), so the zone is checked with Intl here.
function checkTimezone(name: string, zone: string): void {
  if (!zone) return;
  try {
    new Intl.DateTimeFormat('en', { timeZone: zone });
  } catch {
    throw new InvalidArgumentError(`schedule ${quote(name)}: time zone ${quote(zone)} is not an IANA time zone this server knows (e.g. "UTC", "Europe/Berlin", "America/New_York")`);
  }
}

function checkCron(expr: string): void {
  try {
    new Cron(expr, { paused: true }).stop();
  } catch (err) {
    throw new InvalidArgumentError(`cron expression ${quote(expr)} is not valid: ${messageOf(err)} (examples: "*/5 * * * *", or with seconds first "*/10 * * * * *")`);
  }
}
