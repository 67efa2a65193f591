#!/usr/bin/env bash
# Installs what stowage needs on a fresh Debian machine, then builds it.
# Idempotent: Debian packages are installed only when missing, npm packages
# only when the lock file changed. Usage: scripts/setup.sh [--bench]
set -euo pipefail
cd "$(dirname "$0")/.."

debs=()
need_cmd() { command -v "$1" >/dev/null 2>&1 || debs+=("$2"); }
need_cmd redis-server redis-server   # the dict and queue tests start their own
need_cmd fusermount fuse             # stowage mount: fuse-native loads libfuse.so.2 and calls fusermount
need_cmd ss iproute2                 # a bridge test cuts a worker's connection with ss -K
need_cmd chromium chromium           # the dashboard browser test drives it with playwright-core
[ -e /usr/share/bash-completion/bash_completion ] || debs+=(bash-completion)   # the completion test sources it, as a user's bash does
[ -e /usr/lib/x86_64-linux-gnu/libfuse.so.2 ] || [ -e /lib/x86_64-linux-gnu/libfuse.so.2 ] || ldconfig -p 2>/dev/null | grep -q 'libfuse.so.2 ' || debs+=(fuse)
if [ "${1:-}" = "--bench" ]; then
  need_cmd rclone rclone
  need_cmd s3fs s3fs                 # peer of the mount-read benchmark
fi
if [ ${#debs[@]} -gt 0 ]; then
  mapfile -t debs < <(printf '%s\n' "${debs[@]}" | sort -u)
  echo "setup: installing Debian packages: ${debs[*]}" >&2
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${debs[@]}" >/dev/null
fi

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent build
