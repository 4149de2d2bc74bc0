#!/usr/bin/env bash
# `rollback watch`: how soon a service that turns to 500s is rolled back, and what
# watching costs, beside the runbook's shell loop (curl, grep -c, stat every
# interval; the HFT runbook's monitor_conversion.sh).
#
# 1. Detection: an http service that answers 500 from a known instant; interval 1 s,
#    failure_limit 3. Reports the record's `detect_ms` (first bad reading → rollback
#    start) against the bound interval × failure_limit + 100 ms, and the time from
#    the service's first 500 to the rollback's start. Median of RUNS.
# 2. Cost: five probes (two http, a log, a heartbeat, a command) at a 1 s interval
#    for SECS seconds: CPU time of the watch (and of the programs it runs) as a
#    share of one core, beside the same checks done by a bash loop.
# Not part of the test suite. Writes benches/results/watch.md.
#
#   bash benches/watch.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
RUNS="${RUNS:-3}"
SECS="${SECS:-30}"
WORK="$(mktemp -d)"
SVC_PID=""
cleanup() {
  [ -n "$SVC_PID" ] && kill "$SVC_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
cargo build -q --release -p rollback-cli
# A build for a named target (CARGO_BUILD_TARGET, as scripts/test.sh sets) lands under it.
RB="$CARGO_TARGET_DIR/${CARGO_BUILD_TARGET:+$CARGO_BUILD_TARGET/}release/rollback"

# The service: 200 while app/version is v1, or before the instant in fail_at; 500 after.
cat >"$WORK/service.py" <<'PY'
import http.server, json, os, sys, time
root = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        v = open(os.path.join(root, "app/version")).read().strip()
        try:
            fail_at = float(open(os.path.join(root, "fail_at")).read())
        except OSError:
            fail_at = float("inf")
        bad = v == "v2" and time.time() >= fail_at
        body = json.dumps({"stats": {"error_rate": 0.6 if bad else 0.01}}).encode()
        self.send_response(500 if bad and self.path == "/health" else 200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
open(os.path.join(root, "port"), "w").write(str(s.server_address[1]))
s.serve_forever()
PY
python3 "$WORK/service.py" "$WORK" &
SVC_PID=$!
for _ in $(seq 50); do [ -s "$WORK/port" ] && break; sleep 0.1; done
PORT=$(cat "$WORK/port")
mkdir -p "$WORK/app" "$WORK/logs" "$WORK/run"
echo v1 >"$WORK/app/version"
: >"$WORK/logs/app.log"
touch "$WORK/run/heartbeat"
cat >"$WORK/rollback.toml" <<EOF2
[[component]]
name = "app"
driver = "files"
paths = ["app"]

[watch]
interval = "1s"
window = 4
failure_limit = 3

[[watch.probe]]
name = "api"
http = "http://127.0.0.1:$PORT/health"
EOF2
# Named, not `last-good`: that one needs health checks, which this component has not.
SNAP=$(cd "$WORK" && "$RB" --json snapshot | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')

# 1. Detection.
det=() onset=()
for _ in $(seq "$RUNS"); do
  echo v2 >"$WORK/app/version"
  python3 -c "import time; print(time.time() + 2.5)" >"$WORK/fail_at"
  out=$(cd "$WORK" && "$RB" --json watch "$SNAP" --for 60s 2>/dev/null || true)
  read -r a b < <(python3 -c "
import json, sys, datetime
r = json.loads(sys.argv[1]); rec = r.get('record') or {}
assert r['outcome'] == 'rolled_back' and rec.get('status') == 'succeeded', r
fail_at = float(open(sys.argv[2]).read())
start = datetime.datetime.fromisoformat(rec['start_time'].replace('Z', '+00:00')).timestamp()
print(rec['watch']['detect_ms'], int((start - fail_at) * 1000))" "$out" "$WORK/fail_at")
  det+=("$a"); onset+=("$b")
  rm -f "$WORK/fail_at"
done
med() { python3 -c "import statistics, sys; print(int(statistics.median(map(int, sys.argv[1:]))))" "$@"; }
DET=$(med "${det[@]}"); ONSET=$(med "${onset[@]}")

# 2. Cost: five probes, healthy all along.
cat >>"$WORK/rollback.toml" <<EOF2

[[watch.probe]]
name = "metrics"
http = "http://127.0.0.1:$PORT/metrics"
metrics = { error_rate = "stats.error_rate" }

[[watch.probe]]
name = "errors"
log = "logs/app.log"

[[watch.probe]]
name = "bot"
heartbeat = "run/heartbeat"
max_age = "1h"

[[watch.probe]]
name = "check"
command = ["true"]
EOF2
cpu() { # pid → "self children" CPU seconds (utime+stime, cutime+cstime)
  python3 -c "
import os, sys
f = open(f'/proc/{sys.argv[1]}/stat').read().rsplit(')', 1)[1].split()
t = os.sysconf('SC_CLK_TCK')
print((int(f[11]) + int(f[12])) / t, (int(f[13]) + int(f[14])) / t)" "$1"
}
echo v1 >"$WORK/app/version"
(cd "$WORK" && exec "$RB" -q watch "$SNAP" --for "$((SECS + 5))s" >/dev/null 2>&1) &
W=$!
sleep 3
read -r w0 wc0 < <(cpu "$W")
sleep "$SECS"
read -r w1 wc1 < <(cpu "$W")
wait "$W" || true
# The runbook's loop: the same five checks with curl, grep, stat and true.
bash -c "
while true; do
  curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$PORT/health >/dev/null
  curl -s http://127.0.0.1:$PORT/metrics | grep -o '\"error_rate\": [0-9.]*' >/dev/null
  grep -cE 'ERROR|CRITICAL' $WORK/logs/app.log >/dev/null
  stat -c %Y $WORK/run/heartbeat >/dev/null
  true
  sleep 1
done" &
L=$!
sleep 3
read -r l0 lc0 < <(cpu "$L")
sleep "$SECS"
read -r l1 lc1 < <(cpu "$L")
kill "$L"
pct() { python3 -c "import sys; print(f'{(float(sys.argv[2]) - float(sys.argv[1])) / float(sys.argv[3]) * 100:.2f} %')" "$@"; }
WSELF=$(pct "$w0" "$w1" "$SECS"); WKIDS=$(pct "$wc0" "$wc1" "$SECS")
LSELF=$(pct "$l0" "$l1" "$SECS"); LKIDS=$(pct "$lc0" "$lc1" "$SECS")

mkdir -p benches/results
{
  echo "# \`rollback watch\` ($(date -u +%F), median of $RUNS, release build)"
  echo
  echo "| detection (interval 1 s, failure_limit 3) | ms |"
  echo "|---|---|"
  echo "| first bad reading → rollback start (record's \`detect_ms\`) | $DET |"
  echo "| bound: interval × failure_limit + 100 ms | 3100 |"
  echo "| service's first 500 → rollback start | $ONSET |"
  echo
  echo "| five probes every 1 s, ${SECS} s | CPU of one core, itself | of the programs it runs |"
  echo "|---|---|---|"
  echo "| \`rollback watch\` (2 http, log, heartbeat, command) | $WSELF | $WKIDS |"
  echo "| bash loop: curl ×2, grep, stat, true | $LSELF | $LKIDS |"
} | tee benches/results/watch.md
