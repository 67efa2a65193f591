/**
 * file:// URLs: what a server over a local-directory store hands to clients
 * on its own host instead of presigned S3 URLs. The client reads chunk files
 * itself and writes new ones the way the store does (temporary name, flush,
 * rename), so the bytes never pass through the server.
 */
import { open } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { readAt, writeFileAtomic } from '../common/files.js';

export function isFileUrl(url: string): boolean {
  return url.startsWith('file:');
}

export async function readFileUrl(url: string, offset: number, length: number, into?: Buffer): Promise<Buffer> {
  const fh = await open(fileURLToPath(url), 'r');
  try {
    return await readAt(fh, offset, length, into);
  } finally {
    await fh.close();
  }
}

export async function writeFileUrl(url: string, data: Buffer): Promise<void> {
  await writeFileAtomic(fileURLToPath(url), data);
}
