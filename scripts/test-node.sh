#!/usr/bin/env bash
# The whole test suite (scripts/test.sh) on one Node.js line: its pinned release
# (scripts/node-line.sh) goes first in PATH, so npm, the build, vitest's workers
# and every process the tests start (all spawned with process.execPath, the CLI
# through bin/stowage.js's `env node`) run on it. The node_modules tree is shared:
# its native addons load on 20, 22 and 24 (N-API prebuilds), and dist is plain JS.
# Usage: scripts/test-node.sh 22|24 [vitest args]
set -euo pipefail
cd "$(dirname "$0")/.."
line=${1:?usage: scripts/test-node.sh 22|24 [vitest args]}
shift
bin=$(scripts/node-line.sh "$line")
export PATH="$bin:$PATH"
exec scripts/test.sh "$@"
