#!/usr/bin/env bash
# Builds the systemd test image without a registry: debootstrap a Debian 12
# rootfs, import it, then apply images/debian12/Dockerfile. The tag carries a
# hash of the recipe, so the image is rebuilt only when the recipe changes.
set -euo pipefail
cd "$(dirname "$0")/.."

name=${MOLECULE_IMAGE_NAME:-nnp-systemd}
recipe=(scripts/build-image.sh images/debian12/Dockerfile images/debian12/sources.list)
hash=$(cat "${recipe[@]}" | sha256sum | cut -c1-12)
tag="$name:debian12-$hash"

if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "==> test image $tag is up to date"
else
  start=$SECONDS
  if ! docker image inspect nnp-rootfs:bookworm >/dev/null 2>&1; then
    echo "==> debootstrap Debian 12 rootfs"
    rootfs=$(mktemp -d /var/tmp/nnp-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase --include=systemd,systemd-sysv,python3,sudo,ca-certificates \
      bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
    tar -C "$rootfs" -c --exclude=./dev --exclude=./proc --exclude=./sys \
      --exclude=./var/cache/apt/archives --exclude=./var/lib/apt/lists . \
      | docker import - nnp-rootfs:bookworm >/dev/null
  fi
  echo "==> building $tag"
  docker build --quiet -t "$tag" images/debian12 >/dev/null
  echo "==> built $tag in $((SECONDS - start)) s"
fi
docker tag "$tag" "$name:debian12"
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$name:debian12"
