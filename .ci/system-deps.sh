#!/usr/bin/env bash
# System tools the tests use, from Debian's packages: lua5.4 (the Argo CD health
# script) and prometheus (promtool checks the alert rules and dashboard queries).
set -euo pipefail
missing=()
command -v lua5.4 >/dev/null || missing+=(lua5.4)
command -v promtool >/dev/null || missing+=(prometheus)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "missing ${missing[*]}: install them with apt-get (needs root)" >&2
  exit 1
fi
echo "installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
