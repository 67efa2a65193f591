#!/usr/bin/env bash
# The whole test suite on this machine: set-up, build, type check, vitest
# against real components (s3rver and stowage servers started by the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
mkdir -p .test-tmp
status=0
npm test -- --reporter=default --reporter=json --outputFile=.test-tmp/results.json "$@" || status=$?
if [ -f .test-tmp/results.json ]; then
  node -e '
    const r = require("./.test-tmp/results.json");
    const skipped = r.numPendingTests + r.numTodoTests;
    console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${skipped} skipped`);
  '
fi
exit $status
