/**
 * Reused chunk-sized buffers. Allocating a fresh 8 MiB buffer per chunk makes
 * V8 run full collections for the external memory it sees grow; handing the
 * same few buffers round keeps a 1 GiB transfer from allocating 1 GiB.
 *
 * Invariant: a buffer is released only when nothing reads or writes it any
 * more (its upload finished, or its bytes reached the file).
 */
export class BufferPool {
  private readonly free: Buffer[] = [];
  /** Only memory this pool allocated is ever taken back (never a caller's buffer). */
  private readonly owned = new WeakSet<ArrayBufferLike>();

  constructor(
    readonly size: number,
    private readonly keep: number,
  ) {}

  /** A buffer of exactly `length` bytes (pooled when length fits the pool's size). */
  acquire(length: number): Buffer {
    if (length > this.size) return Buffer.allocUnsafeSlow(length);
    let buf = this.free.pop();
    if (!buf) {
      buf = Buffer.allocUnsafeSlow(this.size);
      this.owned.add(buf.buffer);
    }
    return buf.subarray(0, length);
  }

  /** Gives back a buffer from acquire() (or a view of one); any other buffer is ignored. */
  release(buf: Buffer): void {
    if (!this.owned.has(buf.buffer) || this.free.length >= this.keep) return;
    this.free.push(Buffer.from(buf.buffer, 0, this.size));
  }
}
