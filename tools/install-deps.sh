#!/usr/bin/env bash
# System packages the test home and the tests use (Debian). Installs what is
# missing when run as root; otherwise says what to install.
set -eu
pkgs="iproute2 unbound mosquitto mosquitto-clients tcpdump tshark dnsutils knot-dnsutils dnsperf dnsmasq-base socat iperf3 nginx-light curl openssl ncat haproxy chrony chromium chromium-driver"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "missing system packages:$missing (run as root, or: sudo apt-get install$missing)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing >/dev/null
# The packaged services must not run in the host namespace: the tests start
# their own, inside the test home. (chrony is left alone: on a host it may be
# what keeps the clock; the tests run their own chronyd with -x, which never
# touches it.)
for svc in unbound mosquitto nginx dnsmasq haproxy; do
    (systemctl disable --now "$svc" || service "$svc" stop) >/dev/null 2>&1 || true
done
