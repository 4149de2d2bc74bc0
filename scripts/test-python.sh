#!/usr/bin/env bash
# The Python suite (rollback-py, `import rollback`): builds the wheel with maturin into
# a venv, installs it, and runs pytest against the real services (scripts/services.sh).
# Needs python3 >= 3.9 with venv, and PyPI reachable on a fresh machine (maturin, pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
VENV="${ROLLBACK_PY_VENV:-$CARGO_TARGET_DIR/py-venv}"

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys, venv; assert sys.version_info >= (3, 9)' 2>/dev/null; then
  echo "python3 >= 3.9 with the venv module is required (apt-get install python3 python3-venv)" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import ensurepip' 2>/dev/null; then
  rm -rf "$VENV"
  if ! "$PYTHON" -m venv "$VENV"; then
    if command -v apt-get >/dev/null 2>&1; then
      DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
      pyver=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python${pyver}-venv" >/dev/null || \
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    fi
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
  fi
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "maturin>=1.7,<2" "pytest>=7"

# The wheel users get (stubs and py.typed included), installed like theirs. Debug
# build: the suite checks behaviour; benches/python_overhead.py builds --release.
rm -f "$CARGO_TARGET_DIR"/wheels/rollback-*.whl
(cd rollback-py && VIRTUAL_ENV="$VENV" "$VENV/bin/maturin" build --quiet --strip --interpreter "$VENV/bin/python" \
  --out "$CARGO_TARGET_DIR/wheels")
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps \
  "$CARGO_TARGET_DIR"/wheels/rollback-*.whl

# From outside the source tree, so `import rollback` is the installed wheel.
cd "$ROOT/rollback-py/tests"
set +e
"$VENV/bin/python" -m pytest -p no:cacheprovider -q -rfE .
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$rc"
