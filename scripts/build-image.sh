#!/usr/bin/env bash
# Builds a systemd test image without a registry: debootstrap a Debian rootfs from Debian's mirror,
# import it, then apply images/Dockerfile with that release's images/<image>/sources.list. The tag
# carries a hash of the recipe, so the image is rebuilt only when the recipe changes.
#   scripts/build-image.sh            Debian 12 (bookworm), the default image of the Molecule scenarios
#   scripts/build-image.sh debian13   Debian 13 (trixie)
set -euo pipefail
cd "$(dirname "$0")/.."

image=${1:-debian12}
case $image in
  debian12) suite=bookworm ;;
  debian13) suite=trixie ;;
  *) echo "usage: $0 [debian12|debian13]" >&2; exit 2 ;;
esac
name=${MOLECULE_IMAGE_NAME:-nnp-systemd}
recipe=(scripts/build-image.sh images/Dockerfile "images/$image/sources.list")
hash=$(cat "${recipe[@]}" | sha256sum | cut -c1-12)
tag="$name:$image-$hash"

if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "==> test image $tag is up to date"
else
  start=$SECONDS
  if ! docker image inspect "nnp-rootfs:$suite" >/dev/null 2>&1; then
    echo "==> debootstrap a Debian $suite rootfs"
    rootfs=$(mktemp -d /var/tmp/nnp-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase --include=systemd,systemd-sysv,python3,sudo,ca-certificates \
      "$suite" "$rootfs" http://deb.debian.org/debian >/dev/null
    tar -C "$rootfs" -c --exclude=./dev --exclude=./proc --exclude=./sys \
      --exclude=./var/cache/apt/archives --exclude=./var/lib/apt/lists . \
      | docker import - "nnp-rootfs:$suite" >/dev/null
  fi
  echo "==> building $tag"
  docker build --quiet --build-arg "ROOTFS=nnp-rootfs:$suite" -f images/Dockerfile -t "$tag" "images/$image" >/dev/null
  echo "==> built $tag in $((SECONDS - start)) s"
fi
docker tag "$tag" "$name:$image"
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$name:$image"
