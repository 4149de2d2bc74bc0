# Shared by the runbook examples' incident.sh (sourced, after OUT and RB are set).

# Runs a command, saving "$ command" and its output (stdout and stderr) in
# $OUT/<name>.txt for the chapter.
step() {
  local name=$1; shift
  { printf '$'; printf ' %q' "$@"; printf '\n'; } > "$OUT/$name.txt"
  "$@" >> "$OUT/$name.txt" 2>&1
}

# The CLI under test, shown as `rollback` in the chapters.
rollback() { "$RB" "$@"; }
