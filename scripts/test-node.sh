#!/usr/bin/env bash
# The Node suite (rollback-node, npm package `rollback`): installs the npm dev
# dependencies locally, builds the addon with @napi-rs/cli, runs `node --test`.
# Needs node >= 18 and npm (the npm registry reachable on a fresh machine).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "node and npm are required (apt-get install nodejs npm)" >&2
  exit 1
fi

cd rollback-node
# Not `npm ci`: npm leaves other platforms' optional packages of @napi-rs/cli out of
# the lock file and `ci` then refuses it. The lock still pins every version.
npm install --no-save --no-audit --no-fund --loglevel=error

# Debug build (the suite checks behaviour, not speed); benches/ uses --release.
npx napi build --platform --js binding.js --dts index.d.ts --no-const-enum
# ~100 MB of debug info would make `npm pack` in the suite crawl; symbols are kept.
strip --strip-debug rollback.*.node 2>/dev/null || true

# The declarations are generated from the Rust sources and checked in: they must match.
if command -v git >/dev/null 2>&1 && git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1 \
  && git -C "$ROOT" ls-files --error-unmatch rollback-node/index.d.ts >/dev/null 2>&1; then
  if ! git -C "$ROOT" diff --exit-code -- rollback-node/index.d.ts rollback-node/binding.js; then
    echo "rollback-node/index.d.ts or binding.js differs from the generated one: commit the regenerated files" >&2
    exit 1
  fi
fi

node --test --test-concurrency=2 test/*.test.mjs
