#!/usr/bin/env bash
# Builds the HFT stack in $1: a git repository with the v1.4.0 release deployed.
set -euo pipefail
D=$1; mkdir -p "$D/hft"; cp "$(dirname "$0")/rollback.toml" "$D/"
cd "$D/hft"
git init -q -b main .
git config user.email deploy@example.invalid; git config user.name "Deploy Bot"
mkdir -p core exchanges strategies risk monitoring
cat > core/engine.py <<'PY'
def mid(bid, ask):
    return (bid + ask) / 2

def spread_bps(bid, ask):
    return (ask - bid) / mid(bid, ask) * 10_000
PY
cat > exchanges/binance.py <<'PY'
TAKER_FEE = 0.0010
def quote(bid, ask):
    return bid * (1 - TAKER_FEE), ask * (1 + TAKER_FEE)
PY
cat > exchanges/kraken.py <<'PY'
TAKER_FEE = 0.0026
def quote(bid, ask):
    return bid * (1 - TAKER_FEE), ask * (1 + TAKER_FEE)
PY
cat > strategies/triangular.py <<'PY'
MIN_EDGE_BPS = 5
PY
cat > risk/limits.py <<'PY'
MAX_POSITION_BTC = 2.0
PY
cat > monitoring/health.py <<'PY'
ALERT_LATENCY_MS = 50
PY
cat > validate.py <<'PY'
"""The validation run after each deploy or rollback: replays 1000 recorded quotes
through the engine and every exchange module; prints the rejection rate and exits 1
when quotes are rejected."""
import argparse, importlib, random, sys
sys.path.insert(0, __file__.rsplit("/", 1)[0])
p = argparse.ArgumentParser(); p.add_argument("--exchange"); p.add_argument("--phase"); a = p.parse_args()
engine = importlib.import_module("core.engine")
names = [a.exchange] if a.exchange else ["binance", "kraken"]
rng = random.Random(7); rejected = total = 0
for name in names:
    ex = importlib.import_module(f"exchanges.{name}")
    for _ in range(500):
        bid = 60_000 + rng.random() * 100; ask = bid + 1 + rng.random() * 5
        b, k = ex.quote(bid, ask)
        total += 1
        if not (0 < b < k) or engine.spread_bps(b, k) > 200:
            rejected += 1
rate = rejected / total
print(f"validation: {total} quotes, {rejected} rejected, error_rate={rate:.3f}")
sys.exit(1 if rejected else 0)
PY
git add -A; git commit -qm "v1.4.0: triangular arbitrage on binance and kraken"; git tag v1.4.0
