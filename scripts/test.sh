#!/usr/bin/env bash
# The whole test suite: Rust, then every scripts/test-*.sh (Python, Node, examples).
# Installs and starts what it needs when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
export CARGO_TERM_COLOR=never
# Every build names the host triple as its target. `napi build` (scripts/test-node.sh)
# always passes `--target`, and cargo keeps such builds under target/<triple>/: without
# this the Node addon rebuilt every dependency apart from the test build (5 minutes
# of a 39-minute run on a two-core machine). With it, all builds share one tree.
export CARGO_BUILD_TARGET="${CARGO_BUILD_TARGET:-$(rustc -vV | sed -n 's/^host: //p')}"
# Each stage says how long it took, so a slow CI run shows where its time went.
stage_start=$SECONDS
stage() { echo "== ($((SECONDS - stage_start)) s) $*"; }

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is required (rustup)" >&2; exit 1
fi
bash scripts/services.sh
# The TLS-only servers (a PostgreSQL cluster, Redis, MariaDB, an https endpoint) the
# TLS tests use; on their own ports, stopped whatever happens.
export ROLLBACK_TLS_DIR="${ROLLBACK_TLS_DIR:-/tmp/rollback-tls-servers}"
bash scripts/tls-servers.sh start "$ROLLBACK_TLS_DIR"
# The docker tests start a second engine, `dockerd --tlsverify`, on 2376 when they need it.
export ROLLBACK_DOCKER_TLS_DIR="${ROLLBACK_DOCKER_TLS_DIR:-/tmp/rollback-docker-tls}"
# ... and an sshd on 127.0.0.1:2022 in front of this machine's engine (`ssh://` hosts).
export ROLLBACK_SSH_DIR="${ROLLBACK_SSH_DIR:-/tmp/rollback-ssh-server}"
trap 'bash scripts/ssh-server.sh stop "$ROLLBACK_SSH_DIR" || true; bash scripts/docker-tls.sh stop "$ROLLBACK_DOCKER_TLS_DIR" || true; bash scripts/tls-servers.sh stop "$ROLLBACK_TLS_DIR" || true' EXIT
for s in scripts/setup-*.sh; do [ -e "$s" ] && bash "$s"; done

stage "cargo fmt / clippy"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# A build without drivers must stay clean too (`--all-features` would hide broken cfgs).
# (The workspace run above already checks rollback-core's tests with `testkit`: the
# custom-driver example's dev-dependency turns it on.)
cargo clippy -p rollback-core --no-default-features -- -D warnings

stage "cargo test"
cargo test --workspace --no-fail-fast 2>&1 | tee "$CARGO_TARGET_DIR/cargo-test.log"
test "${PIPESTATUS[0]}" = 0

# Every driver against the driver contract, on the real services; never skipped.
# The workspace run above already includes it (the custom-driver example's
# dev-dependency turns `testkit` on); should feature unification ever stop doing
# so, it runs here instead of silently not at all.
if ! grep -q "Running tests/behavior/main.rs" "$CARGO_TARGET_DIR/cargo-test.log"; then
  stage "behaviour suite"
  cargo test -p rollback-core --features testkit --test behavior
fi

# The bindings first: the runbook examples use them.
for s in scripts/test-python.sh scripts/test-node.sh scripts/test-*.sh; do
  [ -e "$s" ] || continue
  case " ${ran:-} " in *" $s "*) continue ;; esac
  ran="${ran:-} $s"
  stage "$s"
  bash "$s"
done
stage "all suites passed"
