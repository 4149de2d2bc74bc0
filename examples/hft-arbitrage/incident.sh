#!/usr/bin/env bash
# The incident, from symptoms to report, in the stack built by setup.sh in $1.
# Each step's output is saved in $1/out/<step>.txt for the chapter.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
D=$1; RB=${ROLLBACK_BIN:-rollback}; OUT="$D/out"; mkdir -p "$OUT"; cd "$D"
source "$HERE/../lib.sh"

# Before the deploy: the pre-deployment backup.
step snapshot rollback snapshot --label "v1.4.0 pre-deploy"
SNAP=$(sed -n 2p "$OUT/snapshot.txt")

# The deploy of v1.5.0: a fee change on binance (a percent typed as a fraction),
# a new strategy threshold, a risk limit raised.
(cd hft
 sed -i 's/TAKER_FEE = 0.0010/TAKER_FEE = 0.10/' exchanges/binance.py
 sed -i 's/MIN_EDGE_BPS = 5/MIN_EDGE_BPS = 2/' strategies/triangular.py
 sed -i 's/MAX_POSITION_BTC = 2.0/MAX_POSITION_BTC = 5.0/' risk/limits.py
 git commit -qam "v1.5.0: fee schedule, tighter edge, higher limits")

# Symptoms: the validation run reports rejected quotes.
step symptoms python3 hft/validate.py || true
RATE=$(grep -o 'error_rate=[0-9.]*' "$OUT/symptoms.txt" | cut -d= -f2)
step assess rollback assess --error-rate "$RATE" --perf-degradation 0.10

# Level 3 first: only the binance module is wrong.
step plan-component rollback plan "$SNAP" --level component --component exchange-binance
step rollback-component rollback rollback "$SNAP" --level component --component exchange-binance --trigger error_rate --yes
step validate-after python3 hft/validate.py
step verify-component rollback verify "$SNAP" --component exchange-binance
step git-log git -C hft log --oneline -3

# Level 2: the whole exchange phase, then level 1: everything back to v1.4.0.
step rollback-phase rollback rollback "$SNAP" --level phase --phase 2 --trigger error_rate --yes
step plan-complete rollback plan "$SNAP"
step rollback-complete rollback --json rollback "$SNAP" --trigger error_rate --severity high --yes
step verify rollback verify "$SNAP"
step report rollback report latest

# The drill for this stack, against the complete-level objective.
step drill rollback --json drill

python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
def record(name):
    text = open(f"{out}/{name}.txt").read()
    return json.loads(text[text.index("{"):])
r = record("rollback-complete"); d = record("drill")
assert r["status"] == "succeeded" and r["data_loss"] is False, r
assert d["status"] == "succeeded" and d["data_loss"] is False and d["rto_met"], d
open(f"{out}/drill-rto.txt", "w").write(f'{d["duration_ms"]} ms against {d["rto_target_ms"] // 1000} s')
print(f"hft-arbitrage: rollback {r['duration_ms']} ms, drill {d['duration_ms']} ms (objective {d['rto_target_ms']} ms)")
PY
