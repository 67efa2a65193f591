/**
 * The message channel between a worker and one of its runner processes
 * (runner.ts). A forked runner uses Node's IPC channel (`process.send`,
 * serialization 'advanced'). A runner in a container cannot inherit that
 * descriptor, so it connects to a Unix socket the worker listens on, in a
 * directory bound into the container (docker-runtime.ts); messages there are
 * v8-serialized (what 'advanced' IPC uses too), each after its length as a
 * 4-byte big-endian number.
 */
import type { ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';
import { deserialize, serialize } from 'node:v8';

/** The largest message either side takes: a call's arguments or result are bounded well below this by the bridge. */
export const MAX_MESSAGE_BYTES = 1 << 30;

export interface Channel {
  send(msg: unknown): void;
  onMessage(fn: (msg: unknown) => void): void;
  /** Called once when the other end is gone. */
  onClose(fn: () => void): void;
  readonly connected: boolean;
}

/** The runner's side of a forked runner's IPC channel. */
export function parentChannel(): Channel {
  return {
    send: (msg) => void process.send!(msg),
    onMessage: (fn) => void process.on('message', fn),
    onClose: (fn) => void process.on('disconnect', fn),
    get connected() {
      return !!process.connected;
    },
  };
}

/** The worker's side of a forked runner's IPC channel. */
export function childChannel(child: ChildProcess): Channel {
  return {
    send: (msg) => void (child.connected && child.send(msg as never)),
    onMessage: (fn) => void child.on('message', fn),
    onClose: (fn) => void child.on('disconnect', fn),
    get connected() {
      return child.connected;
    },
  };
}

/**
 * Either side of a runner's socket: length-prefixed v8-serialized messages. What
 * comes in is not trusted (a function runs on the other side): a length over
 * MAX_MESSAGE_BYTES or bytes that do not deserialize end the channel.
 */
export function socketChannel(socket: Socket): Channel {
  const listeners: ((msg: unknown) => void)[] = [];
  let chunks: Buffer[] = [];
  let buffered = 0;
  /** Length of the message being read, once its 4 bytes are in. */
  let need = -1;
  const take = (n: number): Buffer => {
    const all = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, buffered);
    chunks = all.length > n ? [all.subarray(n)] : [];
    buffered -= n;
    return all.subarray(0, n);
  };
  socket.on('data', (data: Buffer) => {
    chunks.push(data);
    buffered += data.length;
    for (;;) {
      if (need < 0) {
        if (buffered < 4) return;
        need = take(4).readUInt32BE(0);
        if (need > MAX_MESSAGE_BYTES) return void socket.destroy();
      }
      if (buffered < need) return;
      let msg: unknown;
      try {
        msg = deserialize(take(need));
      } catch {
        return void socket.destroy();
      }
      need = -1;
      for (const fn of listeners) fn(msg);
    }
  });
  // A reset (the other side killed) ends the channel as a close does.
  socket.on('error', () => socket.destroy());
  return {
    send(msg) {
      if (socket.destroyed) return;
      const body = serialize(msg);
      const head = Buffer.alloc(4);
      head.writeUInt32BE(body.length, 0);
      socket.write(head);
      socket.write(body);
    },
    onMessage: (fn) => void listeners.push(fn),
    onClose: (fn) => void socket.once('close', fn),
    get connected() {
      return !socket.destroyed;
    },
  };
}
