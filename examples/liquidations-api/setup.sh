#!/usr/bin/env bash
# Builds the liquidations dev stack in $1: a MySQL database, Redis cache keys with
# TTLs, and a two-container compose project (api, worker) on the v1 image.
set -euo pipefail
D=$1; HERE=$(cd "$(dirname "$0")" && pwd)
ID="liq$RANDOM$RANDOM"; DB="$ID"; PROJECT="$ID"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$D"
sed "s/@DB@/$DB/g; s/@PROJECT@/$PROJECT/g; s/@PORT@/$PORT/g" "$HERE/rollback.toml.in" > "$D/rollback.toml"
printf 'ID=%s\nPORT=%s\n' "$ID" "$PORT" > "$D/stack.env"
mysql -h 127.0.0.1 -uroot -e "CREATE DATABASE \`$DB\`"
mysql -h 127.0.0.1 -uroot "$DB" <<'SQL'
CREATE TABLE liquidations (
  id BIGINT AUTO_INCREMENT PRIMARY KEY,
  account VARCHAR(32) NOT NULL,
  symbol VARCHAR(16) NOT NULL,
  qty DECIMAL(18,8) NOT NULL,
  price DECIMAL(18,2) NOT NULL,
  created_at DATETIME(6) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO liquidations (account, symbol, qty, price, created_at)
SELECT CONCAT('acct-', seq % 97), ELT(1 + seq % 3, 'BTC-PERP', 'ETH-PERP', 'SOL-PERP'),
       0.5 + (seq % 7) / 10, 60000 - seq, NOW(6) - INTERVAL seq MINUTE
FROM seq_1_to_5000;
SQL
for s in BTC ETH SOL; do
  redis-cli -h 127.0.0.1 SET "$PROJECT:cache:price:$s-PERP" "{\"mark\":60000,\"src\":\"v1\"}" EX 300 >/dev/null
done
redis-cli -h 127.0.0.1 SET "$PROJECT:cache:positions:acct-1" '{"open":2}' EX 60 >/dev/null
# The compose project, as `docker compose up` would label it.
for svc in api worker; do
  ports=(); [ "$svc" = api ] && ports=(-p "127.0.0.1:$PORT:8080")
  docker run -d --name "$PROJECT-$svc-1" "${ports[@]}" \
    --label "com.docker.compose.project=$PROJECT" --label "com.docker.compose.service=$svc" \
    -e "LIQUI_SERVICE=$svc" -e "DB_NAME=$DB" rollback-test/web:ok >/dev/null
done
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$PORT/" >/dev/null && break; sleep 0.1; done
