#!/usr/bin/env bash
# Stops what setup.sh started in $1.
D=$1
[ -f "$D/nginx/run/nginx.pid" ] && kill "$(cat "$D/nginx/run/nginx.pid")" 2>/dev/null
for p in blue green trader; do [ -f "$D/run/$p.pid" ] && kill "$(cat "$D/run/$p.pid")" 2>/dev/null; done
true
