#!/usr/bin/env bash
# Install the system tools that the tests need, from Debian/Ubuntu packages, when any is missing:
#   docker-compose  (validates docker-compose.yml; tests/docker runs it)
#   promtool        (package prometheus: validates deploy/prometheus/*.yml)
#   prometheus, redis-server  (binaries only; tests start their own instances on loopback)
#   dockerd, /usr/bin/docker  (package docker.io: tests/docker builds and runs the images; the
#                   tests start dockerd themselves when no Docker engine answers)
#   debootstrap     (tests/docker builds its Debian 12 base image with it: no registry is pulled)
#   groff           (package groff-base: tests/bench renders a manual page as bench/_man_pages.py does)
#   libtcmalloc_minimal  (package libtcmalloc-minimal4: the CPU engine's allocator, which the
#                   server preloads when it is installed; the engine tests check that it does)
#
#   sudo bash deploy/install-test-tools.sh     # root needed only when something is missing
#
# The packages' own daemons are not left running: a policy-rc.d that refuses service starts is in
# place for the install (unless the machine already has one), and under systemd the units are
# disabled and stopped afterwards.
set -euo pipefail

missing=()
# /usr/bin/docker by its path: a docker client elsewhere on PATH may lack BuildKit (buildx).
tools=(docker-compose promtool prometheus redis-server dockerd /usr/bin/docker debootstrap groff)
packages=(docker-compose prometheus redis-server docker.io debootstrap groff-base)
have() { command -v "$1" >/dev/null 2>&1 || [[ -x /usr/sbin/$1 ]]; }
for tool in "${tools[@]}"; do
    have "$tool" || missing+=("$tool")
done
packages+=(libtcmalloc-minimal4)
# grep without -q reads the whole list: with pipefail, an early exit would fail ldconfig (SIGPIPE).
{ ldconfig -p 2>/dev/null || /sbin/ldconfig -p; } | grep libtcmalloc_minimal >/dev/null ||
    missing+=(libtcmalloc_minimal)
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "test tools present: ${tools[*]}"
    exit 0
fi
# Only packages not installed yet: their daemons are the ones to keep from running (below).
new=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || new+=("$package")
done
echo "missing: ${missing[*]}; installing ${new[*]}"

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
# No recommends: prometheus would pull node-exporter, docker.io apparmor and friends.
$SUDO apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${new[@]}" >/dev/null

# Under systemd, the units of what was just installed are disabled and stopped; a Docker engine
# that was already there is left alone.
declare -A units=(
    [prometheus]="prometheus.service" [redis-server]="redis-server.service"
    [docker.io]="docker.service docker.socket containerd.service"
)
if [[ -d /run/systemd/system ]]; then
    for package in "${new[@]}"; do
        # shellcheck disable=SC2086  # a list of unit names
        [[ -n "${units[$package]:-}" ]] && $SUDO systemctl disable --now ${units[$package]} \
            >/dev/null 2>&1 || true
    done
fi

for tool in "${tools[@]}"; do
    have "$tool" || { echo "still missing after install: $tool" >&2; exit 1; }
done
echo "installed: $(docker-compose version --short), $(promtool --version 2>&1 | head -1)," \
    "$(/usr/bin/docker --version)"
