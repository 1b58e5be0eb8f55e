#!/usr/bin/env bash
# Build a local stand-in for `python:3.11-slim-bookworm` without any container registry:
# mmdebstrap makes a minimal Debian bookworm root filesystem (python3.11 + venv + CA certificates) from the
# Debian archive, and `podman import` turns the tarball into an image. Idempotent: skips if the image exists.
#   scripts/build_base_image.sh [IMAGE]      (default localhost/mfd-base:bookworm-py311)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=podman_env.sh
. "$here/podman_env.sh"
image="${1:-localhost/mfd-base:bookworm-py311}"
if podman image exists "$image"; then
  echo "base image $image already present"
  exit 0
fi
out="$here/../build/base-rootfs.tar"
mkdir -p "$(dirname "$out")"
mmdebstrap --variant=minbase --mode=root --format=tar \
  --include=python3,python3-venv,ca-certificates \
  --aptopt='APT::Install-Recommends "false"' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
  bookworm "$out" http://deb.debian.org/debian
podman import \
  --change 'CMD ["/bin/bash"]' \
  --change 'ENV LANG=C.UTF-8' \
  "$out" "$image"
rm -f "$out"
podman image ls "$image"
