/**
 * Merges concurrent calls for one key into one (JuiceFS pkg/chunk/singleflight.go):
 * while a call for a key is running, later callers for that key get its promise
 * instead of starting another. Nothing is remembered once the call settles, so
 * a failure is not cached.
 */
export class Singleflight<T> {
  private readonly calls = new Map<string, Promise<T>>();

  /** The running call for `key`, or a new one of `fn`. */
  do(key: string, fn: () => Promise<T>): Promise<T> {
    const running = this.calls.get(key);
    if (running) return running;
    const call = (async () => {
      try {
        return await fn();
      } finally {
        this.calls.delete(key);
      }
    })();
    this.calls.set(key, call);
    return call;
  }

  /** Resolves once every call running now has settled (successfully or not). */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.calls.values()]);
  }
}
