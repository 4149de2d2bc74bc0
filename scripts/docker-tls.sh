#!/usr/bin/env bash
# A second Docker engine that answers only over TLS with client certificates
# (`dockerd --tlsverify` on 127.0.0.1:2376), for the docker driver's TLS test.
# It uses the CA, server and client certificates of scripts/tls-servers.sh (in
# TLS_DIR), keeps its own data and run directories under DIR and its own bridge
# (rbtls0), and gets the rollback-test/web images from the main engine.
# Never `--bridge none`: a dockerd started so deletes docker0, the main engine's.
#   scripts/docker-tls.sh start DIR TLS_DIR   idempotent; writes DIR/env
#   scripts/docker-tls.sh stop DIR
set -euo pipefail

log() { printf '[docker-tls] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
usage() { echo "usage: $0 start DIR TLS_DIR | stop DIR" >&2; exit 2; }

PORT=2376
ACTION=${1:-}
DIR=${2:-}
[ -n "$ACTION" ] && [ -n "$DIR" ] || usage

client() { docker --tlsverify --tlscacert "$DIR/certs/ca.pem" --tlscert "$DIR/certs/cert.pem" \
  --tlskey "$DIR/certs/key.pem" -H "tcp://127.0.0.1:$PORT" "$@"; }

case $ACTION in
  start)
    TLS_DIR=${3:-}
    [ -n "$TLS_DIR" ] || usage
    [ -f "$TLS_DIR/ca.crt" ] || die "no CA in $TLS_DIR: run scripts/tls-servers.sh start $TLS_DIR first"
    command -v dockerd >/dev/null || die "dockerd is not installed (scripts/setup-docker.sh)"
    mkdir -p "$DIR/root" "$DIR/exec" "$DIR/certs"
    # Docker's layout for --tlsverify clients.
    cp "$TLS_DIR/ca.crt" "$DIR/certs/ca.pem"
    cp "$TLS_DIR/client.crt" "$DIR/certs/cert.pem"
    install -m 600 "$TLS_DIR/client.key" "$DIR/certs/key.pem"
    if ! client version >/dev/null 2>&1; then
      if ! ip link show rbtls0 >/dev/null 2>&1; then
        ip link add rbtls0 type bridge
        ip addr add 172.31.250.1/24 dev rbtls0
        ip link set rbtls0 up
      fi
      log "starting dockerd --tlsverify on 127.0.0.1:$PORT"
      nohup dockerd --data-root "$DIR/root" --exec-root "$DIR/exec" --pidfile "$DIR/dockerd.pid" \
        -H "tcp://127.0.0.1:$PORT" --tlsverify --tlscacert "$TLS_DIR/ca.crt" \
        --tlscert "$TLS_DIR/server.crt" --tlskey "$TLS_DIR/server.key" \
        --bridge rbtls0 --iptables=false --ip6tables=false >"$DIR/dockerd.log" 2>&1 &
      for _ in $(seq 1 120); do client version >/dev/null 2>&1 && break; sleep 0.5; done
      client version >/dev/null 2>&1 || { tail -20 "$DIR/dockerd.log" >&2; die "dockerd --tlsverify did not come up"; }
    fi
    for tag in rollback-test/web:ok rollback-test/web:v2; do
      if ! client image inspect "$tag" >/dev/null 2>&1; then
        docker image inspect "$tag" >/dev/null 2>&1 || die "$tag is missing on the main engine (scripts/setup-docker.sh)"
        docker save "$tag" | client load >/dev/null
      fi
    done
    cat >"$DIR/env" <<ENV
export DOCKER_TLS_HOST='tcp://localhost:$PORT'
export DOCKER_TLS_CERT_PATH='$DIR/certs'
ENV
    log "dockerd --tlsverify up; source $DIR/env"
    ;;
  stop)
    [ -f "$DIR/dockerd.pid" ] || exit 0
    pid=$(cat "$DIR/dockerd.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    ;;
  *) usage ;;
esac
