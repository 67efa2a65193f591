import { createHash } from 'node:crypto';

/** SHA-256 of the given buffers, as lowercase hex: the name of a chunk. */
export function sha256(...parts: Uint8Array[]): string {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest('hex');
}
