#!/usr/bin/env bash
# Market monitor incident: release 2.0.0 goes out everywhere (migration 0013, the
# container, the releases dir and its process, pm2) and misparses comma-grouped
# prices. The TypeScript monitor sees the error rate on /health, rolls the whole
# stack back to the last good snapshot, verifies and posts the record.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
D=$1; RB=${ROLLBACK_BIN:-rollback}; OUT="$D/out"; mkdir -p "$OUT"; cd "$D"
trap 'bash "$HERE/teardown.sh" "$D"' EXIT
source "$HERE/../lib.sh"
source ./stack.env
sql() { psql -X -h 127.0.0.1 -U postgres -d "$DB" -v ON_ERROR_STOP=1 "$@"; }
pm2() { PM2_HOME="$D/pm2/home" FORCE_COLOR=0 "$PM2_BIN" "$@"; }
URLS=("http://127.0.0.1:$DOCKER_PORT/health" "http://127.0.0.1:$SERVICE_PORT/health" "http://127.0.0.1:$PM2_PORT/health")
swap() { ln -sfn "$2" "$1.tmp" && mv -T "$1.tmp" "$1"; } # link, target: atomic, as deploy tools do

step health-v1 curl -s -w '\n' "${URLS[@]}"
step snapshot rollback snapshot --label "1.4.2 (migration 0012)"
SNAP=$(sed -n 2p "$OUT/snapshot.txt")

# Release 2.0.0: the code change and migration 0013.
step diff diff -u service/releases/v1/server.js service/releases/v2/server.js || true
step migration cat migrations/0013_thresholds_bps.sql
sql -q -f migrations/0013_thresholds_bps.sql
# The deploy, three ways: a new container on the v2 image; the releases dir's link and
# a restart; pm2's link and a cluster reload.
docker rm -f "$ID-market" >/dev/null
docker run -d --name "$ID-market" -p "127.0.0.1:$DOCKER_PORT:8080" -e DEPLOYMENT=docker rollback-test/market:v2 >/dev/null
swap service/releases/current v2
bash service/marketctl restart
swap pm2/releases/current v2
pm2 startOrReload pm2/ecosystem.config.js --update-env >/dev/null
for u in "${URLS[@]}"; do
  for _ in $(seq 1 100); do curl -s "$u" | grep -q '"version":"2.0.0"' && break; sleep 0.1; done
done
# What 2.0.0 wrote in its first 30 rounds: every tick, parsed its way.
sql -q -c "INSERT INTO price_ticks (symbol, price, received_at, written_by)
  SELECT symbol, CASE WHEN price >= 1000 THEN floor(price / 1000) ELSE price END, now() + g * interval '250 ms', '2.0.0'
  FROM reference_prices, generate_series(1, 30) g"

# Symptoms.
step health-v2 curl -s -w '\n' "${URLS[@]}"
step ticks sql -c "SELECT t.symbol, r.price AS reference, count(*) AS ticks, min(t.price) AS lowest
  FROM price_ticks t JOIN reference_prices r USING (symbol) WHERE t.written_by = '2.0.0'
  GROUP BY t.symbol, r.price ORDER BY r.price DESC LIMIT 4"
# (Queries with a line break show more readably in the chapter.)
LAST_MIGRATION="SELECT max(version) AS migration
  FROM schema_migrations"
step schema-v2 sql -c "$LAST_MIGRATION" -c "SELECT column_name, data_type
  FROM information_schema.columns WHERE table_name = 'alert_rules' ORDER BY ordinal_position"
step plan rollback plan last-good

# The monitor, as it runs beside the service (here in the foreground, for its output).
step monitor-env cat monitor/monitor.env
set -a; source monitor/monitor.env; set +a
started=$(date +%s%N)
step monitor node monitor/monitor.js
echo $(( ($(date +%s%N) - started) / 1000000 )) > "$OUT/monitor-ms.txt"
step posted cat records/*.json

step verify rollback verify "$SNAP"
step health-after curl -s -w '\n' "${URLS[@]}"
step schema-after sql -c "$LAST_MIGRATION" -c "SELECT kind, threshold_pct, count(*) AS rules
  FROM alert_rules GROUP BY 1, 2 ORDER BY 1" -c "SELECT written_by, count(*) AS ticks
  FROM price_ticks GROUP BY 1"
step service bash service/marketctl status
step pm2 pm2 ls
pm2 jlist > "$OUT/pm2-jlist.json"   # for the checks below: it holds the environment, not shown
step containers docker ps --filter "name=^/$ID-market" --format '{{.Names}}  {{.Image}}  {{.Status}}'
step history rollback history
step report rollback report latest
step drill rollback --json drill

python3 - "$OUT" "$SNAP" <<'PY'
import glob, json, os, sys
out, snap = sys.argv[1:]
def doc(name):
    text = open(f"{out}/{name}.txt").read()
    return json.loads(text[text.index("{"):text.rindex("}") + 1])
def text(name):
    return open(f"{out}/{name}.txt").read()
r = doc("posted"); d = doc("drill")
assert r["status"] == "succeeded" and r["dataLoss"] is False and r["snapshotId"] == snap, r
assert r["level"] == "complete" and r["severity"] == "high", r
assert all(v["ok"] for v in r["verification"].values()), r["verification"]
assert "bad sample 3/3" in text("monitor") and "rollback " + r["rollbackId"] in text("monitor")
assert text("health-v2").count('"status":"degraded"') == 3, text("health-v2")
assert text("health-after").count('"status":"healthy"') == 3 and '"version":"1.4.2"' in text("health-after")
assert "2.0.0" not in text("health-after") and "threshold_bps" not in text("schema-after")
assert "0.1250" in text("schema-after") and "2.0.0" not in text("schema-after").split("written_by")[1]
assert "release v1, version 1.4.2" in text("service")
pm2 = json.loads(open(f"{out}/pm2-jlist.json").read().splitlines()[-1])
assert [p["pm2_env"]["version"] for p in pm2] == ["1.4.2", "1.4.2"], [p["pm2_env"]["version"] for p in pm2]
assert text("containers").count("(healthy)") == 1, text("containers")
assert d["status"] == "succeeded" and d["data_loss"] is False and d["rto_met"], d
monitor_ms = int(open(f"{out}/monitor-ms.txt").read())
open(f"{out}/rollback-rto.txt", "w").write(
    f'{r["durationMs"] / 1000:.1f} s against an objective of {r["rtoTargetMs"] // 1000} s')
open(f"{out}/monitor-time.txt", "w").write(f"{monitor_ms / 1000:.1f} s")
open(f"{out}/drill-rto.txt", "w").write(f'{d["duration_ms"]} ms against {d["rto_target_ms"] // 1000} s')
print(f"market-monitor: rollback {r['durationMs']} ms, monitor {monitor_ms} ms, drill {d['duration_ms']} ms (objective {d['rto_target_ms']} ms)")
PY
