#!/usr/bin/env bash
# Installs the Debian packages the benchmarks need and nothing else:
# - etcd-server: the etcd the cluster bench (`cargo bench -p node --bench cluster_vs_etcd`)
#   runs side by side with the KMAs, as three members on loopback.
# Safe to run again: it installs only what is missing. CI does not run it (benches are not
# part of the test command).
set -euo pipefail

wanted=(etcd-server)
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
echo "installing benchmark packages: ${missing[*]}"
$sudo apt-get update -qq
# --no-install-recommends also keeps the package's init scripts from pulling in extras; the bench
# starts its own members and never uses a system etcd service.
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
