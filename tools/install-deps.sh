#!/bin/sh
# Install the Debian packages the lab and the test suite need, only those
# missing.  Run as root on Debian 12 / Ubuntu 22.04+.
set -eu
PACKAGES="debootstrap systemd-container iproute2 openssh-client haproxy rsync git make python3 python3-venv ca-certificates"
if [ "$(id -u)" != 0 ]; then
    echo "install-deps: must run as root (apt-get install)" >&2
    exit 2
fi
missing=""
for pkg in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    echo "install-deps: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
# The host must not run the haproxy package's own service: tests start their
# own haproxy processes on loopback.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now haproxy >/dev/null 2>&1 || true
fi
