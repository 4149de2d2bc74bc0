#!/usr/bin/env bash
# Rolling one container back to the previous image: the runbook method with the docker
# CLI (`docker stop -t GRACE`, `docker rm`, `docker run` the previous image) side by
# side with `rollback rollback` (the `docker` driver's restore with the same grace),
# each timed from the first command to the first HTTP answer of the previous version.
#
#   bash benches/docker.sh [runs_with_grace=3] [runs_without=5]
#
# Needs dockerd and the test images (scripts/setup-docker.sh). The images run busybox
# httpd as PID 1, which ignores SIGTERM like many real images: with the default 10 s
# grace, `docker stop` waits it out. Containers run with --no-healthcheck so that both
# methods are gated by the same HTTP poll (Docker 20.10 runs a first healthcheck only
# after one interval). Prints a Markdown table of medians (ms).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS_G=${1:-3}; RUNS_0=${2:-5}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
bash scripts/setup-docker.sh
cargo build --release -q -p rollback-cli --features rollback-core/driver-docker
RB="$CARGO_TARGET_DIR/${CARGO_BUILD_TARGET:+$CARGO_BUILD_TARGET/}release/rollback"
OK=rollback-test/web:ok; BAD=rollback-test/web:v2
ID="rbbench-$$"
W=$(mktemp -d /tmp/rollback-bench-docker.XXXXXX)
cleanup() {
  docker ps -aq --filter "name=$ID" | xargs -r docker rm -f >/dev/null 2>&1 || true
  docker images --format '{{.Repository}}:{{.Tag}}' | grep "^rollback/$ID" | xargs -r docker rmi >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT
now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2))}'; }
m() { printf '%s\n' "$@" | median; }
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_answer() { # port, body
  until [ "$(curl -s -m 1 "http://127.0.0.1:$1/" 2>/dev/null)" = "$2" ]; do sleep 0.01; done
}

run_cli() { # grace -> ms
  local g=$1 port name="$ID-cli"; port=$(free_port)
  docker run -d --name "$name" -p "127.0.0.1:$port:8080" --no-healthcheck "$BAD" >/dev/null
  wait_answer "$port" v2
  local t0 t1; t0=$(now)
  docker stop -t "$g" "$name" >/dev/null
  docker rm "$name" >/dev/null
  docker run -d --name "$name" -p "127.0.0.1:$port:8080" --no-healthcheck "$OK" >/dev/null
  wait_answer "$port" ok
  t1=$(now)
  docker rm -f "$name" >/dev/null
  ms "$t0" "$t1"
}

run_rb() { # grace -> "whole_ms restore_step_ms"
  local g=$1 port name="$ID-rb"; port=$(free_port)
  mkdir -p "$W/g$g"; cd "$W/g$g"
  cat > rollback.toml <<TOML
[[component]]
name = "web"
driver = "docker"
container = "$name"
stop_grace = "${g}s"
TOML
  docker run -d --name "$name" -p "127.0.0.1:$port:8080" --no-healthcheck "$OK" >/dev/null
  wait_answer "$port" ok
  local snap; snap=$("$RB" -q snapshot)
  docker rm -f "$name" >/dev/null
  docker run -d --name "$name" -p "127.0.0.1:$port:8080" --no-healthcheck "$BAD" >/dev/null
  wait_answer "$port" v2
  local t0 t1; t0=$(now)
  "$RB" -q --json rollback "$snap" --yes --no-safety-snapshot > rec.json
  wait_answer "$port" ok
  t1=$(now)
  local step; step=$(python3 -c 'import json;r=json.load(open("rec.json"));assert r["status"]=="succeeded",r;print([s["duration_ms"] for s in r["steps"] if s["action"]=="restore"][0])')
  docker rm -f "$name" >/dev/null
  cd - >/dev/null
  echo "$(ms "$t0" "$t1") $step"
}

declare -a cli10 rb10 step10 cli0 rb0 step0
for _ in $(seq 1 "$RUNS_G"); do
  cli10+=("$(run_cli 10)"); read -r a b < <(run_rb 10); rb10+=("$a"); step10+=("$b")
done
for _ in $(seq 1 "$RUNS_0"); do
  cli0+=("$(run_cli 0)"); read -r a b < <(run_rb 0); rb0+=("$a"); step0+=("$b")
done
ratio() { python3 -c "print(f'{$1/max($2,1):.2f}x')"; }
echo "| stop → first answer of the previous image (median) | docker CLI | rollback (whole command) | driver restore step | whole / CLI |"
echo "|---|---|---|---|---|"
echo "| grace 10 s, SIGTERM ignored ($RUNS_G runs) | $(m "${cli10[@]}") ms | $(m "${rb10[@]}") ms | $(m "${step10[@]}") ms | $(ratio "$(m "${rb10[@]}")" "$(m "${cli10[@]}")") |"
echo "| no grace ($RUNS_0 runs) | $(m "${cli0[@]}") ms | $(m "${rb0[@]}") ms | $(m "${step0[@]}") ms | $(ratio "$(m "${rb0[@]}")" "$(m "${cli0[@]}")") |"
