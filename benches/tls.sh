#!/usr/bin/env bash
# PostgreSQL over TLS against plaintext, on one server and the same pgbench data
# (scale 10): the `postgres` driver's dump capture and restore with
# sslmode=verify-full (the test CA) and with sslmode=disable. The server is the
# TLS cluster of scripts/tls-servers.sh, given a plaintext `host` line for the
# length of the bench. Not part of the test suite. Writes benches/results/tls.md.
#
#   bash benches/tls.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
SCALE="${SCALE:-10}"
RUNS="${RUNS:-7}"
DIR="${ROLLBACK_TLS_DIR:-/tmp/rollback-tls-servers}"
PG_BIN=/usr/lib/postgresql/15/bin
DB=rb_bench_tls
bash scripts/tls-servers.sh start "$DIR" >/dev/null
# shellcheck disable=SC1091
source "$DIR/env"
as_pg() { (cd / && runuser -u postgres -- "$@"); }
admin() { as_pg psql -h "$DIR/pgsock" -p "$PG_TLS_PORT" -U postgres -qAtX -v ON_ERROR_STOP=1 "$@"; }
WORK="$(mktemp -d)"
cleanup() {
  admin -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true
  sed -i '/^host all all 127.0.0.1\/32 scram-sha-256 # bench$/d' "$DIR/pg/pg_hba.conf"
  as_pg "$PG_BIN/pg_ctl" -D "$DIR/pg" reload >/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

# Plaintext allowed too, for this bench only: hostssl lines come first, so a TLS
# connection still matches them.
echo "host all all 127.0.0.1/32 scram-sha-256 # bench" >>"$DIR/pg/pg_hba.conf"
as_pg "$PG_BIN/pg_ctl" -D "$DIR/pg" reload >/dev/null
sleep 1
admin -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
admin -c "CREATE DATABASE $DB OWNER rollback_tls"

PLAIN="postgres://rollback_tls:tls-secret-PW1@127.0.0.1:$PG_TLS_PORT/$DB?sslmode=disable"
TLS="postgres://rollback_tls:tls-secret-PW1@localhost:$PG_TLS_PORT/$DB?sslmode=verify-full&sslrootcert=$TLS_CA"
echo "pgbench -i -s $SCALE" >&2
pgbench -i -q -s "$SCALE" "$PLAIN" >/dev/null 2>&1
cargo build -q --release -p rollback-core --features driver-postgres --example datadrill
DRILL="$CARGO_TARGET_DIR/${CARGO_BUILD_TARGET:+$CARGO_BUILD_TARGET/}release/examples/datadrill"
mutate() { psql "$PLAIN" -qAtX -c "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 100 = 0"; }
checkpoint() { admin -c CHECKPOINT; }
jmedian() { python3 -c "
import sys, json, statistics
print(statistics.median(json.loads(x)['ms'] for x in sys.argv[1:]))" "$@"; }

declare -A CAP RES
# Interleaved, so drift of the machine lands on both alike.
for i in $(seq "$RUNS"); do
  for mode in plain tls; do
    url=$PLAIN; [ "$mode" = tls ] && url=$TLS
    rm -rf "$WORK/$mode"; mkdir -p "$WORK/$mode"
    checkpoint; CAP[$mode]+=" $("$DRILL" "$WORK/$mode" capture postgres "url=$url" strategy=dump)"
    mutate; checkpoint; RES[$mode]+=" $("$DRILL" "$WORK/$mode" restore postgres "url=$url" strategy=dump)"
  done
done
med() { # shellcheck disable=SC2086
  jmedian $1; }
PC=$(med "${CAP[plain]}"); TC=$(med "${CAP[tls]}"); PR=$(med "${RES[plain]}"); TR=$(med "${RES[tls]}")
mkdir -p benches/results
python3 - "$SCALE" "$RUNS" "$PC" "$TC" "$PR" "$TR" >benches/results/tls.md <<'PY'
import sys, os, platform
scale, runs, pc, tc, pr, tr = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:7])
print(f"# PostgreSQL over TLS against plaintext: pgbench scale {scale} (`bash benches/tls.sh`)\n")
print(f"{os.cpu_count()} cores, {platform.platform()}, PostgreSQL 15, one server (the TLS test cluster, fsync off).")
print(f"Median of {runs} interleaved runs, each after a CHECKPOINT; strategy `dump`.\n")
print("| operation | plaintext (`sslmode=disable`) s | TLS (`sslmode=verify-full`) s | TLS / plaintext |")
print("| --- | --- | --- | --- |")
print(f"| capture | {pc / 1000:.2f} | {tc / 1000:.2f} | {tc / pc:.2f}× |")
print(f"| restore | {pr / 1000:.2f} | {tr / 1000:.2f} | {tr / pr:.2f}× |")
PY
cat benches/results/tls.md
