/**
 * User input (names, keys, paths, hashes, flags) as it appears in a message.
 *
 * Invariant: whatever the input, the result is short (at most QUOTE_MAX_CHARS
 * characters of it, JSON-escaped, then its size). A message that repeated its
 * input whole could not be delivered: a gRPC status message travels in HTTP/2
 * trailers, and a header block over ~80 KiB makes the server's HTTP/2 session
 * fail without the client ever hearing back (see grpc-errors.ts). It would
 * also flood a terminal or a log. Tested in test/rpc-limits.test.ts.
 */

/** Characters of an input quoted in a message; the rest is summarised by its size. */
export const QUOTE_MAX_CHARS = 64;

/** `"abc"`, or `"abcd…"… (100000 bytes)` for a long input; Buffers are shown as hex. */
export function quote(input: string | Uint8Array): string {
  if (typeof input !== 'string') {
    const bytes = Buffer.from(input.buffer, input.byteOffset, input.byteLength);
    const hexChars = QUOTE_MAX_CHARS / 2;
    if (bytes.length <= hexChars) return `0x${bytes.toString('hex')}`;
    return `0x${bytes.subarray(0, hexChars).toString('hex')}… (${bytes.length} bytes)`;
  }
  if (input.length <= QUOTE_MAX_CHARS) return JSON.stringify(input);
  return `${JSON.stringify(input.slice(0, QUOTE_MAX_CHARS))}… (${Buffer.byteLength(input)} bytes)`;
}

/** Cuts a whole message (not input quoted in it) to `maxBytes` of UTF-8, saying how much was cut. */
export function truncateMessage(message: string, maxBytes: number): string {
  const size = Buffer.byteLength(message);
  if (size <= maxBytes) return message;
  const note = ` … [message cut: ${size} bytes in all]`;
  // Cutting at a byte offset may split a character; toString drops the broken tail as U+FFFD, so trim that too.
  const head = Buffer.from(message).subarray(0, Math.max(0, maxBytes - Buffer.byteLength(note))).toString('utf8').replace(/\uFFFD+$/, '');
  return `${head}${note}`;
}
