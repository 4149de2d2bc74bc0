#!/usr/bin/env bash
# Starts (and installs when missing) what the test suites talk to: PostgreSQL,
# MariaDB, Redis. Safe to run again: a service already answering is left alone.
set -euo pipefail

log() { printf '[services] %s\n' "$*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }
apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
wait_for() { # name, command...
  local name=$1; shift
  for _ in $(seq 1 60); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  log "$name did not come up"; return 1
}

# PostgreSQL
if ! pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1; then
  have pg_ctlcluster || apt_install postgresql
  log "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  wait_for PostgreSQL pg_isready -h 127.0.0.1 -p 5432
fi
psql -h 127.0.0.1 -U postgres -Atc "select 1 from pg_database where datname='test'" postgres 2>/dev/null | grep -q 1 \
  || psql -h 127.0.0.1 -U postgres -c "create database test" postgres >/dev/null 2>&1 || true

# MariaDB
if ! mysqladmin -h 127.0.0.1 -uroot ping >/dev/null 2>&1; then
  have mariadbd || apt_install mariadb-server
  log "starting MariaDB"
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
  wait_for MariaDB mysqladmin -h 127.0.0.1 -uroot ping
fi
mysql -h 127.0.0.1 -uroot -e "create database if not exists test" >/dev/null 2>&1 || true

# Redis
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  have redis-server || apt_install redis-server
  log "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for Redis redis-cli -h 127.0.0.1 -p 6379 ping
fi
log "PostgreSQL, MariaDB and Redis are up"
