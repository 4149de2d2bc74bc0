#!/usr/bin/env bash
# Snapshot and restore of a 10,000-file git repository: `rollback` side by side
# with what runbooks do today (`git tag` + `git reset --hard`).
#
#   bash benches/git.sh [files=10000] [changed=1000] [runs=5]
#
# Prints a Markdown table of medians (ms). Each run starts from the same commit,
# changes `changed` files in a new commit, then goes back.
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=${1:-10000}; CHANGED=${2:-1000}; RUNS=${3:-5}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release -q -p rollback-cli
RB="$CARGO_TARGET_DIR/${CARGO_BUILD_TARGET:+$CARGO_BUILD_TARGET/}release/rollback"
W=$(mktemp -d /tmp/rollback-bench-git.XXXXXX); trap 'rm -rf "$W"' EXIT
now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2))}'; }

mkdir -p "$W/app"; cd "$W/app"
git init -q -b main .; git config user.email b@example.invalid; git config user.name bench
for d in $(seq 0 99); do mkdir -p "src/m$d"; for f in $(seq 0 $((FILES/100 - 1))); do echo "v1 $d $f" > "src/m$d/f$f.py"; done; done
git add -A; git commit -qm base
cat > "$W/rollback.toml" <<TOML
[[component]]
name = "code"
driver = "git"
repo = "app"
TOML
change() { # a deploy touching $CHANGED files
  local n=0
  for f in $(git ls-files | head -n "$CHANGED"); do echo "v2" >> "$f"; n=$((n+1)); done
  git commit -qam deploy
}
cd "$W"
declare -a git_snap git_rest rb_snap rb_rest rb_rest_safe rb_step
for i in $(seq 1 "$RUNS"); do
  cd "$W/app"
  t0=$(now); git tag "bench-$i"; t1=$(now); git_snap+=($(ms $t0 $t1))
  change
  t0=$(now); git reset -q --hard "bench-$i"; t1=$(now); git_rest+=($(ms $t0 $t1))
  cd "$W"
  t0=$(now); snap=$("$RB" -q snapshot --component code); t1=$(now); rb_snap+=($(ms $t0 $t1))
  (cd app && change)
  t0=$(now); "$RB" -q --json rollback "$snap" --yes --no-safety-snapshot > rec.json; t1=$(now); rb_rest+=($(ms $t0 $t1))
  rb_step+=($(python3 -c 'import json;r=json.load(open("rec.json"));print([s["duration_ms"] for s in r["steps"] if s["action"]=="restore"][0])'))
  (cd app && change)
  t0=$(now); "$RB" -q --json rollback "$snap" --yes > rec.json; t1=$(now); rb_rest_safe+=($(ms $t0 $t1))
done
m() { printf '%s\n' "$@" | median; }
echo "| ${FILES} files, ${CHANGED} changed, median of ${RUNS} | git CLI | rollback | ratio |"
echo "|---|---|---|---|"
echo "| snapshot (\`git tag\` vs \`rollback snapshot\`) | $(m "${git_snap[@]}") ms | $(m "${rb_snap[@]}") ms | $(python3 -c "print(round($(m "${rb_snap[@]}")/max($(m "${git_snap[@]}"),1),2))")x |"
echo "| restore (\`git reset --hard\` vs restore step) | $(m "${git_rest[@]}") ms | $(m "${rb_step[@]}") ms | $(python3 -c "print(round($(m "${rb_step[@]}")/max($(m "${git_rest[@]}"),1),2))")x |"
echo "| whole \`rollback rollback\` (preflight, journal, restore, verify, record), no safety snapshot | | $(m "${rb_rest[@]}") ms | |"
echo "| whole \`rollback rollback\` with safety snapshot | | $(m "${rb_rest_safe[@]}") ms | |"
