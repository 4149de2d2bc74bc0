#!/usr/bin/env bash
# Builds the market monitor stack in $1: a PostgreSQL database at migration 0012, and
# the Node service at 1.4.2 deployed three ways side by side (a Docker container, a
# releases dir with a plain process, pm2 in cluster mode), each with release 2.0.0
# staged beside it; the TypeScript monitor compiled against the `rollback` package;
# a receiver for the records the monitor posts.
set -euo pipefail
D=$1; HERE=$(cd "$(dirname "$0")" && pwd); ROOT=$(cd "$HERE/../.." && pwd)
PM2_BIN=${ROLLBACK_PM2_BIN:-$ROOT/target/tools/pm2/node_modules/.bin/pm2}
TSC="$ROOT/rollback-node/node_modules/typescript/bin/tsc"
[ -x "$PM2_BIN" ] || { echo "pm2 not found at $PM2_BIN: run scripts/setup-pm2.sh" >&2; exit 1; }
if ! { [ -f "$TSC" ] && compgen -G "$ROOT/rollback-node/rollback.*.node" >/dev/null; }; then
  echo "the Node package is not built (addon, typescript): run scripts/test-node.sh first" >&2
  exit 1
fi
docker info >/dev/null 2>&1 || { echo "no Docker engine: run scripts/setup-docker.sh" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ID="mm$RANDOM$RANDOM"; DB=$ID
DOCKER_PORT=$(free_port); SERVICE_PORT=$(free_port); PM2_PORT=$(free_port); RECORD_PORT=$(free_port)
mkdir -p "$D"/{service/releases,pm2/releases,pm2/home,migrations,records,run}
printf 'ID=%s\nDB=%s\nDOCKER_PORT=%s\nSERVICE_PORT=%s\nPM2_PORT=%s\nRECORD_PORT=%s\nPM2_BIN=%s\n' \
  "$ID" "$DB" "$DOCKER_PORT" "$SERVICE_PORT" "$PM2_PORT" "$RECORD_PORT" "$PM2_BIN" > "$D/stack.env"
# A setup that fails half way removes what it started.
trap '[ $? = 0 ] || bash "$HERE/teardown.sh" "$D"' EXIT
sed "s/@ID@/$ID/g; s/@DB@/$DB/g; s/@DOCKER_PORT@/$DOCKER_PORT/g; s/@SERVICE_PORT@/$SERVICE_PORT/g; s/@PM2_PORT@/$PM2_PORT/g; s|@PM2_BIN@|$PM2_BIN|g" \
  "$HERE/rollback.toml.in" > "$D/rollback.toml"

# The releases: 1.4.2 (good) and 2.0.0, whose "faster" price parsing stops at the
# thousands separator ('61,250.50' -> 61).
release() { # dir version
  mkdir -p "$1"
  cp "$HERE/server.js" "$1/"
  printf '{ "name": "market-monitor", "version": "%s", "private": true }\n' "$2" > "$1/package.json"
}
release "$D/service/releases/v1" 1.4.2
release "$D/service/releases/v2" 2.0.0
sed -i "s|^  return Number(text.replace(/,/g, ''))$|  return parseFloat(text) // 2.0.0: no regex on the hot path|" "$D/service/releases/v2/server.js"
grep -q 'return parseFloat' "$D/service/releases/v2/server.js"
cp -r "$D/service/releases/v1" "$D/service/releases/v2" "$D/pm2/releases/"
ln -s v1 "$D/service/releases/current"
ln -s v1 "$D/pm2/releases/current"

# Images, without a registry: rollback-test/node:v1 is a rootfs holding node and
# exactly the libraries `ldd` lists; the market images add a release in /app.
# Built once; a market image is rebuilt when its release's files change.
if ! docker image inspect rollback-test/node:v1 >/dev/null 2>&1; then
  root=$(mktemp -d)
  mkdir -p "$root/usr/bin" "$root/etc" "$root/app" "$root/tmp"
  chmod 1777 "$root/tmp"
  cp "$(command -v node)" "$root/usr/bin/node"
  for lib in $(ldd "$root/usr/bin/node" | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  printf 'root:x:0:0:root:/:/bin/sh\n' > "$root/etc/passwd"
  echo "[market-monitor] building rollback-test/node:v1" >&2
  tar -C "$root" -c . | docker import --change "ENV PATH=/usr/bin" --change 'CMD ["/usr/bin/node"]' - rollback-test/node:v1 >/dev/null
  rm -rf "$root"
fi
market_image() { # tag, release dir
  local tag=$1 dir=$2 sum cid old
  sum=$(cat "$dir/server.js" "$dir/package.json" | sha256sum | cut -c1-16)
  [ "$(docker image inspect -f '{{index .Config.Labels "org.example.release"}}' "$tag" 2>/dev/null)" = "$sum" ] && return 0
  old=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
  echo "[market-monitor] building $tag" >&2
  cid=$(docker create rollback-test/node:v1)
  docker cp "$dir/." "$cid:/app/" >/dev/null
  docker commit --change "WORKDIR /app" --change "ENV HOST=0.0.0.0 PORT=8080" --change "EXPOSE 8080" \
    --change "LABEL org.example.release=$sum" --change 'CMD ["/usr/bin/node","server.js"]' \
    --change 'HEALTHCHECK --interval=1s --timeout=2s --retries=3 CMD ["/usr/bin/node","-e","fetch(\"http://127.0.0.1:8080/health\").then(r=>r.json()).then(b=>process.exit(b.status===\"healthy\"?0:1),()=>process.exit(1))"]' \
    "$cid" "$tag" >/dev/null
  docker rm "$cid" >/dev/null
  # The image of an older server.js, now untagged (kept if something still uses it).
  [ -z "$old" ] || docker rmi "$old" >/dev/null 2>&1 || true
}
market_image rollback-test/market:v1 "$D/service/releases/v1"
market_image rollback-test/market:v2 "$D/service/releases/v2"

# The database: alert rules (thresholds in percent), 4000 price ticks, migrations 1-12.
psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres -c "CREATE DATABASE \"$DB\""
psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres -d "$DB" <<'SQL'
CREATE TABLE schema_migrations (version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());
INSERT INTO schema_migrations (version) SELECT to_char(g, 'FM0000') FROM generate_series(1, 12) g;
CREATE TABLE alert_rules (
  id serial PRIMARY KEY,
  symbol text NOT NULL,
  kind text NOT NULL,
  threshold_pct numeric(8,4) NOT NULL,
  enabled boolean NOT NULL DEFAULT true
);
CREATE TABLE price_ticks (
  id bigserial PRIMARY KEY,
  symbol text NOT NULL,
  price numeric(18,8) NOT NULL,
  received_at timestamptz NOT NULL,
  written_by text NOT NULL
);
CREATE INDEX price_ticks_symbol_time ON price_ticks (symbol, received_at);
CREATE TABLE reference_prices (symbol text PRIMARY KEY, price numeric(18,8) NOT NULL);
INSERT INTO reference_prices VALUES ('BTC-USD', 61250.50), ('ETH-USD', 3412.25), ('BNB-USD', 1012.40),
  ('SOL-USD', 148.32), ('AVAX-USD', 36.10), ('LINK-USD', 14.87), ('XRP-USD', 0.5214), ('DOGE-USD', 0.1432);
INSERT INTO alert_rules (symbol, kind, threshold_pct)
SELECT symbol, kind, t FROM reference_prices,
  (VALUES ('move_5m', 2.5), ('move_1h', 5.0), ('spread', 0.125)) k(kind, t) ORDER BY symbol, kind;
INSERT INTO price_ticks (symbol, price, received_at, written_by)
SELECT symbol, round(price * (1 + ((g * 7) % 41 - 20) / 10000.0), 8), now() - g * interval '1 second', '1.4.2'
FROM reference_prices, generate_series(1, 500) g;
SQL
cat > "$D/migrations/0013_thresholds_bps.sql" <<'SQL'
-- 2.0.0: alert thresholds in whole basis points instead of percent.
BEGIN;
ALTER TABLE alert_rules ADD COLUMN threshold_bps integer;
UPDATE alert_rules SET threshold_bps = round(threshold_pct * 100);
ALTER TABLE alert_rules ALTER COLUMN threshold_bps SET NOT NULL;
ALTER TABLE alert_rules DROP COLUMN threshold_pct;
INSERT INTO schema_migrations (version) VALUES ('0013');
COMMIT;
SQL

# 1. The container.
docker run -d --name "$ID-market" -p "127.0.0.1:$DOCKER_PORT:8080" -e DEPLOYMENT=docker rollback-test/market:v1 >/dev/null

# 2. The releases dir and its process (systemd's job, done by service/marketctl here).
cp "$HERE/marketctl" "$D/service/marketctl"
printf 'PORT=%s\n' "$SERVICE_PORT" > "$D/service/service.env"
bash "$D/service/marketctl" start

# 3. pm2, with its own PM2_HOME inside the stack.
cat > "$D/pm2/ecosystem.config.js" <<JS
module.exports = {
  apps: [{
    name: '$ID-market',
    cwd: '$D/pm2/releases/current',
    script: 'server.js',
    exec_mode: 'cluster',
    instances: 2,
    env: { PORT: $PM2_PORT, DEPLOYMENT: 'pm2' },
  }],
}
JS
PM2_HOME="$D/pm2/home" "$PM2_BIN" start "$D/pm2/ecosystem.config.js" >/dev/null

# The TypeScript monitor, compiled against the package built in rollback-node/.
M="$D/monitor"
mkdir -p "$M/node_modules/@types"
ln -s "$ROOT/rollback-node" "$M/node_modules/rollback"
ln -s "$ROOT/rollback-node/node_modules/@types/node" "$M/node_modules/@types/node"
ln -s "$ROOT/rollback-node/node_modules/undici-types" "$M/node_modules/undici-types"
cp "$ROOT/examples/node/monitor.ts" "$M/"
printf '{ "name": "watch", "version": "1.0.0", "private": true }\n' > "$M/package.json"
cat > "$M/tsconfig.json" <<'JSON'
{
  "compilerOptions": { "strict": true, "module": "nodenext", "moduleResolution": "nodenext",
                       "target": "es2022", "types": ["node"], "outDir": "." },
  "files": ["monitor.ts"]
}
JSON
node "$TSC" -p "$M/tsconfig.json"
# Its settings (under pm2 they would be the app's `env`), relative to the stack dir.
cat > "$M/monitor.env" <<ENV
ROLLBACK_CONFIG=rollback.toml
HEALTH_URL=http://127.0.0.1:$DOCKER_PORT/health,http://127.0.0.1:$SERVICE_PORT/health,http://127.0.0.1:$PM2_PORT/health
RECORD_URL=http://127.0.0.1:$RECORD_PORT/incidents
POLL_MS=1000
BAD_SAMPLES=3
ENV

# The incident endpoint the monitor posts its record to: one file per rollback.
nohup node -e '
const [port, dir] = process.argv.slice(1)
require("http").createServer((req, res) => {
  if (req.method !== "POST") return res.writeHead(404).end()
  let body = ""
  req.on("data", (c) => (body += c))
  req.on("end", () => {
    const r = JSON.parse(body)
    require("fs").writeFileSync(`${dir}/${r.rollbackId}.json`, JSON.stringify(r, null, 2) + "\n")
    res.writeHead(201).end()
  })
}).listen(Number(port), "127.0.0.1")' "$RECORD_PORT" "$D/records" >/dev/null 2>&1 &
echo $! > "$D/run/receiver.pid"

for port in "$DOCKER_PORT" "$SERVICE_PORT" "$PM2_PORT"; do
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/health" | grep -q '"healthy"' && break; sleep 0.1; done
  curl -sf "http://127.0.0.1:$port/health" | grep -q '"healthy"' || { echo "port $port is not healthy" >&2; exit 1; }
done
for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$RECORD_PORT/" && break; sleep 0.1; done
