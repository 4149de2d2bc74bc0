#!/usr/bin/env bash
# Removes the example's Redis keys.
D=$1; P=$(cat "$D/prefix" 2>/dev/null) || exit 0
redis-cli -h 127.0.0.1 --scan --pattern "$P:*" | xargs -r redis-cli -h 127.0.0.1 DEL >/dev/null
