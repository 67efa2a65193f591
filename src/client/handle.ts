/**
 * Handle: the life cycle every SDK handle on a named server object shares
 * (Dict, Queue, Volume), as bullmq's QueueBase is the one life cycle of its
 * Queue, Worker and QueueEvents.
 *
 * - fromName: check the name, then create the object (createIfMissing) or
 *   look it up, so a handle is never made for a name the server refuses
 *   (openNamed).
 * - ephemeral: the object gets a fresh name (ephemeralName) and a heartbeat;
 *   the server deletes it when the heartbeats stop for its timeout, and close()
 *   deletes it at once.
 * - close() stops the heartbeat, deletes an ephemeral object, and is
 *   idempotent: later calls wait for the first and do nothing more (unless
 *   the delete failed: then they try it again). After it,
 *   every call on the handle fails with a FailedPreconditionError that says so
 *   (`dict "x" is closed`): the `conn` getter is the one way a subclass
 *   reaches the server. `await using` (TypeScript 5.2+, or a Node with that
 *   syntax) closes a handle where the runtime has Symbol.asyncDispose (Node
 *   20.4 and later).
 *
 * A base class rather than a composed object: close(), asyncDispose and the
 * closed check are public surface, which a composed object would leave each
 * class to forward again; what differs (the RPCs of a heartbeat and a delete)
 * comes in as two functions, so the base needs no abstract methods.
 *
 * One heartbeat period for every kind: it must beat the shortest timeout a
 * server gives an ephemeral object at least a few times over. Dicts and queues
 * ask for EPHEMERAL_IDLE_MS (one minute) and the server echoes it back (their
 * info's idleTimeoutMs); a volume server's timeout is its own setting
 * (catalog.ts ephemeralTimeoutMs, five minutes unless set) and not told to
 * the client. So the period is HEARTBEAT_MS, or a quarter of the timeout where
 * the server says a shorter one; a volume, whose timeout is far longer, is
 * kept alive by the same period with room to spare.
 */
import { randomUUID } from 'node:crypto';
import { FailedPreconditionError, isStowageError } from '../common/errors.js';
import { quote } from '../common/quote.js';
import { checkName } from '../common/validate.js';
import { defaultConnection, type Connection } from './connection.js';

/** The idle timeout a dict or queue made by ephemeral() asks for. */
export const EPHEMERAL_IDLE_MS = 60_000;
/** Heartbeats of an ephemeral object: a quarter of EPHEMERAL_IDLE_MS (see the header). */
export const HEARTBEAT_MS = EPHEMERAL_IDLE_MS / 4;

export type HandleKind = 'dict' | 'queue' | 'volume';

/** What keeps an ephemeral object alive, and what ends it. */
export interface EphemeralLife {
  /** One heartbeat; a failed one is retried by the next. */
  beat(conn: Connection): Promise<unknown>;
  /** Deletes the object (NOT_FOUND is taken as done: the server may have deleted it first). */
  remove(conn: Connection): Promise<unknown>;
  /** The timeout the server says it keeps the object for without heartbeats, if it says. */
  timeoutMs?: number;
}

/** The heartbeat period for an object the server keeps `timeoutMs` without one (undefined: not said). */
export function heartbeatPeriod(timeoutMs?: number): number {
  return timeoutMs && timeoutMs > 0 ? Math.min(HEARTBEAT_MS, Math.max(1, Math.floor(timeoutMs / 4))) : HEARTBEAT_MS;
}

/** The name of a new ephemeral object. */
export const ephemeralName = (): string => `ephemeral-${randomUUID()}`;

/** The connection a static call uses. */
export const connectionOf = (opts: { connection?: Connection }): Connection => opts.connection ?? defaultConnection();

/**
 * fromName's first half: checks the name, then creates the object when
 * createIfMissing is set, else looks it up (NotFoundError from the server,
 * with the command that creates it). Returns the connection the handle uses.
 */
export async function openNamed(
  kind: HandleKind,
  name: string,
  opts: { connection?: Connection; createIfMissing?: boolean },
  calls: { create(conn: Connection): Promise<unknown>; get(conn: Connection): Promise<unknown> },
): Promise<Connection> {
  checkName(kind, name);
  const conn = connectionOf(opts);
  await (opts.createIfMissing ? calls.create(conn) : calls.get(conn));
  return conn;
}

const CLASS_NAMES: Record<HandleKind, string> = { dict: 'Dict', queue: 'Queue', volume: 'Volume' };

export abstract class Handle {
  private heartbeat: NodeJS.Timeout | undefined;
  private closed = false;
  private closing: Promise<void> | undefined;

  protected constructor(
    private readonly kind: HandleKind,
    readonly name: string,
    private readonly connection: Connection,
    private readonly life?: EphemeralLife,
  ) {
    if (life) {
      this.heartbeat = setInterval(() => void life.beat(connection).catch(() => undefined), heartbeatPeriod(life.timeoutMs));
      // A forgotten handle must not keep the process alive; its object then times out on the server.
      this.heartbeat.unref();
    }
  }

  /** The connection, for every call the handle makes; FailedPreconditionError once the handle is closed. */
  protected get conn(): Connection {
    if (this.closed) {
      const what = `${this.kind} ${quote(this.name)} is closed`;
      const cls = CLASS_NAMES[this.kind];
      throw new FailedPreconditionError(
        this.life
          ? `${what}: it was ephemeral, and closing deleted it (make another with ${cls}.ephemeral)`
          : `${what}: this handle was closed (open the ${this.kind} again with ${cls}.fromName)`,
      );
    }
    return this.connection;
  }

  /**
   * Ends the handle: stops its heartbeat and deletes an ephemeral object.
   * Idempotent; when the delete fails (the server is away), the next close()
   * tries it again.
   */
  close(): Promise<void> {
    this.closed = true;
    this.closing ??= this.end().catch((err: unknown) => {
      this.closing = undefined;
      throw err;
    });
    return this.closing;
  }

  private async end(): Promise<void> {
    clearInterval(this.heartbeat);
    this.heartbeat = undefined;
    if (!this.life) return;
    await this.life.remove(this.connection).catch((err: unknown) => {
      if (!isStowageError(err, 'NOT_FOUND')) throw err;
    });
  }

  declare [Symbol.asyncDispose]: () => Promise<void>;
}

// `await using` needs Symbol.asyncDispose, which Node has from 20.4 on; older Node 20 has no such symbol.
if (typeof Symbol.asyncDispose === 'symbol') {
  Object.defineProperty(Handle.prototype, Symbol.asyncDispose, {
    value(this: Handle): Promise<void> {
      return this.close();
    },
    writable: true,
    configurable: true,
  });
}
