#!/usr/bin/env bash
# Makes sure the host has what the tests need from Debian/Ubuntu packages and
# that a Docker engine answers. Installs only what is missing (apt), and
# starts dockerd only when no engine answers (our CI machines run none).
#   scripts/host-deps.sh            packages + Docker engine
#   scripts/host-deps.sh --no-docker  packages only
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)

# postgresql: throwaway clusters for the app tests; pebble: ACME server for certbot tests;
# debootstrap: the local systemd test image; chromium + chromium-driver: headless browser checks
# of the app's page (Selenium drives /usr/bin/chromedriver, so nothing is downloaded at test time).
packages=(postgresql pebble debootstrap chromium chromium-driver)
want_docker=true
[ "${1:-}" = "--no-docker" ] && want_docker=false
if $want_docker && ! docker info >/dev/null 2>&1 && ! command -v dockerd >/dev/null; then
  packages+=(docker.io)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing host packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  # policy-rc.d keeps the packages from starting daemons on the host's ports.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${sudo[@]}" chmod +x /usr/sbin/policy-rc.d
    trap '"${sudo[@]}" rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

$want_docker || exit 0
if docker info >/dev/null 2>&1; then
  echo "==> Docker engine answers"
  exit 0
fi
echo "==> starting dockerd"
mkdir -p .cache
"${sudo[@]}" setsid dockerd >.cache/dockerd.log 2>&1 </dev/null &
for _ in $(seq 60); do
  docker info >/dev/null 2>&1 && { echo "==> Docker engine answers"; exit 0; }
  sleep 1
done
echo "dockerd did not answer within 60 s; see .cache/dockerd.log" >&2
tail -20 .cache/dockerd.log >&2
exit 1
