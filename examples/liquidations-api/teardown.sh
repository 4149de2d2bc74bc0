#!/usr/bin/env bash
# Removes what setup.sh made for the stack in $1 (containers, database, keys, tags).
D=$1; [ -f "$D/stack.env" ] || exit 0; source "$D/stack.env"
docker ps -aq --filter "label=com.docker.compose.project=$ID" | xargs -r docker rm -f >/dev/null 2>&1
docker images --format '{{.Repository}}:{{.Tag}}' | grep "^rollback/$ID" | xargs -r docker rmi >/dev/null 2>&1
mysql -h 127.0.0.1 -uroot -e "DROP DATABASE IF EXISTS \`$ID\`" 2>/dev/null
redis-cli -h 127.0.0.1 --scan --pattern "$ID:*" | xargs -r redis-cli -h 127.0.0.1 DEL >/dev/null
true
