/**
 * How SDK values become the bytes dicts and queues store: msgpack by default
 * (so Python and JavaScript clients read each other's values), or the bytes
 * as given with `encoding: 'raw'`.
 */
import { decode, encode } from '@msgpack/msgpack';
import { InvalidArgumentError } from '../common/errors.js';

export type Encoding = 'msgpack' | 'raw';

export interface Codec {
  readonly encoding: Encoding;
  encode(value: unknown, what: string): Buffer;
  decode(bytes: Uint8Array): unknown;
}

const msgpack: Codec = {
  encoding: 'msgpack',
  encode(value, what) {
    try {
      const bytes = encode(value);
      return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    } catch (err) {
      throw new InvalidArgumentError(`${what} cannot be encoded with msgpack: ${(err as Error).message}`);
    }
  },
  decode: (bytes) => decode(bytes),
};

const raw: Codec = {
  encoding: 'raw',
  encode(value, what) {
    if (Buffer.isBuffer(value)) return value;
    if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
    if (typeof value === 'string') return Buffer.from(value);
    throw new InvalidArgumentError(`${what} must be a Buffer, Uint8Array or string with encoding 'raw'`);
  },
  decode: (bytes) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength),
};

export function codecFor(encoding: Encoding = 'msgpack'): Codec {
  if (encoding === 'msgpack') return msgpack;
  if (encoding === 'raw') return raw;
  throw new InvalidArgumentError(`encoding ${JSON.stringify(encoding)} is not one of: msgpack, raw`);
}
