#!/usr/bin/env bash
# System tools the tests use, from Debian's packages: lua5.4 (the Argo CD health
# script), prometheus (promtool; a real Prometheus), and for the real-node e2e test:
# docker.io (builds the images), debootstrap (their Debian base where no registry
# answers), containernetworking-plugins (the node's pod network), libseccomp-dev and
# pkg-config (runc is built with seccomp), iproute2 (the node's veth pair).
set -euo pipefail
missing=()
command -v lua5.4 >/dev/null || missing+=(lua5.4)
command -v promtool >/dev/null || missing+=(prometheus)
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] || missing+=(containernetworking-plugins)
command -v pkg-config >/dev/null || missing+=(pkg-config)
pkg-config --exists libseccomp 2>/dev/null || missing+=(libseccomp-dev)
command -v ip >/dev/null || missing+=(iproute2)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "missing ${missing[*]}: install them with apt-get (needs root)" >&2
  exit 1
fi
echo "installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
