#!/usr/bin/env bash
# PostgreSQL: rollback's `postgres` driver side by side with the runbook tools on the
# same pgbench data (scale 10, ~157 MB): `pg_dump -Fc` / `pg_restore --clean` against
# strategy "dump" (capture / restore / verify) and strategy "fast".
# Not part of the test suite. Writes benches/results/postgres.md.
#
#   bash benches/postgres.sh                 # scale 10 into database rb_bench_pg
#   SCALE=50 BASE=postgres://postgres@127.0.0.1:5432 bash benches/postgres.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
SCALE="${SCALE:-10}"
BASE="${BASE:-postgres://postgres@127.0.0.1:5432}"
DB="${DB:-rb_bench_pg}"
URL="$BASE/$DB"
WORK="$(mktemp -d)"
psql_() { psql "$BASE/postgres" -qAtX -v ON_ERROR_STOP=1 "$@"; }
cleanup() {
  psql_ -c "SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE)', datname) FROM pg_database
            WHERE datname = '$DB' OR datname LIKE '${DB}\\_\\_rb\\_%'" | while read -r stmt; do psql_ -c "$stmt"; done
  rm -rf "$WORK"
}
trap cleanup EXIT
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }

if ! command -v pgbench >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-contrib >/dev/null
fi
cargo build -q --release -p rollback-core --features driver-postgres --example datadrill
DRILL="$CARGO_TARGET_DIR/${CARGO_BUILD_TARGET:+$CARGO_BUILD_TARGET/}release/examples/datadrill"

cleanup; WORK="$(mktemp -d)"
psql_ -c "CREATE DATABASE $DB"
echo "pgbench -i -s $SCALE" >&2
pgbench -i -q -s "$SCALE" "$URL" >/dev/null 2>&1
SIZE=$(psql_ -c "SELECT pg_database_size('$DB')")
digest() { psql "$URL" -qAtX -c "SELECT md5(string_agg(x, ',' ORDER BY x)) FROM (
  SELECT md5(string_agg(a::text, ',' ORDER BY aid)) x FROM pgbench_accounts a UNION ALL
  SELECT md5(string_agg(b::text, ',' ORDER BY bid)) FROM pgbench_branches b UNION ALL
  SELECT md5(string_agg(t::text, ',' ORDER BY tid)) FROM pgbench_tellers t) s"; }
REF=$(digest)
mutate() { psql "$URL" -qAtX -c "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 100 = 0;
  ALTER TABLE pgbench_accounts ADD COLUMN IF NOT EXISTS venue text; CREATE TABLE IF NOT EXISTS after_snapshot (id int)"; }

# Each timed operation starts after a CHECKPOINT, so one run's dirty buffers do not
# land on the next one's clock; each is run RUNS times and the median is kept.
RUNS="${RUNS:-3}"
checkpoint() { psql_ -c CHECKPOINT; }
median() { python3 -c "import sys, statistics; print(f'{statistics.median(float(x) for x in sys.argv[1:]):.2f}')" "$@"; }
jmedian() { python3 -c "
import sys, json, statistics
xs = [json.loads(x) for x in sys.argv[1:]]
m = statistics.median(x['ms'] for x in xs)
print(json.dumps({'ms': m, 'peak_rss_mb': max(x['peak_rss_mb'] for x in xs), 'bytes': xs[0]['bytes']}))" "$@"; }
check() { [ "$(digest)" = "$REF" ] || { echo "$1 did not restore the data" >&2; exit 1; }; }

# The runbook: pg_dump -Fc / pg_restore --clean.
T=()
for i in $(seq "$RUNS"); do
  checkpoint; t0=$(now); pg_dump -Fc -f "$WORK/dump.fc" "$URL"; t1=$(now); T+=("$(secs "$t0" "$t1")")
done
PGDUMP=$(median "${T[@]}")
T=()
for i in $(seq "$RUNS"); do
  mutate; checkpoint
  t0=$(now); pg_restore --clean --if-exists -d "$URL" "$WORK/dump.fc"; t1=$(now); T+=("$(secs "$t0" "$t1")")
  psql "$URL" -qAtX -c "DROP TABLE IF EXISTS after_snapshot"; check pg_restore
done
PGRESTORE=$(median "${T[@]}")
echo "pg_dump -Fc ${PGDUMP}s ($(stat -c %s "$WORK/dump.fc") bytes); pg_restore --clean ${PGRESTORE}s" >&2

# rollback, strategy dump.
C=(); R=(); V=()
for i in $(seq "$RUNS"); do
  rm -rf "$WORK/dump"; mkdir -p "$WORK/dump"
  checkpoint; C+=("$("$DRILL" "$WORK/dump" capture postgres "url=$URL" strategy=dump)")
done
for i in $(seq "$RUNS"); do
  mutate; checkpoint; R+=("$("$DRILL" "$WORK/dump" restore postgres "url=$URL" strategy=dump)"); check "dump restore"
  checkpoint; V+=("$("$DRILL" "$WORK/dump" verify postgres "url=$URL" strategy=dump)")
done
DCAP=$(jmedian "${C[@]}"); DRES=$(jmedian "${R[@]}"); DVER=$(jmedian "${V[@]}")
echo "dump: capture $DCAP restore $DRES verify $DVER" >&2

# rollback, strategy fast: the first restore renames the snapshot's spare copy in; later
# restores of the same snapshot copy it again first.
C=()
for i in $(seq "$RUNS"); do
  rm -rf "$WORK/fast"; mkdir -p "$WORK/fast"
  checkpoint; C+=("$("$DRILL" "$WORK/fast" capture postgres "url=$URL" strategy=fast)")
done
FCAP=$(jmedian "${C[@]}")
mutate; checkpoint
FRES=$("$DRILL" "$WORK/fast" restore postgres "url=$URL" strategy=fast); check "fast restore"
R=()
for i in $(seq "$RUNS"); do
  mutate; checkpoint; R+=("$("$DRILL" "$WORK/fast" restore postgres "url=$URL" strategy=fast)"); check "fast restore"
done
FRES2=$(jmedian "${R[@]}")
checkpoint; FVER=$("$DRILL" "$WORK/fast" verify postgres "url=$URL" strategy=fast)
echo "fast: capture $FCAP restore $FRES (again $FRES2) verify $FVER" >&2

mkdir -p benches/results
RUNS="$RUNS" python3 - "$SCALE" "$SIZE" "$PGDUMP" "$PGRESTORE" "$DCAP" "$DRES" "$DVER" "$FCAP" "$FRES" "$FRES2" "$FVER" \
  "$(stat -c %s "$WORK/dump.fc")" > benches/results/postgres.md <<'PY'
import sys, json, os, platform, subprocess
scale, size, pgd, pgr = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
dc, dr, dv, fc, fr, fr2, fv = (json.loads(x) for x in sys.argv[5:12])
fcsize = int(sys.argv[12])
s = lambda j: j["ms"] / 1000
ver = subprocess.run(["psql", "--version"], capture_output=True, text=True).stdout.strip()
print(f"# PostgreSQL: pgbench scale {scale} ({size / 1e6:.0f} MB on disk) (`bash benches/postgres.sh`)\n")
print(f"{os.cpu_count()} cores, {platform.platform()}, {ver}. Median of {os.environ.get('RUNS', '3')} runs, each after a CHECKPOINT; times in seconds.\n")
print("| operation | runbook | s | rollback | s | ratio (runbook / rollback) | peak RSS MB |")
print("| --- | --- | --- | --- | --- | --- | --- |")
print(f"| snapshot | `pg_dump -Fc` ({fcsize / 1e6:.0f} MB) | {pgd:.2f} | dump capture ({dc['bytes'] / 1e6:.0f} MB) | {s(dc):.2f} | {pgd / s(dc):.2f}× | {dc['peak_rss_mb']} |")
print(f"| restore | `pg_restore --clean` | {pgr:.2f} | dump restore (one transaction) | {s(dr):.2f} | {pgr / s(dr):.2f}× | {dr['peak_rss_mb']} |")
print(f"| verify | — | | dump verify (schema + checksums) | {s(dv):.2f} | | {dv['peak_rss_mb']} |")
print(f"| snapshot | `pg_dump -Fc` | {pgd:.2f} | fast capture (template copy) | {s(fc):.2f} | {pgd / s(fc):.2f}× | {fc['peak_rss_mb']} |")
print(f"| restore | `pg_restore --clean` | {pgr:.2f} | fast restore (spare copy renamed in) | {s(fr):.2f} | {pgr / s(fr):.1f}× | {fr['peak_rss_mb']} |")
print(f"| restore again | `pg_restore --clean` | {pgr:.2f} | fast restore of the same snapshot again (template copy + swap) | {s(fr2):.2f} | {pgr / s(fr2):.1f}× | {fr2['peak_rss_mb']} |")
print(f"| verify | — | | fast verify (live vs copy) | {s(fv):.2f} | | {fv['peak_rss_mb']} |")
print()
print("Each restore ran after a change (1% of accounts updated, a column and a table added);")
print("after every restore an md5 of all pgbench rows was compared with the original.")
PY
cat benches/results/postgres.md
