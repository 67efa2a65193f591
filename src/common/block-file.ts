/**
 * The layout of one chunk's file in the disk cache: the chunk's bytes, then a
 * CRC32C of each 32 KiB block of them, then a 16-byte trailer.
 *
 *   [bytes: length][crc32c of block 0..n-1: 4 bytes each, little-endian][trailer]
 *   trailer: "STWC" | format 1 (u8) | log2 of the block size (u8) | 0 (u16) | length (u64 LE)
 *
 * Why. SHA-256 names a chunk and is checked once, when its bytes come from
 * the store. Checking it again on every cache hit meant reading and hashing
 * the whole chunk (8 MiB) to answer a 128 KiB FUSE read. With a CRC per
 * block (as JuiceFS keeps in its cache files since 1.3), a hit reads only the
 * blocks the read touches, straight into the buffer FUSE hands it when the
 * read is block-aligned, and checks only those: a torn or rotted block is
 * still caught, at a cost of about 0.2 CPU s per GiB (native SIMD CRC32C).
 * CRC32C catches damage, not an attacker: the cache directory is the mounting
 * user's own (0700), and bytes only enter it after their SHA-256 matched.
 */
import { crc32c } from '@node-rs/crc32';

export const BLOCK_SHIFT = 15;
export const BLOCK = 1 << BLOCK_SHIFT;
export const TRAILER_BYTES = 16;
const MAGIC = 0x43575453; // "STWC" read as a little-endian u32
const FORMAT = 1;

/** Blocks of a chunk of `length` bytes. */
export function blocksOf(length: number): number {
  return Math.ceil(length / BLOCK);
}

/** The size of the cache file of a chunk of `length` bytes. */
export function fileSizeOf(length: number): number {
  return length + 4 * blocksOf(length) + TRAILER_BYTES;
}

/** The chunk length a cache file of `size` bytes holds, or undefined when no length fits that size. */
export function lengthOfFile(size: number): number | undefined {
  const body = size - TRAILER_BYTES;
  if (body < 0) return undefined;
  const blocks = Math.ceil(body / (BLOCK + 4));
  const length = body - 4 * blocks;
  return length >= 0 && blocksOf(length) === blocks ? length : undefined;
}

/** What follows a chunk's bytes in its file: the CRC table and the trailer. */
export function tailOf(data: Uint8Array): Buffer {
  const blocks = blocksOf(data.length);
  const tail = Buffer.allocUnsafe(4 * blocks + TRAILER_BYTES);
  for (let b = 0; b < blocks; b++) {
    tail.writeUInt32LE(crc32c(data.subarray(b * BLOCK, Math.min(data.length, (b + 1) * BLOCK))), 4 * b);
  }
  const t = 4 * blocks;
  tail.writeUInt32LE(MAGIC, t);
  tail.writeUInt8(FORMAT, t + 4);
  tail.writeUInt8(BLOCK_SHIFT, t + 5);
  tail.writeUInt16LE(0, t + 6);
  tail.writeBigUInt64LE(BigInt(data.length), t + 8);
  return tail;
}

/** The chunk length a trailer (a file's last TRAILER_BYTES) names, or undefined when it is not this format's. */
export function lengthInTrailer(trailer: Buffer): number | undefined {
  if (trailer.length !== TRAILER_BYTES) return undefined;
  if (trailer.readUInt32LE(0) !== MAGIC || trailer.readUInt8(4) !== FORMAT || trailer.readUInt8(5) !== BLOCK_SHIFT) return undefined;
  const length = trailer.readBigUInt64LE(8);
  return length <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(length) : undefined;
}

/**
 * The CRC table of a cache file whose last bytes are `tail` (at least the
 * table and trailer of a chunk of `length` bytes), or undefined when the
 * trailer is not this format's or names another length.
 */
export function crcTableOf(tail: Buffer, length: number): Buffer | undefined {
  const blocks = blocksOf(length);
  if (tail.length < 4 * blocks + TRAILER_BYTES) return undefined;
  const t = tail.length - TRAILER_BYTES;
  if (tail.readUInt32LE(t) !== MAGIC || tail.readUInt8(t + 4) !== FORMAT || tail.readUInt8(t + 5) !== BLOCK_SHIFT) return undefined;
  if (tail.readBigUInt64LE(t + 8) !== BigInt(length)) return undefined;
  return tail.subarray(t - 4 * blocks, t);
}

/** Whether `data`, blocks `first`.. of a chunk, match their CRCs in `table`. */
export function blocksMatch(data: Uint8Array, first: number, table: Buffer): boolean {
  for (let b = 0, at = 0; at < data.length; b++, at += BLOCK) {
    if (crc32c(data.subarray(at, Math.min(data.length, at + BLOCK))) !== table.readUInt32LE(4 * (first + b))) return false;
  }
  return true;
}
