#!/usr/bin/env bash
# Installs pm2 from npm into target/tools/pm2 (project-local, ignored by git) for the
# `pm2` driver's tests, which find it there or at $ROLLBACK_PM2_BIN. Checks that it runs
# with PM2_HOME in a scratch dir (never ~/.pm2) and kills the daemon it started.
# Safe to run again: an installed pm2 is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup-pm2] %s\n' "$*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }

if ! have node || ! have npm; then
  log "installing nodejs and npm"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi

PREFIX="$PWD/target/tools/pm2"
BIN="$PREFIX/node_modules/.bin/pm2"
if ! [ -x "$BIN" ]; then
  log "installing pm2 into $PREFIX"
  mkdir -p "$PREFIX"
  npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error pm2@6 >/dev/null
fi

home=$(mktemp -d)
trap 'PM2_HOME="$home" "$BIN" kill >/dev/null 2>&1 || true; rm -rf "$home"' EXIT
PM2_HOME="$home" "$BIN" jlist >/dev/null
log "pm2 $(PM2_HOME="$home" "$BIN" --version | tail -1) ready at $BIN (tests: ROLLBACK_PM2_BIN overrides)"
