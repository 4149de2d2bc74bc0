#!/usr/bin/env bash
# STAND-IN for docker on the Dokku host (Dokku cannot run on this machine); a mock,
# used by tests/dokku.rs and the behaviour suite's dokku fixture. State beside it:
#   images   every ref it knows, one per line
#   digests  what `image inspect --format '{{json .RepoDigests}}'` prints
#   origin   what the running image was built from (the oracle's "which code runs")
#   tags     "TAG<TAB>ORIGIN" for each `image tag`: what a later deploy of TAG runs
set -eu
D="$(cd "$(dirname "$0")" && pwd)"
printf 'docker %s\n' "$*" >> "$D/argv.log"
case "$1 $2" in
  "image inspect")
    if [ "$4" = '{{json .RepoDigests}}' ]; then cat "$D/digests"; exit 0; fi
    grep -qxF "$5" "$D/images" && echo "sha256:found" || { echo "Error: No such image: $5" >&2; exit 1; } ;;
  "image tag")
    echo "$4" >> "$D/images"
    # Tagging the running image: the tag carries what it was built from.
    if [ "$3" = "$(cat "$D/image")" ] && [ -e "$D/origin" ]; then o=$(cat "$D/origin"); else o=$3; fi
    printf '%s\t%s\n' "$4" "$o" >> "$D/tags" ;;
  # `image ls -q REF`: the ids of the images REF names; nothing (and exit 0) when none.
  "image ls") if grep -qxF "$4" "$D/images"; then echo "sha256:found"; fi ;;
  "image rm") grep -vxF "$3" "$D/images" > "$D/images.new" || true; mv "$D/images.new" "$D/images" ;;
  *) echo "unknown docker command" >&2; exit 1 ;;
esac
