#!/usr/bin/env bash
# Liquidations incident: release v2 ships migration 042 (indexes + a column), a worker
# that writes corrupt liquidations, and a cache without TTLs. Roll everything back.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
D=$1; RB=${ROLLBACK_BIN:-rollback}; OUT="$D/out"; mkdir -p "$OUT"; cd "$D"
trap 'bash "$HERE/teardown.sh" "$D"' EXIT
source "$HERE/../lib.sh"
source ./stack.env
sql() { mysql -h 127.0.0.1 -uroot "$ID" "$@"; }

step snapshot rollback snapshot --label "v1 (migration 041)"
SNAP=$(sed -n 2p "$OUT/snapshot.txt")

# Release v2: migration 042, the v2 containers, a cache written without TTLs.
sql -e "ALTER TABLE liquidations ADD COLUMN risk_score DECIMAL(10,4) NULL,
        ADD INDEX idx_account_symbol (account, symbol), ADD INDEX idx_created (created_at)"
for svc in api worker; do
  docker rm -f "$ID-$svc-1" >/dev/null
  ports=(); [ "$svc" = api ] && ports=(-p "127.0.0.1:$PORT:8080")
  docker run -d --name "$ID-$svc-1" "${ports[@]}" \
    --label "com.docker.compose.project=$ID" --label "com.docker.compose.service=$svc" \
    -e "LIQUI_SERVICE=$svc" -e "DB_NAME=$ID" -e "RISK_ENGINE=v2" rollback-test/web:v2 >/dev/null
done
# The v2 worker's first 300 liquidations: 90 with a negative quantity.
sql -e "INSERT INTO liquidations (account, symbol, qty, price, created_at, risk_score)
        SELECT CONCAT('acct-', seq % 97), 'BTC-PERP', IF(seq % 10 < 3, -1.5, 1.5), 59000, NOW(6), 0.5 FROM seq_1_to_300"
for s in BTC ETH SOL; do
  redis-cli -h 127.0.0.1 SET "$ID:cache:price:$s-PERP" '{"mark":59000,"src":"v2"}' >/dev/null
done

step symptoms sql -t -e "SELECT COUNT(*) AS written_since_deploy, SUM(qty <= 0) AS corrupt,
        ROUND(SUM(qty <= 0) / COUNT(*), 2) AS error_rate FROM liquidations WHERE risk_score IS NOT NULL"
RATE=$(sql -N -e "SELECT ROUND(SUM(qty <= 0) / COUNT(*), 2) FROM liquidations WHERE risk_score IS NOT NULL")
step ttl-before redis-cli -h 127.0.0.1 TTL "$ID:cache:price:BTC-PERP"
step indexes-before sql -e "SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS
        WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'liquidations' ORDER BY 1"
step assess rollback assess --error-rate "$RATE" --perf-degradation 0.1 --data-impact corruption
step plan rollback plan "$SNAP"
step rollback rollback --json rollback "$SNAP" --trigger data_corruption --severity high --yes
step verify rollback verify "$SNAP"
step indexes-after sql -e "SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS
        WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'liquidations' ORDER BY 1"
step ttl-after redis-cli -h 127.0.0.1 TTL "$ID:cache:price:BTC-PERP"
step containers docker ps --filter "label=com.docker.compose.project=$ID" --format '{{.Names}}  {{.Image}}  {{.Status}}'
# Both containers run the v1 image again, named as before (the tag still names v1).
test "$(grep -c "rollback-test/web:ok" "$OUT/containers.txt")" = 2 || { echo "containers not back on v1" >&2; exit 1; }
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
assert "idx_created" in open(f"{out}/indexes-before.txt").read()
assert "idx_created" not in open(f"{out}/indexes-after.txt").read()
assert int(open(f"{out}/ttl-after.txt").read().split()[-1]) > 0
assert d["status"] == "succeeded" and d["data_loss"] is False and d["rto_met"], d
open(f"{out}/drill-rto.txt", "w").write(f'{d["duration_ms"]} ms against {d["rto_target_ms"] // 1000} s')
print(f"liquidations-api: rollback {r['duration_ms']} ms, drill {d['duration_ms']} ms (objective {d['rto_target_ms']} ms)")
PY
