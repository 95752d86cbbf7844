#!/usr/bin/env bash
# The project's test command (README, .ci/run): installs the system packages the build needs,
# then runs every test of the workspace in the one release profile, then PyKMIP's scenario
# against a cluster of the binaries those tests built.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system-deps.sh
cargo test --release --workspace
# An independent KMIP client (PyKMIP) against a real cluster built by the line above (issue 19).
bash scripts/kmip-interop.sh
