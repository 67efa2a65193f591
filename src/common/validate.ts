/** Names and paths as every service accepts them. */
import { InvalidArgumentError } from './errors.js';
import { quote } from './quote.js';

const NAME = /^[A-Za-z0-9._-]{1,64}$/;
export const MAX_PATH_BYTES = 4096;
export const MAX_COMPONENT_BYTES = 255;

/** Throws unless `name` is a valid volume (or dict, queue) name. */
export function checkName(kind: string, name: string): string {
  if (typeof name !== 'string' || !NAME.test(name) || name === '.' || name === '..') {
    throw new InvalidArgumentError(
      `invalid ${kind} name ${quote(name)}: use 1 to 64 characters from A-Z a-z 0-9 . _ - (not "." or "..")`,
    );
  }
  return name;
}

/**
 * Normalises a path inside a volume to its canonical form: '/'-separated, no
 * leading or trailing '/', no empty or '.' components. '' is the root.
 * Rejects '..', NUL, a component over 255 bytes and a path over 4096 bytes.
 */
export function normalizePath(path: string): string {
  if (typeof path !== 'string') throw new InvalidArgumentError('path must be a string');
  if (path.includes('\0')) {
    throw new InvalidArgumentError(`invalid path ${quote(path)}: contains a NUL byte`);
  }
  if (Buffer.byteLength(path) > MAX_PATH_BYTES) {
    throw new InvalidArgumentError(
      `invalid path: ${Buffer.byteLength(path)} bytes is over the limit of ${MAX_PATH_BYTES}`,
    );
  }
  const parts: string[] = [];
  for (const part of path.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      throw new InvalidArgumentError(
        `invalid path ${quote(path)}: ".." is not allowed in volume paths`,
      );
    }
    if (Buffer.byteLength(part) > MAX_COMPONENT_BYTES) {
      throw new InvalidArgumentError(
        `invalid path: component ${quote(part)} is ${Buffer.byteLength(part)} bytes, over the limit of ${MAX_COMPONENT_BYTES}`,
      );
    }
    parts.push(part);
  }
  return parts.join('/');
}

/** normalizePath that also refuses the root (a file needs a name). */
export function normalizeFilePath(path: string): string {
  const p = normalizePath(path);
  if (p === '') throw new InvalidArgumentError('a file path must not be empty or "/"');
  return p;
}

export const HASH = /^[0-9a-f]{64}$/;
export function checkHash(hash: string): string {
  if (!HASH.test(hash)) throw new InvalidArgumentError(`invalid blob hash ${quote(hash)}`);
  return hash;
}
