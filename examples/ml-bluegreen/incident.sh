#!/usr/bin/env bash
# Blue/green incident: green (model v4) takes traffic and fails; roll the traffic
# switch and the environment back, verify, report, drill.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
D=$1; RB=${ROLLBACK_BIN:-rollback}; OUT="$D/out"; mkdir -p "$OUT"; cd "$D"
trap 'bash "$HERE/teardown.sh" "$D"' EXIT
source "$HERE/../lib.sh"
source ./bot.env

step snapshot rollback snapshot --label "blue v3 live"
SNAP=$(sed -n 2p "$OUT/snapshot.txt")

# The deploy: traffic to green (model v4), environment updated, nginx reloaded.
echo "upstream bot { server 127.0.0.1:$GREEN_PORT; }   # green: model v4" > nginx/upstream.conf
sed -i 's/MODEL_VERSION=v3/MODEL_VERSION=v4/; s/SIGNAL_THRESHOLD=0.65/SIGNAL_THRESHOLD=0.55/' bot.env
nginx -p nginx -c nginx.conf -s reload
sleep 2.5

# Symptoms: prediction errors through nginx, and the trading loop's heartbeat.
step symptoms python3 - "$NGINX_PORT" <<'PY'
import os, sys, time, urllib.request
port = sys.argv[1]; fails = 0; n = 50; t0 = time.time()
for _ in range(n):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/predict", timeout=2)
    except Exception:
        fails += 1
ms = (time.time() - t0) / n * 1000
age = time.time() - os.path.getmtime("run/trader.heartbeat")
print(f"predict: {fails}/{n} failed (error_rate={fails/n:.2f}), mean latency {ms:.0f} ms; trader heartbeat {age:.1f} s old")
PY
RATE=$(grep -o 'error_rate=[0-9.]*' "$OUT/symptoms.txt" | cut -d= -f2)
step assess rollback assess --error-rate "$RATE" --perf-degradation 0.0
step plan rollback plan "$SNAP"
step rollback rollback --json rollback "$SNAP" --trigger error_rate --severity critical --yes
step verify rollback verify "$SNAP"
step after curl -s "http://127.0.0.1:$NGINX_PORT/health"
step report rollback report latest
step drill rollback --json drill

python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
def record(name):
    text = open(f"{out}/{name}.txt").read()
    return json.loads(text[text.index("{"):])
r = record("rollback"); d = record("drill")
assert r["status"] == "succeeded" and r["data_loss"] is False, r
assert '"color": "blue"' in open(f"{out}/after.txt").read()
assert d["status"] == "succeeded" and d["data_loss"] is False and d["rto_met"], d
open(f"{out}/drill-rto.txt", "w").write(f'{d["duration_ms"]} ms against {d["rto_target_ms"] // 1000} s')
print(f"ml-bluegreen: rollback {r['duration_ms']} ms, drill {d['duration_ms']} ms (objective {d['rto_target_ms']} ms)")
PY
