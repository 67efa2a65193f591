#!/usr/bin/env bash
# The whole test suite on this machine: set-up, build, type check, vitest
# against real components (s3rver and stowage servers started by the tests).
# It runs on the node first in PATH (scripts/test-node.sh 24 puts Node 24 there).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
mkdir -p .test-tmp
started=$SECONDS
status=0
npm test -- --reporter=default --reporter=json --outputFile=.test-tmp/results.json "$@" || status=$?
if [ -f .test-tmp/results.json ]; then
  node -e '
    const r = require("./.test-tmp/results.json");
    const skipped = r.numPendingTests + r.numTodoTests;
    const s = Number(process.argv[1]);
    console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${skipped} skipped (Node ${process.version}, ${Math.floor(s / 60)} min ${s % 60} s)`);
  ' "$((SECONDS - started))"
fi
exit $status
