#!/usr/bin/env bash
# Coverage-guided fuzzing (`cargo fuzz`, libFuzzer) of every reader of outside input:
# the config loader, the health-check parser, the record, manifest and journal
# readers and the redis snapshot format. Each target runs for a bounded time
# (FUZZ_SECONDS, default 20) from the corpus committed in fuzz/corpus/; any crash
# fails the run and its input is kept under $CARGO_TARGET_DIR/fuzz-artifacts/.
#
# Runs on the stable toolchain: `-s none` (no sanitizer) needs no nightly flag, and
# the coverage instrumentation (`-C passes=sancov-module`) is stable. Safe Rust has
# no memory errors for a sanitizer to find; the targets look for panics, hangs
# (-timeout) and runaway allocation (-rss_limit_mb, -malloc_limit_mb).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
SECONDS_PER_TARGET="${FUZZ_SECONDS:-20}"
CARGO_FUZZ_VERSION=0.13.2

if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  cargo install --quiet --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

# Its own target dir: instrumented objects must never replace the test build's.
FUZZ_TARGET_DIR="$CARGO_TARGET_DIR/fuzz"
cd fuzz
cargo fuzz build -s none --target-dir "$FUZZ_TARGET_DIR"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
ARTIFACTS="$CARGO_TARGET_DIR/fuzz-artifacts"

# One target; its verdict goes to $WORK/<target>.verdict.
fuzz_one() {
  local t=$1
  mkdir -p "$WORK/$t" "$ARTIFACTS/$t"
  # New inputs go to the scratch directory (first); the committed corpus is read only.
  if cargo fuzz run -s none --target-dir "$FUZZ_TARGET_DIR" "$t" "$WORK/$t" "corpus/$t" -- \
      -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
      -artifact_prefix="$ARTIFACTS/$t/" -print_final_stats=1 >"$WORK/$t.log" 2>&1; then
    echo "fuzz $t: $(grep -o 'Done [0-9]* runs in [0-9]* second(s)' "$WORK/$t.log" || echo done), no crash" >"$WORK/$t.verdict"
  else
    { echo "fuzz $t: FAILED; the input that failed is in $ARTIFACTS/$t/"
      grep -E "panicked|ERROR|SUMMARY|Test unit written" "$WORK/$t.log" | head -20; } >"$WORK/$t.verdict"
  fi
}

# A libFuzzer process uses one core: run as many targets at once as there are cores,
# each for its full time (the same fuzzing, in a fraction of the wall time).
JOBS=$(nproc 2>/dev/null || echo 2)
running=0
targets=()
for src in fuzz_targets/*.rs; do
  t=$(basename "$src" .rs)
  targets+=("$t")
  fuzz_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$JOBS" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait
failed=0
for t in "${targets[@]}"; do
  cat "$WORK/$t.verdict"
  grep -q "no crash" "$WORK/$t.verdict" || failed=1
done
exit "$failed"
