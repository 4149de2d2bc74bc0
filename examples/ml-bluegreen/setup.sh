#!/usr/bin/env bash
# Builds the blue/green stack in $1: nginx on loopback in front of two model
# servers (blue v3 live, green v4 idle) and the trading loop.
set -euo pipefail
D=$1; HERE=$(cd "$(dirname "$0")" && pwd)
if ! command -v nginx >/dev/null 2>&1; then
  # Keep the package from starting a system nginx on port 80.
  made=0; [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made=1; }
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null
  [ "$made" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port); BLUE=$(free_port); GREEN=$(free_port)
mkdir -p "$D/nginx/logs" "$D/run"
cp "$HERE/bot.py" "$HERE/trader.py" "$D/"
sed "s/@PORT@/$PORT/g" "$HERE/rollback.toml.in" > "$D/rollback.toml"
cat > "$D/nginx/nginx.conf" <<CONF
daemon on;
pid run/nginx.pid;
error_log logs/error.log;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path run/body; proxy_temp_path run/proxy;
  fastcgi_temp_path run/fastcgi; uwsgi_temp_path run/uwsgi; scgi_temp_path run/scgi;
  include upstream.conf;
  server {
    listen 127.0.0.1:$PORT;
    location / { proxy_pass http://bot; }
  }
}
CONF
mkdir -p "$D/nginx/run"
echo "upstream bot { server 127.0.0.1:$BLUE; }   # blue: model v3" > "$D/nginx/upstream.conf"
printf 'MODEL_VERSION=v3\nSIGNAL_THRESHOLD=0.65\nBLUE_PORT=%s\nGREEN_PORT=%s\nNGINX_PORT=%s\n' "$BLUE" "$GREEN" "$PORT" > "$D/bot.env"
cd "$D"
nohup python3 bot.py blue "$BLUE" v3 >/dev/null 2>&1 & echo $! > run/blue.pid
nohup python3 bot.py green "$GREEN" v4 >/dev/null 2>&1 & echo $! > run/green.pid
nginx -p nginx -c nginx.conf
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.1; done
nohup python3 trader.py "http://127.0.0.1:$PORT/predict" run/trader.heartbeat >/dev/null 2>&1 & echo $! > run/trader.pid
sleep 0.5
