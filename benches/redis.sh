#!/usr/bin/env bash
# Redis: rollback's `redis` driver side by side with the runbook tools, on the same
# 1M keys: capture vs `redis-cli --rdb`, restore vs `redis-cli --pipe` mass insert.
# Not part of the test suite. Writes benches/results/redis.md.
#
#   bash benches/redis.sh            # 1M keys in db 9 of 127.0.0.1:6379
#   KEYS=200000 DB=9 bash benches/redis.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
KEYS="${KEYS:-1000000}"
DB="${DB:-9}"
HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-6379}"
URL="redis://$HOST:$PORT/$DB"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cli() { redis-cli -h "$HOST" -p "$PORT" "$@"; }
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }

DRILL="$CARGO_TARGET_DIR/${CARGO_BUILD_TARGET:+$CARGO_BUILD_TARGET/}release/examples/datadrill"
cargo build -q --release -p rollback-core --features driver-redis,driver-mysql --example datadrill \
  || { [ -x "$DRILL" ] && echo "build failed; using the existing $DRILL" >&2; }

echo "generating $KEYS keys (strings of 20-100 bytes, every 10th with a TTL, some hashes/lists/sets)" >&2
python3 - "$KEYS" "$DB" > "$WORK/mass.resp" <<'EOF'
import sys, random
n, db = int(sys.argv[1]), sys.argv[2]
random.seed(7)
out = sys.stdout.buffer
def cmd(*a):
    parts = [b"*%d\r\n" % len(a)]
    for x in a:
        x = x if isinstance(x, bytes) else str(x).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(x), x))
    out.write(b"".join(parts))
cmd("SELECT", db)
for i in range(n):
    k = "bench:%08d" % i
    r = i % 100
    if r < 90:
        v = ("v%d-" % i) * random.randint(2, 12)
        if i % 10 == 0:
            cmd("SET", k, v, "EX", 86400)
        else:
            cmd("SET", k, v)
    elif r < 95:
        cmd("HSET", k, "price", i, "qty", i % 7, "sym", "BTC")
    elif r < 98:
        cmd("RPUSH", k, "a", "b", i)
    else:
        cmd("SADD", k, "x", "y", i)
EOF

cli -n "$DB" FLUSHDB >/dev/null
t0=$(now); cli --pipe < "$WORK/mass.resp" >/dev/null; t1=$(now)
PIPE=$(secs "$t0" "$t1")
echo "redis-cli --pipe mass insert: ${PIPE}s ($(cli -n "$DB" DBSIZE) keys)" >&2

DELAY=$(cli CONFIG GET repl-diskless-sync-delay | tail -1)
t0=$(now); cli --rdb "$WORK/dump.rdb" >/dev/null 2>&1; t1=$(now)
RDB=$(secs "$t0" "$t1")
echo "redis-cli --rdb: ${RDB}s ($(stat -c %s "$WORK/dump.rdb") bytes)" >&2

CAP=$("$DRILL" "$WORK/rb" capture redis "url=$URL")
echo "rollback capture: $CAP" >&2
cli -n "$DB" FLUSHDB >/dev/null
RES=$("$DRILL" "$WORK/rb" restore redis "url=$URL")
echo "rollback restore (FLUSHDB + RESTORE): $RES" >&2
VER=$("$DRILL" "$WORK/rb" verify redis "url=$URL")
echo "rollback verify: $VER" >&2
cli -n "$DB" FLUSHDB >/dev/null

mkdir -p benches/results
python3 - "$KEYS" "$PIPE" "$RDB" "$CAP" "$RES" "$VER" "$DELAY" > benches/results/redis.md <<'EOF'
import sys, json, platform, os
keys, pipe, rdb = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
cap, res, ver = (json.loads(x) for x in sys.argv[4:7])
c, r, v = cap["ms"] / 1000, res["ms"] / 1000, ver["ms"] / 1000
print(f"# Redis: {int(keys):,} keys (`bash benches/redis.sh`)\n")
print(f"{os.cpu_count()} cores, {platform.platform()}\n")
print("| operation | runbook tool | s | rollback | s | ratio (tool / rollback) | rollback peak RSS |")
print("| --- | --- | ---: | --- | ---: | ---: | ---: |")
print(f"| capture | `redis-cli --rdb` | {rdb:.2f} | SCAN + MEMORY USAGE sizes + pipelined MGET/PTTL/DUMP to the store | {c:.2f} | {rdb / c:.2f}x | {cap['peak_rss_mb']} MB |")
print(f"| restore | `redis-cli --pipe` (mass insert) | {pipe:.2f} | FLUSHDB + pipelined RESTORE ... ABSTTL | {r:.2f} | {pipe / r:.2f}x | {res['peak_rss_mb']} MB |")
print(f"| verify | — | | SCAN + DUMP, compared with the index | {v:.2f} | | {ver['peak_rss_mb']} MB |")
print(f"\nSnapshot size: {cap['bytes']:,} bytes.")
delay = sys.argv[7]
if delay not in ("", "0"):
    print(f"\n`--rdb` time includes the server's `repl-diskless-sync-delay` ({delay} s here, Redis's default):"
          " the server waits that long for other replicas before it streams the RDB.")
EOF
cat benches/results/redis.md
