#!/usr/bin/env bash
# Removes what setup.sh made for the stack in $1: the pm2 daemon, the service process,
# the record receiver, the container (and any set aside), the protecting tags, the
# database. Best effort: every line runs. The rollback-test/* images stay for the next run.
set -euo pipefail
D=$1; [ -f "$D/stack.env" ] || exit 0; source "$D/stack.env"
PM2_HOME="$D/pm2/home" "$PM2_BIN" kill >/dev/null 2>&1 || true
bash "$D/service/marketctl" stop >/dev/null 2>&1 || true
kill "$(cat "$D/run/receiver.pid" 2>/dev/null)" 2>/dev/null || true
docker ps -aq --filter "name=^/$ID-market" | xargs -r docker rm -f >/dev/null 2>&1 || true
docker images --format '{{.Repository}}:{{.Tag}}' | { grep "^rollback/$ID-" || true; } | xargs -r docker rmi >/dev/null 2>&1 || true
psql -X -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null 2>&1 || true
