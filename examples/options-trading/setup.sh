#!/usr/bin/env bash
# Builds the options stack in $1 with algorithm v2.3 in production.
set -euo pipefail
D=$1; HERE=$(cd "$(dirname "$0")" && pwd)
PREFIX="opt$RANDOM$RANDOM"
mkdir -p "$D/data" "$D/config/profiles"
sed "s/@PREFIX@/$PREFIX/g" "$HERE/rollback.toml.in" > "$D/rollback.toml"
echo "$PREFIX" > "$D/prefix"
cp "$HERE/emergency_rollback.py" "$D/"
cat > "$D/config/ingestion.json" <<'JSON'
{ "feeds": ["CBOE", "OPRA"], "batch_size": 500 }
JSON
cat > "$D/config/profiles/active.json" <<'JSON'
{ "profile": "conservative", "algorithm_version": "2.3", "max_vega": 1500 }
JSON
cat > "$D/config/profiles/aggressive.json" <<'JSON'
{ "profile": "aggressive", "algorithm_version": "2.3", "max_vega": 4000 }
JSON
python3 - "$D" <<'PY'
import sqlite3, sys, random
d = sys.argv[1]; rng = random.Random(3)
db = sqlite3.connect(f"{d}/data/market_data.db")
db.execute("create table quotes (symbol text, expiry text, strike real, bid real, ask real, iv real)")
db.executemany("insert into quotes values (?,?,?,?,?,?)",
    [("SPX", "2026-12-18", 5000 + 25 * i, 10 + i * 0.1, 10.4 + i * 0.1, 0.15 + rng.random() / 50) for i in range(2000)])
db.commit()
m = sqlite3.connect(f"{d}/data/metrics.db")
m.execute("create table pnl (day text primary key, realized real, trades integer)")
m.executemany("insert into pnl values (?,?,?)", [(f"2026-11-{i:02d}", 1000 + i * 10.5, 40 + i) for i in range(1, 23)])
m.commit()
PY
for i in $(seq 1 50); do
  redis-cli -h 127.0.0.1 SET "$PREFIX:signals:SPX-$i" "{\"side\":\"sell_put\",\"edge\":0.0$i,\"algo\":\"2.3\"}" EX 3600 >/dev/null
done
redis-cli -h 127.0.0.1 HSET "$PREFIX:signals:meta" algo 2.3 generated_at 2026-11-23T09:00:00Z >/dev/null
