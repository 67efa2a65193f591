// The function bench/calls runs on both sides: a no-op that returns its
// argument. Bundled and run by `stowage worker` runners (ours), and imported
// by the peer's Redis queue workers (peer-worker.ts), so both run the same code.
export function echo(x) {
  return x;
}
