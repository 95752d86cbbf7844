#!/usr/bin/env bash
# Installs what the benchmarks need besides the build's own packages: etcd-server, the etcd the
# cluster bench (`cargo bench -p node --bench cluster_vs_etcd`) runs beside the KMAs as three
# members on loopback (the bench starts its own members, never a system service). CI does not
# run it: benches are not part of the test command.
set -euo pipefail
exec bash "$(dirname "$0")/install-system-deps.sh" etcd-server
