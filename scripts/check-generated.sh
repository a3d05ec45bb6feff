#!/usr/bin/env bash
# Fails when libs/proto/src/gen or libs/node-sdk/src/gen is not what `npm run generate` makes from proto/.
set -euo pipefail
cd "$(dirname "$0")/.."
npx buf generate
if [ -n "$(git status --porcelain -- libs/proto/src/gen libs/node-sdk/src/gen)" ]; then
  echo "generated code is stale: run 'npm run generate' and commit libs/proto/src/gen and libs/node-sdk/src/gen" >&2
  git status --short -- libs/proto/src/gen libs/node-sdk/src/gen >&2
  exit 1
fi
echo "generated code is current"
