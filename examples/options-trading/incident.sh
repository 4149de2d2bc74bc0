#!/usr/bin/env bash
# Options incident: algorithm v2.4 writes bad signals. The Python EmergencyRollback
# assesses and rolls back the analysis engine and everything downstream of it.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
D=$1; RB=${ROLLBACK_BIN:-rollback}; PY=${ROLLBACK_PYTHON:-python3}; OUT="$D/out"; mkdir -p "$OUT"; cd "$D"
trap 'bash "$HERE/teardown.sh" "$D"' EXIT
source "$HERE/../lib.sh"
PREFIX=$(cat prefix)

step snapshot rollback snapshot --label "algorithm 2.3"
SNAP=$(sed -n 2p "$OUT/snapshot.txt")

# The deploy of algorithm 2.4 (all four phases).
cat > config/ingestion.json <<'JSON'
{ "feeds": ["CBOE", "OPRA", "MIAX"], "batch_size": 5000 }
JSON
cat > config/profiles/active.json <<'JSON'
{ "profile": "conservative", "algorithm_version": "2.4", "max_vega": 9000 }
JSON
python3 - <<'PY'
import sqlite3
db = sqlite3.connect("data/market_data.db")
db.executemany("insert into quotes values (?,?,?,?,?,?)", [("SPX", "2026-12-18", 7000 + i, 12.0, 11.5, 0.2) for i in range(300)])
db.commit()
m = sqlite3.connect("data/metrics.db")
m.execute("insert into pnl values ('2026-11-23', -48250.0, 310)")
m.commit()
PY
# v2.4 rewrites the signals of 20 strikes with a sign error in the edge.
for i in $(seq 1 20); do
  redis-cli -h 127.0.0.1 SET "$PREFIX:signals:SPX-$i" "{\"side\":\"sell_put\",\"edge\":-0.0$i,\"algo\":\"2.4\"}" >/dev/null
done
redis-cli -h 127.0.0.1 SET "$PREFIX:signals:SPX-900" '{"side":"sell_call","edge":-0.9,"algo":"2.4"}' >/dev/null

# Symptoms: the signal cache's quality and today's P&L against the trailing mean.
step symptoms python3 - "$PREFIX" <<'PY'
import json, sqlite3, subprocess, sys
p = sys.argv[1]
keys = subprocess.run(["redis-cli", "-h", "127.0.0.1", "--scan", "--pattern", f"{p}:signals:SPX-*"],
                      capture_output=True, text=True).stdout.split()
bad = sum(json.loads(subprocess.run(["redis-cli", "-h", "127.0.0.1", "GET", k], capture_output=True, text=True).stdout)["edge"] < 0 for k in keys)
m = sqlite3.connect("data/metrics.db")
mean = m.execute("select avg(realized) from pnl where day < '2026-11-23'").fetchone()[0]
today = m.execute("select realized from pnl where day = '2026-11-23'").fetchone()[0]
print(f"signals: {len(keys)} cached, {bad} with negative edge (error_rate={bad/len(keys):.2f})")
print(f"pnl today {today:.0f} vs trailing mean {mean:.0f} (perf_degradation=0.55)")
PY
RATE=$(grep -o 'error_rate=[0-9.]*' "$OUT/symptoms.txt" | cut -d= -f2)

# The Python EmergencyRollback decides the level and rolls back.
step emergency "$PY" emergency_rollback.py "$SNAP" --failing-phase analysis_engine \
  --error-rate "$RATE" --perf-degradation 0.55 --trigger signal_quality
step verify rollback verify "$SNAP" --component algorithm --component signal-cache --component metrics
# Phase 1 (ingestion) was not rolled back: its drift is expected and shown.
step verify-all rollback verify "$SNAP" || true
step signals redis-cli -h 127.0.0.1 GET "$PREFIX:signals:SPX-7"
step report rollback report latest
step drill rollback --json drill

"$PY" - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
def doc(name):
    text = open(f"{out}/{name}.txt").read()
    return json.loads(text[text.index("{"):text.rindex("}") + 1])
m = doc("emergency"); d = doc("drill")
assert m["status"] == "succeeded" and m["verified"] and m["data_loss"] is False, m
assert m["phases"] == [2, 3, 4], m
assert d["status"] == "succeeded" and d["data_loss"] is False and d["rto_met"], d
assert '"algo":"2.3"' in open(f"{out}/signals.txt").read()
open(f"{out}/drill-rto.txt", "w").write(f'{d["duration_ms"]} ms against {d["rto_target_ms"] // 1000} s')
print(f"options-trading: rollback {m['duration_ms']} ms, drill {d['duration_ms']} ms (objective {d['rto_target_ms']} ms)")
PY
