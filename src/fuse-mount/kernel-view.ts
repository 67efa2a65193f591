/**
 * KernelView: what the kernel may have cached about a mount, and what a
 * reload must make it forget (kernel-refresh.ts does the telling).
 *
 * - Known paths: every path getattr was asked about (each kernel lookup goes
 *   through it), with whether it was a file; up to MAX_SEEN of them, beyond
 *   which every path counts as known (so the set stays bounded; a reload then
 *   retires every changed file, which costs what changed).
 * - The retiring protocol: a file a reload changed or removed, that the kernel
 *   may know, is unlinked through the mount; that unlink is allowed for those
 *   paths only, until the reload ends. libfuse renames one that is still open
 *   to a `.fuse_hidden…` name instead: getattr of that name answers with the
 *   old node until its last close unlinks it.
 * - plan() decides, in one synchronous step with the swap of trees, which of
 *   the changed paths the kernel may know: a lookup answered from the old
 *   tree while the versions were being compared is counted.
 */
import type { FileNode } from './tree.js';
import { parentOf } from './tree.js';
import type { VersionChanges } from './version-diff.js';

/** Paths remembered as possibly known to the kernel (about 100 bytes each); beyond this, every path counts as known. */
const MAX_SEEN = 1 << 17;
/** libfuse renames an unlinked file that is still open to `<dir>/.fuse_hidden<16 hex>`. */
const HIDDEN_PREFIX = '.fuse_hidden';

/** What a reload did, and what the kernel must be told about it (kernel-refresh.ts). */
export interface ReloadPlan {
  from: number;
  to: number;
  added: number;
  changed: number;
  removed: number;
  /** Files the kernel may know under their old identity, to unlink through the mount (allowed until endReload()). */
  unlink: string[];
  /** Paths whose cached lookup (positive or negative) the kernel must redo. */
  revalidate: string[];
}

export class KernelView {
  /** Paths getattr was asked about, true for files; unless `seenAll`. */
  private readonly seen = new Map<string, boolean>();
  private seenAll = false;
  /** While a reload compares versions, the set of known paths does not turn into "all" (hold()). */
  private holding = false;
  /** Files a running reload lets the mount unlink, with their old node when the reload had it. */
  private readonly retiring = new Map<string, FileNode | undefined>();
  /** Old files libfuse renamed to a hidden name while still open, until their last close unlinks them. */
  private readonly hidden = new Map<string, FileNode>();
  /** Paths a running reload makes the kernel look up again, which must not be created meanwhile. */
  private revalidating = new Set<string>();

  /** Whether every path counts as known (the set of known paths outgrew its bound). */
  get knowsAll(): boolean {
    return this.seenAll;
  }

  /** The kernel asked about `path` (found as a file, or not). */
  remember(path: string, isFile: boolean): void {
    if (this.seenAll) return;
    this.seen.set(path, isFile);
    if (this.seen.size > MAX_SEEN && !this.holding) this.forgetPaths();
  }

  /**
   * A reload starts comparing versions: knowsAll stays what it is until
   * release() (the set may grow past its bound meanwhile, by the lookups of
   * that time), so that what the reload listed for it is what plan() expects.
   */
  hold(): void {
    this.holding = true;
  }

  release(): void {
    this.holding = false;
    if (this.seen.size > MAX_SEEN) this.forgetPaths();
  }

  private forgetPaths(): void {
    this.seenAll = true;
    this.seen.clear();
  }

  /** The old node under a hidden name, if libfuse hid one there. */
  hiddenNode(path: string): FileNode | undefined {
    return this.hidden.get(path);
  }

  isHidden(path: string): boolean {
    return this.hidden.has(path);
  }

  /**
   * Fills `plan.unlink` and `plan.revalidate` for `changes` (the trees have
   * just been swapped) and allows those unlinks until endReload(). A path
   * `covered` (by the staging of a writable mount) is left alone: the
   * kernel's view of it is already right.
   */
  plan(changes: VersionChanges, covered: (path: string) => boolean, plan: ReloadPlan): void {
    const known = (path: string): boolean => (this.seenAll || this.seen.has(path)) && !covered(path);
    const retire = (path: string, node: FileNode | undefined): void => {
      if (!known(path) || this.retiring.has(path)) return;
      this.retiring.set(path, node);
      plan.unlink.push(path);
    };
    for (const f of changes.files) retire(f.path, f.node);
    // When every path counts as known, the caller listed the files below removed directories (knowsAll held since it looked).
    if (!this.seenAll && changes.removedDirs.length > 0) {
      // Files below a removed directory that the kernel looked up: the diff did not walk the directory.
      const gone = new Set(changes.removedDirs);
      for (const [path, isFile] of this.seen) if (isFile && isBelow(path, gone)) retire(path, undefined);
    }
    // A removed directory: its lookup is redone (ENOENT), which drops what is below it too.
    for (const path of changes.removedDirs) if (known(path)) plan.revalidate.push(path);
    // A path the kernel remembers as missing: only the topmost added ones can have been looked up.
    for (const path of changes.addedPaths) if (known(path)) plan.revalidate.push(path);
    // A directory in both whose attributes changed (entries below it added or removed).
    for (const path of changes.changedDirs) if (known(path)) plan.revalidate.push(path);
    plan.unlink.sort();
    plan.revalidate.sort();
    this.revalidating = new Set(plan.revalidate);
  }

  /** unlink(2) of a retired file, or of the hidden name of one at its last close: whether it was one. */
  unlink(path: string): boolean {
    return this.retiring.delete(path) || this.hidden.delete(path);
  }

  /**
   * rename(2) of a retired file to a hidden name (libfuse hiding it, open):
   * whether it was one. `open` finds the node of an open file at a path,
   * for a file the reload retired without its node.
   */
  hide(from: string, to: string, open: (path: string) => FileNode | undefined): boolean {
    if (!this.retiring.has(from) || !to.slice(to.lastIndexOf('/') + 1).startsWith(HIDDEN_PREFIX)) return false;
    const node = this.retiring.get(from) ?? open(from);
    this.retiring.delete(from);
    if (node) this.hidden.set(to, node);
    return true;
  }

  /** Whether a running reload is making the kernel look `path` up again. */
  isRevalidating(path: string): boolean {
    return this.revalidating.has(path);
  }

  /** The kernel was told about the last reload: the files it did not unlink are no longer unlinkable. */
  endReload(): void {
    this.retiring.clear();
    this.revalidating = new Set();
  }
}

/** Whether `path` is below one of the directories in `dirs`. */
function isBelow(path: string, dirs: Set<string>): boolean {
  for (let p = parentOf(path); p !== '/'; p = parentOf(p)) if (dirs.has(p)) return true;
  return false;
}
