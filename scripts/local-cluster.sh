#!/usr/bin/env bash
# Starts a working three-KMA cluster on this machine with embedded defaults: data and logs under
# .kms-local/, management listeners on 127.0.0.1:7001-7003. Ctrl-C stops it; running this
# again restarts the same cluster with its data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system-deps.sh
# Every binary the README names, in one cargo invocation: two invocations that select different
# packages can resolve features differently and compile RocksDB twice (issue #15).
cargo build --release -p node --bin kma -p admin-api --bin kmsctl -p agent-gateway --bin drive-sim
exec "${CARGO_TARGET_DIR:-target}/release/kma" local --dir .kms-local "$@"
