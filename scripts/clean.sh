#!/usr/bin/env bash
# Removes what the test run left: Molecule containers, caches, the venv.
# Docker images are kept; scripts/build-image.sh rebuilds them only when needed.
set -euo pipefail
cd "$(dirname "$0")/.."
if docker info >/dev/null 2>&1; then
  ids=$(docker ps -aq --filter label=owner=molecule)
  # shellcheck disable=SC2086 # one id per word
  [ -z "$ids" ] || docker rm -f $ids >/dev/null
fi
rm -rf .venv .cache/facts .cache/wheel-check .pytest_cache .ruff_cache collections artifacts
find . -name __pycache__ -type d -prune -exec rm -rf {} +
echo "clean"
