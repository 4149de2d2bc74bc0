#!/usr/bin/env bash
# What a snapshot costs the trading writes that go on meanwhile: the latency of a
# fixed-rate writer (sysbench oltp_write_only, --rate) while snapshots are taken back
# to back, against the same writer while the runbook's dump tool runs back to back
# (`pg_dump -Fc`, `mysqldump --single-transaction`), and against no snapshot at all.
# p99 and max per transaction, and the writer's errors. Not part of the test suite.
# Writes benches/results/writers.md.
#
#   bash benches/writers.sh                      # 4 x 100,000 rows, 100 tx/s, 20 s per case
#   ROWS=250000 RATE=200 SECS=30 bash benches/writers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
ROWS="${ROWS:-100000}"
TABLES="${TABLES:-4}"
RATE="${RATE:-100}"
SECS="${SECS:-20}"
RATE_LIMIT="${RATE_LIMIT:-20MB}" # the paced case's `max_rate`
PG=postgres://postgres@127.0.0.1:5432
PGDB=rb_bench_writers
MYDB=rb_bench_writers
WORK="$(mktemp -d)"

command -v sysbench >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sysbench >/dev/null

cleanup() {
  for d in "$WORK"/*/; do
    [ -e "$d/rollback.toml" ] && (cd "$d" && "$RB" gc --keep 1 >/dev/null 2>&1 || true)
  done
  psql "$PG/postgres" -qAtX -c "SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE)', datname) FROM pg_database
    WHERE datname LIKE '${PGDB}%'" | while read -r s; do psql "$PG/postgres" -qAtX -c "$s"; done
  mysql -uroot -h127.0.0.1 -N -e "SELECT CONCAT('DROP DATABASE \`', SCHEMA_NAME, '\`;') FROM information_schema.SCHEMATA
    WHERE SCHEMA_NAME = '$MYDB'" | mysql -uroot -h127.0.0.1 || true
  for f in "$WORK"/*/.rollback/snapshots/*.json; do
    [ -e "$f" ] || continue
    python3 -c "import json,sys; m=json.load(open(sys.argv[1])); [print(p['state'].get(k)) for p in m['parts'] for k in ('snapshot_schema','ready_schema') if p['state'].get(k)]" "$f"
  done | while read -r s; do mysql -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS \`$s\`"; done
  rm -rf "$WORK"
}
trap cleanup EXIT
cargo build -q --release -p rollback-cli
RB="$CARGO_TARGET_DIR/${CARGO_BUILD_TARGET:+$CARGO_BUILD_TARGET/}release/rollback"

SB_PG=(--db-driver=pgsql --pgsql-host=127.0.0.1 --pgsql-user=postgres --pgsql-db="$PGDB")
SB_MY=(--db-driver=mysql --mysql-host=127.0.0.1 --mysql-user=root --mysql-db="$MYDB" --mysql-ignore-errors=all)
SB_COMMON=(--tables="$TABLES" --table-size="$ROWS")

echo "preparing $TABLES x $ROWS rows in PostgreSQL and MariaDB" >&2
psql "$PG/postgres" -qAtX -c "DROP DATABASE IF EXISTS $PGDB WITH (FORCE)" -c "CREATE DATABASE $PGDB"
sysbench oltp_write_only "${SB_PG[@]}" "${SB_COMMON[@]}" prepare >/dev/null
mysql -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS $MYDB; CREATE DATABASE $MYDB"
sysbench oltp_write_only "${SB_MY[@]}" "${SB_COMMON[@]}" prepare >/dev/null

# The writer for SECS seconds while `$2` runs back to back; prints "p99 max errors loops".
measure() { # sysbench driver args name, snapshot command ("" for none)
  local args="$1" cmd="$2" out loops=0
  local flag="$WORK/running.$$"
  : >"$flag"
  if [ -n "$cmd" ]; then
    ( while [ -e "$flag" ]; do eval "$cmd" >/dev/null 2>&1 || echo "snapshot command failed" >&2; echo x; done ) >"$WORK/loops" &
    local bg=$!
  fi
  # shellcheck disable=SC2086
  out=$(sysbench oltp_write_only $args "${SB_COMMON[@]}" --rate="$RATE" --time="$SECS" --percentile=99 \
    --report-interval=0 run 2>&1)
  rm -f "$flag"
  if [ -n "$cmd" ]; then wait "$bg" || true; loops=$(wc -l <"$WORK/loops"); fi
  python3 - "$out" "$loops" <<'EOF'
import re, sys
out, loops = sys.argv[1], sys.argv[2]
p99 = re.search(r"99th percentile:\s+([\d.]+)", out)
mx = re.search(r"max:\s+([\d.]+)", out)
err = re.search(r"ignored errors:\s+(\d+)", out)
fatal = next((l.split("FATAL:", 1)[1].strip() for l in out.splitlines() if "FATAL:" in l), None)
if p99 and not fatal:
    print(p99.group(1), mx.group(1) if mx else "", err.group(1) if err else "0", loops, sep="\t")
else:
    # The writer gave up: say why instead of a latency.
    print("-", "-", "stopped: " + (fatal or "no result")[:120].replace("|", "/"), loops, sep="\t")
EOF
}

stack_dir() { # name, component toml
  mkdir -p "$WORK/$1"
  printf '[[component]]\nname = "db"\n%s\n' "$2" >"$WORK/$1/rollback.toml"
  echo "$WORK/$1"
}
PGD=$(stack_dir pg-dump "driver = \"postgres\"
url = \"$PG/$PGDB\"
strategy = \"dump\"")
PGD1=$(stack_dir pg-dump1 "driver = \"postgres\"
url = \"$PG/$PGDB\"
strategy = \"dump\"
jobs = 1")
PGR=$(stack_dir pg-rate "driver = \"postgres\"
url = \"$PG/$PGDB\"
strategy = \"dump\"
max_rate = \"$RATE_LIMIT\"")
PGF=$(stack_dir pg-fast "driver = \"postgres\"
url = \"$PG/$PGDB\"
strategy = \"fast\"")
MYD=$(stack_dir my-dump "driver = \"mysql\"
url = \"mysql://root@127.0.0.1:3306/$MYDB\"
strategy = \"dump\"")
MYF=$(stack_dir my-fast "driver = \"mysql\"
url = \"mysql://root@127.0.0.1:3306/$MYDB\"
strategy = \"fast\"")

PGA="${SB_PG[*]}"
MYA="${SB_MY[*]}"
declare -A R
echo "measuring (each case ${SECS}s at ${RATE} tx/s)" >&2
R[pg_idle]=$(measure "$PGA" "")
R[pg_tool]=$(measure "$PGA" "pg_dump -Fc -f $WORK/pg.dump $PG/$PGDB")
R[pg_dump]=$(measure "$PGA" "(cd $PGD && $RB snapshot && $RB gc --keep 1)")
R[pg_dump1]=$(measure "$PGA" "(cd $PGD1 && $RB snapshot && $RB gc --keep 1)")
R[pg_rate]=$(measure "$PGA" "(cd $PGR && $RB snapshot && $RB gc --keep 1)")
R[pg_fast]=$(measure "$PGA" "(cd $PGF && $RB snapshot && $RB gc --keep 1)")
R[my_idle]=$(measure "$MYA" "")
R[my_tool]=$(measure "$MYA" "mysqldump -uroot -h127.0.0.1 --single-transaction $MYDB > $WORK/my.sql")
R[my_dump]=$(measure "$MYA" "(cd $MYD && $RB snapshot && $RB gc --keep 1)")
R[my_fast]=$(measure "$MYA" "(cd $MYF && $RB snapshot && $RB gc --keep 1)")

{
  echo "# Writer latency during snapshots: $TABLES x $ROWS rows, sysbench oltp_write_only at $RATE tx/s, ${SECS} s per case (\`bash benches/writers.sh\`)"
  echo
  echo "$(psql "$PG/postgres" -qAtX -c 'SHOW server_version' | cut -d' ' -f1) PostgreSQL, $(mysql -uroot -h127.0.0.1 -N -e 'SELECT VERSION()'), $(nproc) cores"
  echo
  echo "Each snapshot command runs back to back for the whole case (\`rollback gc --keep 1\` after each, so copies do not pile up)."
  echo "p99 and max are per writer transaction, in ms; the ratio is p99 against the runbook tool's."
  echo
  echo "| database | while | p99 ms | max ms | writer errors | snapshots taken | p99 / tool's |"
  echo "| --- | --- | ---: | ---: | ---: | ---: | ---: |"
  for k in pg_idle pg_tool pg_dump pg_dump1 pg_rate pg_fast my_idle my_tool my_dump my_fast; do
    IFS=$'\t' read -r p99 mx err loops <<<"${R[$k]}"
    db=${k%%_*}; what=${k#*_}
    tool=${R[${db}_tool]%%$'\t'*}
    case "$k" in
      pg_idle|my_idle) label="nothing" ;;
      pg_tool) label="\`pg_dump -Fc\`" ;;
      my_tool) label="\`mysqldump --single-transaction\`" ;;
      *_dump) label="\`rollback snapshot\`, strategy \`dump\`" ;;
      *_dump1) label="\`rollback snapshot\`, strategy \`dump\`, \`jobs = 1\`" ;;
      *_rate) label="\`rollback snapshot\`, strategy \`dump\`, \`max_rate = \"$RATE_LIMIT\"\`" ;;
      *_fast) label="\`rollback snapshot\`, strategy \`fast\`" ;;
    esac
    case "$what" in
      idle) ratio=""; loops="" ;;
      tool) ratio="1.00x" ;;
      *) ratio=$(python3 -c "import sys
try: print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}x')
except ValueError: print('')" "$p99" "$tool") ;;
    esac
    name=PostgreSQL; [ "$db" = my ] && name=MariaDB
    echo "| $name | $label | $p99 | $mx | $err | $loops | $ratio |"
  done
} > benches/results/writers.md
cat benches/results/writers.md
