#!/usr/bin/env bash
# Makes sure the host has what the test run needs from Debian (Docker
# engine, debootstrap, PostgreSQL binaries) and that a Docker engine answers.
# Installs only what is missing; starts dockerd only when none answers.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(docker.io debootstrap postgresql)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing host packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d keeps the packages from starting daemons on the host's ports.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if docker info >/dev/null 2>&1; then
  echo "==> Docker engine answers"
  exit 0
fi
if ! command -v dockerd >/dev/null; then
  echo "dockerd is not installed and no Docker engine answers" >&2
  exit 1
fi
echo "==> starting dockerd"
mkdir -p .cache
setsid dockerd >.cache/dockerd.log 2>&1 < /dev/null &
for _ in $(seq 60); do
  docker info >/dev/null 2>&1 && { echo "==> Docker engine answers"; exit 0; }
  sleep 1
done
echo "dockerd did not answer within 60 s; see .cache/dockerd.log" >&2
tail -20 .cache/dockerd.log >&2
exit 1
