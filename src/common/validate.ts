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
 * Normalises a path inside a volume to its canonical form: Unicode NFC,
 * '/'-separated, no leading or trailing '/', no empty or '.' components. '' is
 * the root. Rejects '..', NUL, a component over 255 bytes and a path over 4096
 * bytes (counted in UTF-8 after NFC). Server, SDK, CLI and the client's checks
 * of what a server sends all use it, so the NFC and NFD spellings of a name
 * ("café") name one file everywhere.
 */
export function normalizePath(raw: string): string {
  if (typeof raw !== 'string') throw new InvalidArgumentError('path must be a string');
  if (isCanonicalAscii(raw)) return raw;
  const path = raw.normalize('NFC');
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

/**
 * Whether `path` is already canonical and plain ASCII (NFC as it is, one byte
 * per character): the common case, which listings of a million files check
 * without splitting, normalising or counting bytes.
 */
function isCanonicalAscii(path: string): boolean {
  if (path.length > MAX_PATH_BYTES) return false;
  let start = 0;
  for (let i = 0; i <= path.length; i++) {
    const c = i < path.length ? path.charCodeAt(i) : 0x2f;
    if (c === 0 || c > 0x7f) return false;
    if (c !== 0x2f) continue;
    const len = i - start;
    if (len === 0 || len > MAX_COMPONENT_BYTES) return false;
    if (path.charCodeAt(start) === 0x2e && (len === 1 || (len === 2 && path.charCodeAt(start + 1) === 0x2e))) return false;
    start = i + 1;
  }
  return true;
}

/** normalizePath that also refuses the root (a file needs a name). */
export function normalizeFilePath(path: string): string {
  const p = normalizePath(path);
  if (p === '') throw new InvalidArgumentError('a file path must not be empty or "/"');
  return p;
}

/** The most bytes one blob (chunk or pack) may hold; so also one extent. */
export const MAX_BLOB_BYTES = 64 * 1024 * 1024;

/** The mode a file gets when none was given (proto3 cannot tell 0 from unset). */
export const DEFAULT_FILE_MODE = 0o644;

/**
 * The mode a volume stores and a client applies: permission bits only. No
 * setuid, setgid or sticky bit (nor file-type bits) survives, whoever sent
 * the mode: the server masks what a committer sends, and clients mask again
 * what a server answers, before they create a file or report its mode.
 */
export function fileMode(mode: number): number {
  return (Number.isInteger(mode) ? mode & 0o777 : 0) || DEFAULT_FILE_MODE;
}

export const HASH = /^[0-9a-f]{64}$/;
export function checkHash(hash: string): string {
  if (!HASH.test(hash)) throw new InvalidArgumentError(`invalid blob hash ${quote(hash)}`);
  return hash;
}

/** A container image reference: [registry[:port]/]name[:tag][@digest], as Docker reads it. */
const IMAGE_REF = /^[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::[\w][\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$/;
const MAX_CPU = 1024;
/** Docker's least memory limit. */
const MIN_MEMORY = 6 * 1024 * 1024;

/** Throws unless a function's image, cpu, memory (bytes) and gpu are what a docker worker can take. */
export function checkContainerFields(f: { image: string; cpu: number; memoryBytes: number; gpu: string }): void {
  if (f.image !== '' && (typeof f.image !== 'string' || f.image.length > 255 || !IMAGE_REF.test(f.image))) {
    throw new InvalidArgumentError(`image ${quote(String(f.image))} is not an image reference (e.g. "my-image:tag", "registry.example/team/img@sha256:…")`);
  }
  if (!(typeof f.cpu === 'number' && f.cpu >= 0 && f.cpu <= MAX_CPU)) {
    throw new InvalidArgumentError(`cpu must be a number of cores above 0 and at most ${MAX_CPU}, got ${JSON.stringify(f.cpu)}`);
  }
  if (!Number.isSafeInteger(f.memoryBytes) || f.memoryBytes < 0 || (f.memoryBytes > 0 && f.memoryBytes < MIN_MEMORY)) {
    throw new InvalidArgumentError(`memory must be at least 6MiB (Docker's least), got ${JSON.stringify(f.memoryBytes)} bytes`);
  }
  if (f.gpu !== '' && f.gpu !== 'any') throw new InvalidArgumentError(`gpu must be 'any', got ${quote(String(f.gpu))}`);
}
