#!/usr/bin/env bash
# Builds the local base image for the KMA container (default name kms-base:bookworm) from Debian
# bookworm with debootstrap, for machines that cannot pull images from a registry. Elsewhere, skip
# this and build the KMA image on a normal base: KMS_BASE_IMAGE=debian:bookworm-slim.
#
# Idempotent: does nothing when the image exists already with the packages below (its label
# kms.base.include names them; an image made with another list is made again). Needs root
# (debootstrap) and Docker.
#   KMS_BASE_IMAGE   image name to create            (default kms-base:bookworm)
#   KMS_DEBIAN_MIRROR  Debian mirror for debootstrap (default: debootstrap's own default)
set -euo pipefail

image="${KMS_BASE_IMAGE:-kms-base:bookworm}"
suite=bookworm
# The kma binary links libstdc++ and libgcc_s (RocksDB is C++); minbase has them through apt, but
# name them so that the image never depends on that accident. Containers have no network, so
# everything the image needs goes in here, not in the Dockerfile. faketime: the chaos suite
# skews a KMA's clock (issue 20); it is loaded only where a test preloads it.
include=libstdc++6,libgcc-s1,ca-certificates,faketime

say() { echo "docker-base-image: $*" >&2; }

if ! docker info >/dev/null 2>&1; then
  say "error: cannot talk to the Docker daemon (is it running? are you in the docker group?)"
  exit 1
fi
if docker image inspect "$image" >/dev/null 2>&1; then
  made_with="$(docker image inspect -f '{{index .Config.Labels "kms.base.include"}}' "$image" \
    2>/dev/null || true)"
  if [ "$made_with" = "$include" ]; then
    say "$image exists already; nothing to do"
    exit 0
  fi
  say "$image was made with other packages ('$made_with'); making it again with $include"
fi

if ! command -v debootstrap >/dev/null 2>&1; then
  say "debootstrap is missing; installing it with apt-get"
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
  if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      $sudo apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; }; then
    say "error: debootstrap is not installed and could not be installed."
    say "help: install it (apt-get install debootstrap), or build the KMA image on a normal"
    say "      base instead: KMS_BASE_IMAGE=debian:bookworm-slim (see docs/docker.md)"
    exit 1
  fi
fi
if [ "$(id -u)" -ne 0 ]; then
  say "error: debootstrap needs root; run this script as root (or with sudo)"
  exit 1
fi

root="$(mktemp -d "${TMPDIR:-/tmp}/kms-base.XXXXXX")"
trap 'rm -rf "$root"' EXIT
say "debootstrap --variant=minbase $suite into $root (about a minute)"
mirror=()
if [ -n "${KMS_DEBIAN_MIRROR:-}" ]; then mirror=("$KMS_DEBIAN_MIRROR"); fi
if ! debootstrap --variant=minbase --include="$include" "$suite" "$root" "${mirror[@]}" \
    >"$root.log" 2>&1; then
  tail -20 "$root.log" >&2
  say "error: debootstrap failed (full log: $root.log)"
  exit 1
fi
rm -f "$root.log"
# Package lists and caches are of no use in a container without network.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
say "importing $root as $image"
tar -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' --change "LABEL kms.base.include=$include" - "$image" >/dev/null
say "built $image ($(docker image inspect -f '{{.Size}}' "$image") bytes)"
