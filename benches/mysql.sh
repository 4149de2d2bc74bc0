#!/usr/bin/env bash
# MySQL/MariaDB: rollback's `mysql` driver side by side with the runbook tools on
# sysbench-like data (4 tables x 250k rows, made with SQL: no sysbench needed):
# `mysqldump` vs capture, `mysql < dump` vs restore, for strategies `dump` and `fast`.
# Not part of the test suite. Writes benches/results/mysql.md.
#
#   bash benches/mysql.sh                 # 4 x 250000 rows in database rbbench
#   ROWS=50000 bash benches/mysql.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
ROWS="${ROWS:-250000}"
TABLES="${TABLES:-4}"
DB="${DB:-rbbench}"
HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-3306}"
URL="mysql://root@$HOST:$PORT/$DB"
WORK="$(mktemp -d)"
my() { mysql -h "$HOST" -P "$PORT" -uroot "$@"; }
cleanup() {
  rm -rf "$WORK"
  for s in $(my -N -e "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE '\\_rollback\\_%'" 2>/dev/null); do
    [ -n "${KEEP_SCHEMAS:-}" ] || my -e "DROP DATABASE \`$s\`" 2>/dev/null || true
  done
}
trap cleanup EXIT
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }
ms() { python3 -c "import json,sys; print(f'{json.loads(sys.argv[1])[\"ms\"]/1000:.2f}')" "$1"; }

DRILL="$CARGO_TARGET_DIR/${CARGO_BUILD_TARGET:+$CARGO_BUILD_TARGET/}release/examples/datadrill"
cargo build -q --release -p rollback-core --features driver-redis,driver-mysql --example datadrill \
  || { [ -x "$DRILL" ] && echo "build failed; using the existing $DRILL" >&2; }

make_data() {
  my -e "DROP DATABASE IF EXISTS \`$DB\`; CREATE DATABASE \`$DB\`"
  for i in $(seq 1 "$TABLES"); do
    my "$DB" -e "CREATE TABLE sbtest$i (
        id INT NOT NULL AUTO_INCREMENT, k INT NOT NULL DEFAULT 0,
        c CHAR(120) NOT NULL DEFAULT '', pad CHAR(60) NOT NULL DEFAULT '',
        PRIMARY KEY (id), KEY k_$i (k)) ENGINE=InnoDB;
      INSERT INTO sbtest$i (k, c, pad)
      SELECT FLOOR(1 + RAND() * $ROWS),
        CONCAT_WS('-', $(for _ in $(seq 10); do printf "LPAD(FLOOR(RAND()*99999999999),11,'0'),"; done | sed 's/,$//')),
        CONCAT_WS('-', $(for _ in $(seq 5); do printf "LPAD(FLOOR(RAND()*99999999999),11,'0'),"; done | sed 's/,$//'))
      FROM seq_1_to_$ROWS;"
  done
}

echo "generating $TABLES x $ROWS rows in $DB" >&2
make_data
SIZE=$(my -N -e "SELECT ROUND(SUM(DATA_LENGTH+INDEX_LENGTH)/1048576) FROM information_schema.TABLES WHERE TABLE_SCHEMA='$DB'")

t0=$(now); mysqldump -h "$HOST" -P "$PORT" -uroot --single-transaction "$DB" > "$WORK/dump.sql"; t1=$(now)
DUMP=$(secs "$t0" "$t1")
echo "mysqldump: ${DUMP}s ($(stat -c %s "$WORK/dump.sql") bytes)" >&2
t0=$(now); my "$DB" < "$WORK/dump.sql"; t1=$(now)
LOAD=$(secs "$t0" "$t1")
echo "mysql < dump: ${LOAD}s" >&2

CAP_D=$("$DRILL" "$WORK/d" capture mysql "url=$URL" strategy=dump)
echo "rollback dump capture: $CAP_D" >&2
my "$DB" -e "UPDATE sbtest1 SET k = k + 1 WHERE id < 1000; DELETE FROM sbtest2 WHERE id < 1000"
RES_D=$("$DRILL" "$WORK/d" restore mysql "url=$URL" strategy=dump)
echo "rollback dump restore: $RES_D" >&2
VER_D=$("$DRILL" "$WORK/d" verify mysql "url=$URL" strategy=dump)
echo "rollback verify: $VER_D" >&2

RES_I=$("$DRILL" "$WORK/d" restore mysql "url=$URL" strategy=dump load_data=true)
echo "rollback dump restore through LOAD DATA LOCAL INFILE: $RES_I" >&2

CAP_F=$("$DRILL" "$WORK/f" capture mysql "url=$URL" strategy=fast)
echo "rollback fast capture: $CAP_F" >&2
my "$DB" -e "UPDATE sbtest1 SET k = k + 1 WHERE id < 1000; DELETE FROM sbtest2 WHERE id < 1000"
RES_F=$("$DRILL" "$WORK/f" restore mysql "url=$URL" strategy=fast 2>&1 | tail -1)
echo "rollback fast restore (takes the ready copy): $RES_F" >&2
my "$DB" -e "UPDATE sbtest1 SET k = k + 1 WHERE id < 1000"
RES_F2=$("$DRILL" "$WORK/f" restore mysql "url=$URL" strategy=fast 2>&1 | tail -1)
echo "rollback fast restore again (copies from the snapshot schema): $RES_F2" >&2
# The swap alone: what the live tables see (one RENAME TABLE of every table).
SWAP=$(python3 - "$HOST" "$PORT" "$DB" "$TABLES" <<'EOF'
import subprocess, sys, time
host, port, db, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def my(sql):
    subprocess.run(["mysql", "-h", host, "-P", port, "-uroot", db, "-e", sql], check=True)
for i in range(1, n + 1):
    my(f"CREATE TABLE IF NOT EXISTS swap{i} LIKE sbtest{i}")
ren = ", ".join(f"sbtest{i} TO old{i}, swap{i} TO sbtest{i}, old{i} TO swap{i}" for i in range(1, n + 1))
t = time.time(); my(f"RENAME TABLE {ren}"); my(f"RENAME TABLE {ren}"); dt = (time.time() - t) / 2
for i in range(1, n + 1):
    my(f"DROP TABLE swap{i}")
print(f"{dt:.3f}")
EOF
)
echo "atomic RENAME TABLE swap of $TABLES tables (incl. mysql client start): ${SWAP}s" >&2
VER_F=$("$DRILL" "$WORK/f" verify mysql "url=$URL" strategy=fast)
my -e "DROP DATABASE \`$DB\`"

mkdir -p benches/results
python3 - "$TABLES" "$ROWS" "$SIZE" "$DUMP" "$LOAD" "$CAP_D" "$RES_D" "$VER_D" "$RES_I" "$CAP_F" "$RES_F" "$VER_F" "$SWAP" "$RES_F2" > benches/results/mysql.md <<'EOF'
import sys, json, os, platform, subprocess
tables, rows, size, dump, load = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
cap_d, res_d, ver_d, res_i, cap_f, res_f, ver_f = (json.loads(x) for x in sys.argv[6:13])
swap = float(sys.argv[13])
res_f2 = json.loads(sys.argv[14])
s = lambda j: j["ms"] / 1000
ver = subprocess.run(["mysql", "-N", "-uroot", "-h127.0.0.1", "-e", "SELECT VERSION()"], capture_output=True, text=True).stdout.strip()
print(f"# MySQL/MariaDB: {tables} x {int(rows):,} sysbench-like rows, {size} MB in InnoDB (`bash benches/mysql.sh`)\n")
print(f"{ver}, {os.cpu_count()} cores, {platform.platform()}\n")
print("| operation | runbook tool | s | rollback | s | ratio (tool / rollback) | peak RSS |")
print("| --- | --- | ---: | --- | ---: | ---: | ---: |")
print(f"| capture | `mysqldump --single-transaction` | {dump:.2f} | `dump`: consistent snapshot streamed to the store | {s(cap_d):.2f} | {dump / s(cap_d):.2f}x | {cap_d['peak_rss_mb']} MB |")
print(f"| restore | `mysql < dump` | {load:.2f} | `dump`: multi-row INSERTs into new tables, indexes after, atomic RENAME swap | {s(res_d):.2f} | {load / s(res_d):.2f}x | {res_d['peak_rss_mb']} MB |")
print(f"| restore | `mysql < dump` | {load:.2f} | `dump` with `load_data = true` (LOAD DATA LOCAL INFILE) | {s(res_i):.2f} | {load / s(res_i):.2f}x | {res_i['peak_rss_mb']} MB |")
print(f"| capture | `mysqldump --single-transaction` | {dump:.2f} | `fast`: in-server copy into a snapshot schema, plus its ready copy | {s(cap_f):.2f} | {dump / s(cap_f):.2f}x | {cap_f['peak_rss_mb']} MB |")
print(f"| restore | `mysql < dump` | {load:.2f} | `fast`, first restore: the ready copy swapped in with one atomic RENAME TABLE | {s(res_f):.2f} | {load / s(res_f):.2f}x | {res_f['peak_rss_mb']} MB |")
print(f"| restore | `mysql < dump` | {load:.2f} | `fast`, again: copy from the snapshot schema + atomic RENAME swap | {s(res_f2):.2f} | {load / s(res_f2):.2f}x | {res_f2['peak_rss_mb']} MB |")
print(f"| restore, live switch only | `mysql < dump` | {load:.2f} | the atomic multi-table RENAME TABLE (what the application sees) | {swap:.3f} | {load / swap:.0f}x | |")
print(f"| verify | — | | `CHECKSUM TABLE` + `SHOW CREATE TABLE` per table (`dump` / `fast`) | {s(ver_d):.2f} / {s(ver_f):.2f} | | |")
print(f"\nDump snapshot size: {cap_d['bytes']:,} bytes.")
EOF
cat benches/results/mysql.md
