/**
 * How SDK values become the bytes dicts and queues store: msgpack by default
 * (so Python and JavaScript clients read each other's values), or the bytes
 * as given with `encoding: 'raw'`.
 */
import { Decoder, Encoder } from '@msgpack/msgpack';
import { InvalidArgumentError } from '../common/errors.js';
import { quote } from '../common/quote.js';

export type Encoding = 'msgpack' | 'raw';

export interface Codec {
  readonly encoding: Encoding;
  encode(value: unknown, what: string): Buffer;
  decode(bytes: Uint8Array): unknown;
}

// One encoder and decoder for the process: `encode()` would build an Encoder
// (and a 2 KiB buffer the result keeps alive) per value. encodeSharedRef
// returns a view of the encoder's buffer, so the bytes are copied out.
const encoder = new Encoder();
const decoder = new Decoder();

const msgpack: Codec = {
  encoding: 'msgpack',
  encode(value, what) {
    try {
      return Buffer.from(encoder.encodeSharedRef(value));
    } catch (err) {
      throw new InvalidArgumentError(`${what} cannot be encoded with msgpack: ${(err as Error).message}`);
    }
  },
  decode: (bytes) => decoder.decode(bytes),
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
  throw new InvalidArgumentError(`encoding ${quote(String(encoding))} is not one of: msgpack, raw`);
}
