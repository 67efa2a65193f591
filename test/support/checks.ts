/**
 * Assertions shared by the bad-input and fault tests: "this fails with that
 * error class, code and advice" and "nothing about the volume changed".
 */
import { expect } from 'vitest';
import type { ErrorCode, StowageError, Volume } from '../../src/client/index.js';
import type { BlobStore } from '../../src/volume-server/store/interface.js';

type ErrorClass = abstract new (...args: never[]) => StowageError;

/** The value `fn` threw or rejected with; fails the test when it succeeded. */
export async function failureOf(fn: () => unknown): Promise<unknown> {
  try {
    await fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected the call to fail, but it succeeded');
}

/**
 * Expects `fn` to fail with `cls` carrying `code`, its message matching every
 * pattern (what went wrong and what to do about it).
 */
export async function expectFailure(
  fn: () => unknown,
  cls: ErrorClass,
  code: ErrorCode,
  ...patterns: RegExp[]
): Promise<StowageError> {
  const err = await failureOf(fn);
  expect(err, `expected ${cls.name}, got: ${String(err)}`).toBeInstanceOf(cls);
  const e = err as StowageError;
  expect(e.code).toBe(code);
  for (const p of patterns) expect(e.message).toMatch(p);
  return e;
}

/** Reads a whole async iterable (readFile) and drops the bytes. */
export async function drain(it: AsyncIterable<Buffer>): Promise<void> {
  for await (const _ of it) {
    // reading is the point
  }
}

/** Reads an async iterable until it ends or fails, keeping what it yielded. */
export async function readUntilFailure(it: AsyncIterable<Buffer>): Promise<{ yielded: Buffer[]; error: unknown }> {
  const yielded: Buffer[] = [];
  try {
    for await (const b of it) yielded.push(b);
  } catch (error) {
    return { yielded, error };
  }
  return { yielded, error: undefined };
}

export interface VolumeSnapshot {
  latestVersion: number;
  versions: number[];
  files: { path: string; type: string; size: number }[];
}

/** What a volume looks like from the SDK: its head, its versions, its files. */
export async function snapshot(vol: Volume): Promise<VolumeSnapshot> {
  const [info, versions, files] = await Promise.all([vol.info(), vol.versions(), vol.listdir('/', { recursive: true })]);
  return {
    latestVersion: info.latestVersion,
    versions: versions.map((v) => v.version),
    files: files.map((f) => ({ path: f.path, type: f.type, size: f.size })).sort((a, b) => (a.path < b.path ? -1 : 1)),
  };
}

/** Version records in the store: a refused commit must not add one. */
export async function versionKeys(store: BlobStore): Promise<string[]> {
  const keys: string[] = [];
  for await (const k of store.list('versions/')) keys.push(k);
  return keys;
}

export function escapeRegExp(s: string): RegExp {
  return new RegExp(s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&'));
}
