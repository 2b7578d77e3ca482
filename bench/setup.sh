#!/usr/bin/env bash
# Installs what the benchmark needs and is missing; idempotent. Debian 12 (bookworm), as root or
# with sudo; the Rust toolchain of the README's prerequisites (for oha and the proxy).
#   * Debian packages: nginx 1.22 + njs (libnginx-mod-http-js), HAProxy 2.6 (the anchors and the
#     upstream), apache2-utils (htpasswd), curl, openssl, python3, util-linux (taskset, setsid),
#     procps (ps), iproute2 (ss), and the build's cmake / C toolchain;
#   * oha, the load generator, pinned (OHA_VERSION, default 1.16.0): `cargo install --locked`
#     into TOOLS (default ~/.cache/m2m-auth-proxy-bench), used by path, so another oha on PATH
#     does not change the numbers.
# Installing the packages does not start their services (a temporary policy-rc.d says no): the
# benchmark starts nginx and HAProxy itself, on 127.0.0.1, with its own configs.
set -euo pipefail
OHA_VERSION=${OHA_VERSION:-1.16.0}
TOOLS=${TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/m2m-auth-proxy-bench}
export DEBIAN_FRONTEND=noninteractive
SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo
log() { printf '[%(%H:%M:%S)T] setup: %s\n' -1 "$*" >&2; }

PKGS=(nginx libnginx-mod-http-js haproxy apache2-utils curl ca-certificates openssl python3 util-linux
      procps iproute2 cmake build-essential pkg-config)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then   # keep nginx/haproxy from starting as services on install
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" > /dev/null
    $SUDO chmod +x "$policy"
    trap '$SUDO rm -f "$policy"' EXIT
  fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
fi

# the versions the configs are written for (Debian 12's); others may work but are not the anchors
ngx=$(nginx -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p')
hap=$(haproxy -v | sed -n '1s/.*version \([0-9.]*\).*/\1/p')
case $ngx in 1.22.*) ;; *) log "WARNING: nginx $ngx, the anchors are nginx 1.22 (Debian 12)" ;; esac
case $hap in 2.6.*) ;; *) log "WARNING: HAProxy $hap, the anchors are HAProxy 2.6 (Debian 12)" ;; esac

if [ "$("$TOOLS/bin/oha" --version 2>/dev/null | awk '{print $2}')" != "$OHA_VERSION" ]; then
  command -v cargo > /dev/null || { log "cargo not found: install Rust (README, Quick start)"; exit 1; }
  log "cargo install oha $OHA_VERSION into $TOOLS (a few minutes)"
  # a temporary target dir: not the project's (CARGO_TARGET_DIR may point at it)
  env -u CARGO_TARGET_DIR cargo install --quiet --locked --version "$OHA_VERSION" --root "$TOOLS" oha
fi
log "nginx $ngx, HAProxy $hap, $("$TOOLS/bin/oha" --version) ($TOOLS/bin/oha)"
