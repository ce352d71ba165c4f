#!/usr/bin/env bash
# Install the system tools that tests/deploy needs, from Debian/Ubuntu packages, when any is missing:
#   docker-compose  (validates docker-compose.yml)
#   promtool        (package prometheus: validates deploy/prometheus/*.yml)
#   prometheus, redis-server  (binaries only; tests start their own instances on loopback)
#
#   sudo bash deploy/install-test-tools.sh     # root needed only when something is missing
#
# The packages' own daemons are not left running: a policy-rc.d that refuses service starts is in
# place for the install (unless the machine already has one), and under systemd the units are
# disabled and stopped afterwards.
set -euo pipefail

missing=()
for tool in docker-compose promtool prometheus redis-server; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "test tools present: docker-compose promtool prometheus redis-server"
    exit 0
fi
echo "missing: ${missing[*]}; installing docker-compose prometheus redis-server"

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi

policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e $policy ]]; then
    # Exit code 101 = "action forbidden": invoke-rc.d and deb-systemd-invoke then start nothing.
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    created_policy=1
fi
cleanup() { if [[ $created_policy -eq 1 ]]; then $SUDO rm -f "$policy"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# No recommends: docker-compose would pull docker.io, prometheus would pull node-exporter.
$SUDO apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    docker-compose prometheus redis-server >/dev/null

if [[ -d /run/systemd/system ]]; then
    $SUDO systemctl disable --now prometheus.service redis-server.service >/dev/null 2>&1 || true
fi

for tool in docker-compose promtool prometheus redis-server; do
    command -v "$tool" >/dev/null 2>&1 || { echo "still missing after install: $tool" >&2; exit 1; }
done
echo "installed: $(docker-compose version --short), $(promtool --version 2>&1 | head -1)"
