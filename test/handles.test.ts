/**
 * The life cycle Dict, Queue and Volume share (client/handle.ts), against a
 * real stowage server: a closed handle refuses every call and says so, close()
 * is idempotent and deletes an ephemeral object once, `await using` closes,
 * and the heartbeat period follows the timeout the server says.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Dict, FailedPreconditionError, NotFoundError, Queue, Volume, type Connection } from '../src/client/index.js';
import { EPHEMERAL_IDLE_MS, HEARTBEAT_MS, heartbeatPeriod } from '../src/client/handle.js';
import { expectFailure } from './support/checks.js';
import { startStowage, uniqueName, type Stowage } from './support/processes.js';

/** A pattern matching exactly `text`. */
const exactly = (text: string): RegExp => new RegExp(`^${text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`);

describe('SDK handles', () => {
  let stowage: Stowage;
  let connection: Connection;
  beforeAll(async () => {
    stowage = await startStowage();
    connection = stowage.connection;
  });
  afterAll(async () => {
    await stowage?.stop();
  });

  it('a closed named handle refuses every call, saying so; the object stays', async () => {
    const d = await Dict.fromName<string, number>(uniqueName('dict'), { createIfMissing: true, connection });
    await d.put('k', 1);
    await d.close();
    const dictClosed = `dict "${d.name}" is closed: this handle was closed (open the dict again with Dict.fromName)`;
    await expectFailure(() => d.get('k'), FailedPreconditionError, 'FAILED_PRECONDITION', exactly(dictClosed));
    await expectFailure(() => d.info(), FailedPreconditionError, 'FAILED_PRECONDITION', exactly(dictClosed));
    await expectFailure(() => d.items().next(), FailedPreconditionError, 'FAILED_PRECONDITION', exactly(dictClosed));
    expect(await (await Dict.fromName<string, number>(d.name, { connection })).get('k')).toBe(1);

    const q = await Queue.fromName<string>(uniqueName('queue'), { createIfMissing: true, connection });
    await q.close();
    const queueClosed = `queue "${q.name}" is closed: this handle was closed (open the queue again with Queue.fromName)`;
    await expectFailure(() => q.put('x'), FailedPreconditionError, 'FAILED_PRECONDITION', exactly(queueClosed));
    await expectFailure(() => q.get({ block: false }), FailedPreconditionError, 'FAILED_PRECONDITION', exactly(queueClosed));
    expect(await (await Queue.fromName(q.name, { connection })).len()).toBe(0);

    const v = await Volume.fromName(uniqueName('vol'), { createIfMissing: true, connection });
    await v.batchUpload().putFile(Buffer.from('kept'), 'a.txt').commit();
    await v.close();
    const volumeClosed = `volume "${v.name}" is closed: this handle was closed (open the volume again with Volume.fromName)`;
    await expectFailure(() => v.readBytes('a.txt'), FailedPreconditionError, 'FAILED_PRECONDITION', exactly(volumeClosed));
    await expectFailure(() => v.listdir(), FailedPreconditionError, 'FAILED_PRECONDITION', exactly(volumeClosed));
    await expectFailure(() => v.batchUpload().putFile(Buffer.from('x'), 'b.txt').commit(), FailedPreconditionError, 'FAILED_PRECONDITION', exactly(volumeClosed));
    expect((await (await Volume.fromName(v.name, { connection })).readBytes('a.txt')).toString()).toBe('kept');
  });

  it('closing an ephemeral handle deletes its object once, however often and concurrently it is closed', async () => {
    const q = await Queue.ephemeral<string>({ connection });
    await q.put('x');
    await Promise.all([q.close(), q.close()]);
    await q.close();
    expect((await Queue.list({ connection })).map((i) => i.name)).not.toContain(q.name);
    await expectFailure(() => Queue.fromName(q.name, { connection }), NotFoundError, 'NOT_FOUND');
    await expectFailure(() => q.len(), FailedPreconditionError, 'FAILED_PRECONDITION', exactly(`queue "${q.name}" is closed: it was ephemeral, and closing deleted it (make another with Queue.ephemeral)`));

    const v = await Volume.ephemeral({ connection });
    await Promise.all([v.close(), v.close()]);
    await expectFailure(() => Volume.fromName(v.name, { connection }), NotFoundError, 'NOT_FOUND');
    // Deleted by someone else first: close still ends the handle without an error.
    const d = await Dict.ephemeral({ connection });
    await Dict.delete(d.name, { connection });
    await d.close();
    await expectFailure(() => d.len(), FailedPreconditionError, 'FAILED_PRECONDITION', /^dict "ephemeral-[0-9a-f-]+" is closed: it was ephemeral/);
  });

  it('await using closes a handle at the end of its block', async () => {
    let name = '';
    {
      await using d = await Dict.ephemeral<string, string>({ connection });
      name = d.name;
      await d.put('k', 'v');
      expect((await Dict.list({ connection })).map((i) => i.name)).toContain(name);
    }
    await expectFailure(() => Dict.fromName(name, { connection }), NotFoundError, 'NOT_FOUND');
  });

  it('beats a few times within the timeout the server says, and at most every HEARTBEAT_MS', () => {
    expect(heartbeatPeriod(EPHEMERAL_IDLE_MS)).toBe(HEARTBEAT_MS);
    expect(HEARTBEAT_MS * 4).toBeLessThanOrEqual(EPHEMERAL_IDLE_MS);
    // A volume server does not say its timeout (five minutes unless set): the same period.
    expect(heartbeatPeriod(undefined)).toBe(HEARTBEAT_MS);
    expect(heartbeatPeriod(2000)).toBe(500);
    expect(heartbeatPeriod(3_600_000)).toBe(HEARTBEAT_MS);
  });
});
