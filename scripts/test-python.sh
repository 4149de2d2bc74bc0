#!/usr/bin/env bash
# The Python suite (rollback-py: distribution `rollback-stack`, `import rollback`):
# builds the manylinux wheel and the sdist with maturin, installs each into a fresh
# venv for a smoke run, then runs pytest (stubtest and mypy --strict included) against
# the installed wheel and the real services (scripts/services.sh).
# Needs python3 >= 3.9 with venv, and PyPI reachable on a fresh machine (maturin,
# pytest, mypy).
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
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "maturin>=1.7,<2" "pytest>=7" "mypy>=1.10"

# What users install: an abi3 manylinux wheel (maturin checks the .so against the
# policy: glibc symbols up to 2.34, no library outside it) and an sdist. Debug build:
# the suite checks behaviour; benches/python_overhead.py builds --release.
DIST="$CARGO_TARGET_DIR/py-dist"
rm -rf "$DIST"
mkdir -p "$DIST"
(cd rollback-py && VIRTUAL_ENV="$VENV" "$VENV/bin/maturin" build --quiet --strip --compatibility manylinux_2_34 \
  --interpreter "$VENV/bin/python" --out "$DIST")
(cd rollback-py && "$VENV/bin/maturin" sdist --out "$DIST" >/dev/null)
shopt -s nullglob
wheels=("$DIST"/rollback_stack-*-cp39-abi3-manylinux_2_34_x86_64.whl)
sdists=("$DIST"/rollback_stack-*.tar.gz)
shopt -u nullglob
if [ "${#wheels[@]}" != 1 ] || [ "${#sdists[@]}" != 1 ]; then
  echo "expected one abi3 manylinux wheel and one sdist of rollback-stack in $DIST:" >&2
  ls -l "$DIST" >&2
  exit 1
fi
WHEEL=${wheels[0]}
SDIST=${sdists[0]}

# Each installed into a fresh venv, as a user would, and run from outside the tree.
# The sdist builds with maturin from PyPI (pip's isolated build) and cargo; the dev
# profile keeps CI's time down, the shared target dir its third-party crates.
smoke() {
  local form=$1 artifact=$2 venv="$CARGO_TARGET_DIR/py-smoke-$1"
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv"
  MATURIN_PEP517_ARGS="--profile dev" "$venv/bin/python" -m pip install -q --disable-pip-version-check "$artifact"
  (cd "$(mktemp -d)" && "$venv/bin/python" "$ROOT/rollback-py/tests/smoke.py" "$form")
}
smoke wheel "$WHEEL"
smoke sdist "$SDIST"

# The suite's venv gets the same wheel.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$WHEEL"

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
