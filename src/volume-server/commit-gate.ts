/**
 * CommitGate: lets garbage collection delete objects without racing a commit
 * of this server. Commits pass through the gate (any number at once) from
 * their start to their index update; a deletion batch runs only while none
 * is inside, and commits arriving meanwhile wait for it (so a steady stream
 * of commits cannot starve a collection). While a collection runs, every
 * commit that lands reports the blobs and tree objects it references, and the
 * collection never deletes those.
 */
export class CommitGate {
  private inside = 0;
  private drained: (() => void) | undefined;
  private closed: Promise<void> | undefined;
  private readonly watchers = new Set<Set<string>>();

  /** Runs a commit through the gate. */
  async pass<T>(fn: () => Promise<T>): Promise<T> {
    while (this.closed) await this.closed;
    this.inside++;
    try {
      return await fn();
    } finally {
      this.inside--;
      if (this.inside === 0) this.drained?.();
    }
  }

  /** Runs `fn` with no commit inside the gate. */
  async exclusively<T>(fn: () => Promise<T>): Promise<T> {
    while (this.closed) await this.closed;
    let open!: () => void;
    this.closed = new Promise<void>((res) => (open = res));
    try {
      if (this.inside > 0) await new Promise<void>((res) => (this.drained = res));
      this.drained = undefined;
      return await fn();
    } finally {
      this.closed = undefined;
      open();
    }
  }

  /** What commits landing from now on reference, until stop(). */
  watch(): { has(hash: string): boolean; stop(): void } {
    const seen = new Set<string>();
    this.watchers.add(seen);
    return { has: (h) => seen.has(h), stop: () => void this.watchers.delete(seen) };
  }

  /** A commit landed referencing these blobs and tree objects. */
  landed(hashes: Iterable<string>): void {
    if (this.watchers.size === 0) return;
    for (const w of this.watchers) for (const h of hashes) w.add(h);
  }
}
