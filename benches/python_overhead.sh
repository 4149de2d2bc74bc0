#!/usr/bin/env bash
# Builds the Python module and the Rust counterpart in release mode, then runs
# benches/python_overhead.py (a Markdown table on stdout).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
VENV="$CARGO_TARGET_DIR/bench-py-venv"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "maturin>=1.7,<2"
# A wheel installed into the venv (`maturin develop` would drop the .so into the source tree).
rm -f "$CARGO_TARGET_DIR"/bench-wheels/rollback_stack-*.whl
(cd rollback-py && VIRTUAL_ENV="$VENV" "$VENV/bin/maturin" build --quiet --release --interpreter "$VENV/bin/python" \
  --out "$CARGO_TARGET_DIR/bench-wheels")
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps \
  "$CARGO_TARGET_DIR"/bench-wheels/rollback_stack-*.whl
cargo build --quiet --release -p rollback-core --example bench_overhead
"$VENV/bin/python" benches/python_overhead.py --rust-bin "$CARGO_TARGET_DIR/${CARGO_BUILD_TARGET:+$CARGO_BUILD_TARGET/}release/examples/bench_overhead" "$@"
