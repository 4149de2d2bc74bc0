#!/usr/bin/env bash
# STAND-IN for dokku (Dokku cannot run on this machine): a mock of the documented
# command formats only, used by tests/dokku.rs and the behaviour suite's dokku fixture.
# State beside it: image, source, meta (apps:report), config ("KEY<TAB>value" lines),
# origin (see docker-standin.sh), fail-set and fail-deploy (faults to inject).
set -eu
D="$(cd "$(dirname "$0")" && pwd)"
printf 'dokku %s\n' "$*" >> "$D/argv.log"
cmd=$1; shift
case "$cmd" in
  ps:inspect)
    printf '[{"Id":"c0ffee1","Name":"/%s.web.1","Image":"%s","Config":{"Image":"dokku/%s:latest"},"State":{"Status":"running","Running":true}}]\n' \
      "$1" "$(cat "$D/image")" "$1" ;;
  apps:report)
    printf '{"app-created-at":"1700000000","app-deploy-source":"%s","app-deploy-source-metadata":"%s","app-dir":"/home/dokku/%s","app-locked":"false"}\n' \
      "$(cat "$D/source")" "$(cat "$D/meta")" "$1" ;;
  ps:report)
    printf '{"deployed":"true","processes":"1","ps-can-scale":"true","ps-restart-policy":"on-failure:10","restore":"true","running":"true","status-web-1":"running (CID: c0ffee1)"}\n' ;;
  config:export)
    [ "$2 $3" = "--format json" ] || { echo " !     only --format json is faked" >&2; exit 1; }
    first=1; printf '{'
    while IFS=$'\t' read -r k v; do
      [ -n "$k" ] || continue
      [ "$first" = 1 ] || printf ','
      first=0; printf '"%s":"%s"' "$k" "$v"
    done < "$D/config"
    printf '}\n' ;;
  config:clear)
    [ "$1" = --no-restart ] || { echo "config:clear without --no-restart would restart" >&2; exit 1; }
    : > "$D/config" ;;
  config:unset)
    [ "$1" = --no-restart ] || { echo "config:unset without --no-restart would restart" >&2; exit 1; }
    shift 2 # --no-restart app
    for k in "$@"; do
      grep -v "^$k	" "$D/config" > "$D/config.new" || true
      mv "$D/config.new" "$D/config"
    done ;;
  config:set)
    # An ssh connection dropped (or the CLI killed) before Dokku changed anything.
    [ -e "$D/fail-set" ] && { echo "Connection to dokku.example.com closed by remote host." >&2; exit 255; }
    encoded=0
    while [ "${1#--}" != "$1" ]; do [ "$1" = --encoded ] && encoded=1; shift; done
    shift # app
    for kv in "$@"; do
      k=${kv%%=*}; v=${kv#*=}
      [ "$encoded" = 1 ] && v=$(printf '%s' "$v" | base64 -d)
      grep -v "^$k	" "$D/config" > "$D/config.new" || true
      printf '%s\t%s\n' "$k" "$v" >> "$D/config.new"
      mv "$D/config.new" "$D/config"
    done ;;
  git:from-image)
    if [ -e "$D/fail-deploy" ]; then
      # Real deploy output can echo the environment: the driver must redact it.
      echo "remote: App $1 failed its checks; env was $(cut -f2 "$D/config" | tr '\n' ' ')" >&2
      exit 1
    fi
    if [ "$(cat "$D/meta")" = "$2" ]; then echo "No changes detected, skipping git commit"; exit 0; fi
    echo "sha256:rebuilt-from-$(printf '%s' "$2" | md5sum | cut -c1-8)" > "$D/image"
    echo "$2" > "$D/meta"; echo docker-image > "$D/source"
    # A rebuild from a tag runs what the tagged image was built from; from a digest, that digest.
    o=$(awk -F'\t' -v r="$2" '$1 == r { o = $2 } END { print o }' "$D/tags" 2>/dev/null || true)
    echo "${o:-$2}" > "$D/origin" ;;
  ps:restart) ;;
  *) echo " !     $cmd is not a dokku command" >&2; exit 1 ;;
esac
