#!/usr/bin/env bash
# The main job on the embedded default (no S3, no Redis: a local directory and
# LMDB under ./.stowage): starts `stowage serve`, puts a dataset into a
# volume, puts it again (nothing is transferred the second time), lists it,
# gets it back, checks every byte, reads it again through a FUSE mount
# (`stowage mount`, chunk cache in the work dir), hands the shards out as jobs
# through a queue and records progress in a dict, and stops the server.
# Usage: scripts/demo.sh [--keep]   (--keep leaves the server running)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

work=$(mktemp -d)
port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
export STOWAGE_SERVER="127.0.0.1:$port"
stowage() { node bin/stowage.js "$@"; }

node bin/stowage.js serve --port "$port" --data-dir .stowage > "$work/serve.log" 2>&1 &
server=$!
mounter=""
stop() {
  if [ -n "$mounter" ]; then kill "$mounter" 2>/dev/null || true; wait "$mounter" 2>/dev/null || true; fi
  fusermount -uz "$work/mnt" 2>/dev/null || true
  kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"
}
if [ "${1:-}" != "--keep" ]; then trap stop EXIT; fi
for _ in $(seq 50); do grep -q 'serving on' "$work/serve.log" && break; sleep 0.1; done
cat "$work/serve.log"

echo "== making a sample dataset: one 64 MiB file and 1,000 small files"
mkdir -p "$work/dataset/shards"
head -c $((64 * 1024 * 1024)) /dev/urandom > "$work/dataset/weights.bin"
for i in $(seq 1000); do head -c $((RANDOM % 4096 + 1)) /dev/urandom > "$work/dataset/shards/part-$i.txt"; done

vol="demo-$(date +%s)"
echo "== stowage volume create $vol"
stowage volume create "$vol"
echo "== stowage volume put $vol dataset /"
stowage volume put "$vol" "$work/dataset" /
echo "== the same put again (-f): unchanged data transfers no chunk"
stowage volume put -f "$vol" "$work/dataset" /
echo "== stowage volume ls $vol"
stowage volume ls "$vol"
stowage volume versions "$vol"
echo "== stowage volume get $vol / (into a new directory)"
stowage volume get "$vol" / "$work/back"
(cd "$work/dataset" && find . -type f -exec sha256sum {} + | sort -k2) > "$work/a.sum"
(cd "$work/back" && find . -type f -exec sha256sum {} + | sort -k2) > "$work/b.sum"
if cmp -s "$work/a.sum" "$work/b.sum"; then
  echo "== every byte came back: $(wc -l < "$work/a.sum") files match"
else
  echo "== MISMATCH between the dataset and what came back" >&2
  exit 1
fi
echo "== stowage mount $vol (FUSE, read-only) and every file read through it"
node bin/stowage.js mount "$vol" "$work/mnt" --cache-dir "$work/cache" > "$work/mount.log" 2>&1 &
mounter=$!
for _ in $(seq 100); do grep -q '^mounted' "$work/mount.log" && break; kill -0 "$mounter" 2>/dev/null || break; sleep 0.1; done
cat "$work/mount.log"
(cd "$work/mnt" && find . -type f -exec sha256sum {} + | sort -k2) > "$work/c.sum"
kill -INT "$mounter"; wait "$mounter" || true; mounter=""
if cmp -s "$work/a.sum" "$work/c.sum"; then
  echo "== the mount served every byte: $(wc -l < "$work/c.sum") files match"
else
  echo "== MISMATCH between the dataset and what the mount served" >&2
  exit 1
fi
echo "== jobs through a queue, progress in a dict"
stowage queue create "$vol-jobs"
stowage dict create "$vol-progress"
stowage queue put "$vol-jobs" --json-value '{"shard":"part-1.txt"}' '{"shard":"part-2.txt"}' '{"shard":"part-3.txt"}'
stowage queue len "$vol-jobs"
while job=$(stowage queue get "$vol-jobs" --no-block) && [ -n "$job" ]; do
  echo "worker got $job"
  stowage dict incr "$vol-progress" done > /dev/null
done
stowage dict put "$vol-progress" finished-at "$(date -u +%FT%TZ)" > /dev/null
stowage dict items "$vol-progress"
[ "$(stowage dict get "$vol-progress" done)" = "3" ] || { echo "== expected 3 jobs done" >&2; exit 1; }
echo "== 3 jobs handed out once each and counted"
if [ "${1:-}" = "--keep" ]; then
  echo "server still running (pid $server) on $STOWAGE_SERVER; data under ./.stowage"
fi
