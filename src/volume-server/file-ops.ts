/**
 * What a commit does to a version's file list, as pure functions over a
 * path → file map: puts, removes and copies, with the rules that keep a
 * volume a tree (no file where a directory is, no directory under a file,
 * no overwrite without force). The catalogue applies them under its lock.
 */
import { AlreadyExistsError, FailedPreconditionError, InvalidArgumentError, NotFoundError } from '../common/errors.js';
import { checkHash, fileMode, normalizeFilePath, normalizePath } from '../common/validate.js';
import type { CopyOp, FileEntry, RemoveOp } from '../gen/stowage/v1/volume.js';
import { toStoredFile, type StoredFile } from './manifest.js';

export function parentOf(path: string): string {
  const i = path.lastIndexOf('/');
  return i < 0 ? '' : path.slice(0, i);
}

export function checkPut(e: FileEntry): StoredFile {
  const path = normalizeFilePath(e.path);
  let total = 0;
  for (const x of e.extents) {
    checkHash(x.blob);
    checkHash(x.hash);
    total += x.length;
  }
  if (total !== e.size) {
    throw new InvalidArgumentError(`file "${path}": extents cover ${total} bytes but the size is ${e.size}`);
  }
  return toStoredFile({ ...e, path, mode: fileMode(e.mode), mtimeMs: e.mtimeMs || Date.now() });
}

function under(files: Map<string, StoredFile>, dir: string): StoredFile[] {
  const prefix = dir === '' ? '' : `${dir}/`;
  return [...files.values()].filter((f) => f.path.startsWith(prefix));
}

export function applyRemoves(files: Map<string, StoredFile>, removes: RemoveOp[], volume: string): void {
  for (const op of removes) {
    const p = normalizePath(op.path);
    if (p !== '' && files.delete(p)) continue;
    const inside = under(files, p);
    if (inside.length === 0) {
      if (p === '') continue; // removing everything from an empty volume
      throw new NotFoundError(
        `cannot remove "${p}": not found in volume "${volume}" (list it with: stowage volume ls ${volume} ${parentOf(p) || '/'})`,
      );
    }
    if (!op.recursive) {
      throw new FailedPreconditionError(
        `cannot remove "${p || '/'}" from volume "${volume}": it is a directory (use: stowage volume rm -r ${volume} ${p || '/'})`,
      );
    }
    for (const f of inside) files.delete(f.path);
  }
}

function basename(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

/** `cp` as `modal volume cp`: several sources, or a dst that is a directory, copy into it. */
export function applyCopies(files: Map<string, StoredFile>, copies: CopyOp[], volume: string, force: boolean): void {
  for (const op of copies) {
    if (op.srcs.length === 0) throw new InvalidArgumentError('copy needs at least one source');
    const dstRaw = op.dst;
    const dst = normalizePath(dstRaw);
    const dstIsDir =
      dstRaw.endsWith('/') || dst === '' || op.srcs.length > 1 || (!files.has(dst) && under(files, dst).length > 0);
    const added: StoredFile[] = [];
    for (const srcRaw of op.srcs) {
      const src = normalizePath(srcRaw);
      const file = src === '' ? undefined : files.get(src);
      if (file) {
        const to = dstIsDir ? join(dst, basename(src)) : dst;
        added.push({ ...file, path: normalizeFilePath(to) });
        continue;
      }
      const inside = under(files, src);
      if (inside.length === 0) {
        throw new NotFoundError(
          `cannot copy "${src}": not found in volume "${volume}" (list it with: stowage volume ls ${volume} ${parentOf(src) || '/'})`,
        );
      }
      const target = dstIsDir && src !== '' ? join(dst, basename(src)) : dst;
      const prefixLen = src === '' ? 0 : src.length + 1;
      // Joined paths can outgrow the limits that each part kept.
      for (const f of inside) added.push({ ...f, path: normalizeFilePath(join(target, f.path.slice(prefixLen))) });
    }
    applyPuts(files, added, volume, force);
  }
}

function join(dir: string, name: string): string {
  return dir === '' ? name : `${dir}/${name}`;
}

export function applyPuts(files: Map<string, StoredFile>, puts: StoredFile[], volume: string, force: boolean): void {
  const dirs = new Set<string>();
  for (const f of files.values()) for (let p = parentOf(f.path); p !== ''; p = parentOf(p)) dirs.add(p);
  for (const f of puts) {
    if (dirs.has(f.path)) {
      throw new FailedPreconditionError(`cannot write "${f.path}" in volume "${volume}": a directory of that name exists`);
    }
    for (let p = parentOf(f.path); p !== ''; p = parentOf(p)) {
      if (files.has(p)) {
        throw new FailedPreconditionError(`cannot write "${f.path}" in volume "${volume}": "${p}" is a file`);
      }
    }
    if (files.has(f.path) && !force) {
      throw new AlreadyExistsError(
        `"${f.path}" already exists in volume "${volume}" (overwrite it with: stowage volume put -f, or force: true)`,
      );
    }
    files.set(f.path, f);
    for (let p = parentOf(f.path); p !== ''; p = parentOf(p)) dirs.add(p);
  }
}
