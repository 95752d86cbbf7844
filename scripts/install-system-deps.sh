#!/usr/bin/env bash
# Installs the Debian packages the build needs and nothing else:
# - libclang-dev and clang: bindgen generates RocksDB's Rust bindings from its C headers.
# - faketime: the clock-fault test runs one KMA with its clock a year ahead (issue #16).
# - python3-venv and openssl: scripts/kmip-interop.sh installs PyKMIP into a virtual
#   environment and makes its clients' certificate requests (issue 19).
# Packages named as arguments are installed instead (scripts/install-bench-deps.sh uses that).
# Safe to run again: it installs only what is missing.
set -euo pipefail

if [ "$#" -gt 0 ]; then
  wanted=("$@")
else
  wanted=(libclang-dev clang faketime python3-venv openssl)
fi
missing=()
for package in "${wanted[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$package")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  sudo=sudo
else
  sudo=
fi
echo "installing system packages: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
