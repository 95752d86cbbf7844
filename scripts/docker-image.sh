#!/usr/bin/env bash
# Builds the KMA container image (default kms-kma:latest) from the prebuilt release binary:
#   cargo build --release -p node      # the project's one profile and target dir
#   bash scripts/docker-image.sh
# It stages a small build context (the binary with its debug sections stripped, and
# docker/entrypoint.sh) and runs `docker build -f docker/Dockerfile`. Cheap to run again: an
# unchanged binary reuses Docker's cached layers.
#   KMS_IMAGE          image to build                    (default kms-kma:latest)
#   KMS_BASE_IMAGE     base image                        (default kms-base:bookworm, made by
#                      scripts/docker-base-image.sh when missing; elsewhere debian:bookworm-slim)
#   CARGO_TARGET_DIR   where cargo put the binary        (default <repo>/target)
#   KMS_KMA_BINARY     the kma binary to put in the image (default $CARGO_TARGET_DIR/release/kma;
#                      e.g. an older one from scripts/build-kma-at.sh for the upgrade test)
#   KMS_IMAGE_DEBUGINFO=keep  copy the binary as is (about 20 times larger)
set -euo pipefail
cd "$(dirname "$0")/.."

image="${KMS_IMAGE:-kms-kma:latest}"
base="${KMS_BASE_IMAGE:-kms-base:bookworm}"
binary="${KMS_KMA_BINARY:-${CARGO_TARGET_DIR:-$PWD/target}/release/kma}"
say() { echo "docker-image: $*" >&2; }

if [ ! -x "$binary" ]; then
  say "error: no kma binary at $binary"
  say "help: cargo build --release -p node   (then run this script again)"
  exit 1
fi
if ! docker info >/dev/null 2>&1; then
  say "error: cannot talk to the Docker daemon (is it running? are you in the docker group?)"
  exit 1
fi
if [ "$base" = kms-base:bookworm ]; then
  # Makes it when missing or made with another package list; otherwise a quick no-op.
  bash scripts/docker-base-image.sh
elif ! docker image inspect "$base" >/dev/null 2>&1; then
  say "base image $base is not here; docker build will try to pull it"
fi

context="$(mktemp -d "${TMPDIR:-/tmp}/kms-image.XXXXXX")"
trap 'rm -rf "$context"' EXIT
if [ "${KMS_IMAGE_DEBUGINFO:-strip}" != keep ] && command -v objcopy >/dev/null 2>&1; then
  # Panic messages keep their file:line; only backtraces lose line numbers.
  objcopy --strip-debug "$binary" "$context/kma"
else
  cp "$binary" "$context/kma"
fi
cp docker/entrypoint.sh "$context/entrypoint.sh"
say "building $image on $base from $binary"
docker build --build-arg KMS_BASE_IMAGE="$base" -t "$image" -f docker/Dockerfile \
  "$context" >&2
say "built $image"
