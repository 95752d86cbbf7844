#!/usr/bin/env bash
# The project's test command (README, .ci/run): installs the system packages the build needs,
# then runs every test of the workspace in the one release profile.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system-deps.sh
cargo test --release --workspace
