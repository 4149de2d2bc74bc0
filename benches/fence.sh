#!/usr/bin/env bash
# The write fence of a rollback, per driver and strategy: how long other clients'
# writes are refused (the record's `fences[].window_ms`), against the whole rollback
# (safety snapshot, restore, comparison) — on pgbench scale 10 for PostgreSQL, a
# 250k-row table for MySQL/MariaDB and SQLite (WAL and rollback-journal mode), and
# 250k keys for Redis, each restored after a 1% update.
# Not part of the test suite. Writes benches/results/fence.md.
#
#   bash benches/fence.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
RUNS="${RUNS:-3}"
PG=postgres://postgres@127.0.0.1:5432
WORK="$(mktemp -d)"
cleanup() {
  psql "$PG/postgres" -qAtX -c "SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE)', datname) FROM pg_database
    WHERE datname LIKE 'rb\\_bench\\_fence%'" | while read -r s; do psql "$PG/postgres" -qAtX -c "$s"; done
  mysql -uroot -h127.0.0.1 -N -e "SELECT CONCAT('DROP DATABASE \`', SCHEMA_NAME, '\`;') FROM information_schema.SCHEMATA
    WHERE SCHEMA_NAME = 'rb_bench_fence'" | mysql -uroot -h127.0.0.1 || true
  for f in "$WORK"/*/.rollback/snapshots/*.json; do
    [ -e "$f" ] || continue
    python3 -c "import json,sys; m=json.load(open(sys.argv[1])); [print(p['state'].get(k)) for p in m['parts'] for k in ('snapshot_schema','ready_schema') if p['state'].get(k)]" "$f"
  done | while read -r s; do mysql -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS \`$s\`"; done
  redis-cli -n 15 FLUSHDB >/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
cargo build -q --release -p rollback-cli
RB="$CARGO_TARGET_DIR/${CARGO_BUILD_TARGET:+$CARGO_BUILD_TARGET/}release/rollback"

# One case: config body, a change; prints "window_ms total_ms" medians.
run_case() { # name, component toml, mutate command
  local dir="$WORK/$1" w=() t=()
  mkdir -p "$dir"
  printf '[[component]]\nname = "db"\n%s\n' "$2" >"$dir/rollback.toml"
  (cd "$dir" && "$RB" snapshot >/dev/null)
  for _ in $(seq "$RUNS"); do
    eval "$3"
    local rec
    rec=$(cd "$dir" && "$RB" --json rollback latest --yes 2>/dev/null || true)
    read -r a b < <(python3 -c "
import json, sys
r = json.loads(sys.argv[1])
assert r['status'] == 'succeeded', r
print(r['fences'][0]['window_ms'], r['duration_ms'])" "$rec")
    w+=("$a"); t+=("$b")
  done
  python3 -c "import statistics, sys; n=len(sys.argv)//2; a=sys.argv[1:n+1]; b=sys.argv[n+1:]; print(int(statistics.median(map(int,a))), int(statistics.median(map(int,b))))" "${w[@]}" "${t[@]}"
}

psql "$PG/postgres" -qAtX -c "CREATE DATABASE rb_bench_fence_dump" -c "CREATE DATABASE rb_bench_fence_fast"
for s in dump fast; do pgbench -i -q -s 10 "$PG/rb_bench_fence_$s" >/dev/null 2>&1; done
mysql -uroot -h127.0.0.1 -e "CREATE DATABASE rb_bench_fence"
mysql -uroot -h127.0.0.1 -D rb_bench_fence -e "CREATE TABLE t (id INT PRIMARY KEY, k INT, c CHAR(120), pad CHAR(60));
  INSERT INTO t SELECT seq, seq % 1000, REPEAT('c', 120), REPEAT('p', 60) FROM seq_1_to_250000"

# "rollback latest" is the newest snapshot: the one taken by run_case (safety
# snapshots are not offered as `latest`).
declare -A R
for s in dump fast; do
  R[pg_$s]=$(run_case "pg_$s" "driver = \"postgres\"
url = \"$PG/rb_bench_fence_$s\"
strategy = \"$s\"" "psql '$PG/rb_bench_fence_$s' -qAtX -c 'UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 100 = 0'")
  R[my_$s]=$(run_case "my_$s" "driver = \"mysql\"
url = \"mysql://root@127.0.0.1:3306/rb_bench_fence\"
strategy = \"$s\"" "mysql -uroot -h127.0.0.1 -e 'UPDATE rb_bench_fence.t SET k = k + 1 WHERE id % 100 = 0'")
done

redis-cli -n 15 FLUSHDB >/dev/null
redis-cli -n 15 EVAL "for i = 1, 250000 do redis.call('SET', 'k:' .. i, string.rep('v', 100)) end" 0 >/dev/null
R[redis_replace]=$(run_case redis_replace "driver = \"redis\"
url = \"redis://127.0.0.1:6379/15\"" "redis-cli -n 15 EVAL \"for i = 1, 250000, 100 do redis.call('SET', 'k:' .. i, 'changed') end\" 0 >/dev/null")
# SQLite in both journal modes: each has its own fence (see the driver's page).
for mode in wal delete; do
  mkdir -p "$WORK/sqlite_$mode"
  python3 -c "
import sqlite3, sys
c = sqlite3.connect(sys.argv[1]); c.execute('PRAGMA journal_mode = ' + sys.argv[2])
c.execute('CREATE TABLE t (id INTEGER PRIMARY KEY, k INT, c TEXT, pad TEXT)')
c.execute('CREATE INDEX t_k ON t (k)')
c.executemany('INSERT INTO t VALUES (?, ?, ?, ?)', ((i, i % 1000, 'c' * 120, 'p' * 60) for i in range(1, 250001)))
c.commit()" "$WORK/sqlite_$mode/app.db" "$mode"
  R[sqlite_$mode]=$(run_case "sqlite_$mode" "driver = \"sqlite\"
path = \"app.db\"" "python3 -c \"import sqlite3; c = sqlite3.connect('$WORK/sqlite_$mode/app.db'); c.execute('UPDATE t SET k = k + 1 WHERE id % 100 = 0'); c.commit()\"")
done

mkdir -p benches/results
{
  echo "# Write fences (\`bash benches/fence.sh\`)"
  echo
  echo "$(nproc) cores; median of $RUNS rollbacks each (release build), after a 1% update."
  echo "The window runs from raising the fence (before the safety snapshot) to lifting it"
  echo "(after the restore and its comparison with the snapshot)."
  echo
  echo "| driver, strategy | data | fence | window ms | whole rollback ms |"
  echo "| --- | --- | --- | --- | --- |"
  for k in pg_dump pg_fast my_dump my_fast redis_replace sqlite_wal sqlite_delete; do
    read -r w t <<<"${R[$k]}"
    case $k in
      pg_*) data="pgbench scale 10"; how="connection limit 0, sessions ended"; name="postgres, ${k#*_}";;
      my_*) data="250k rows"; how="server read_only"; name="mysql, ${k#*_}";;
      redis_*) data="250k keys"; how="ACL users' write commands taken"; name="redis, replace";;
      sqlite_wal) data="250k rows, an index"; how="write transaction held open, restored as SQL in place"; name="sqlite, WAL";;
      sqlite_delete) data="250k rows, an index"; how="exclusive lock, restored in place (backup API)"; name="sqlite, rollback journal";;
    esac
    echo "| $name | $data | $how | $w | $t |"
  done
} >benches/results/fence.md
cat benches/results/fence.md
