#!/usr/bin/env bash
# The rolling upgrade test (SPEC C7, issue 20 point 4; chaos-tests/tests/compose_upgrade.rs), out
# of CI's test command because it needs a second build: the `kma` of an older commit.
#   bash scripts/upgrade-test.sh            # from 160ce5d, where issue 20 started
#   bash scripts/upgrade-test.sh COMMIT     # from another commit
# Builds the current binaries, then the old one (scripts/build-kma-at.sh: its own target dir,
# cached by commit; a cold build of about 20 minutes on two cores, then instant), then runs the
# test, which moves a three-KMA compose cluster from the old binary to the current one under
# load, rolling one KMA back on the way. Needs Docker Engine and docker-compose, like the other
# compose tests. CARGO_TARGET_DIR and KMS_OLD_TARGET_DIR are honoured (see build-kma-at.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

old_commit="${1:-160ce5d}"
say() { echo "upgrade-test: $*" >&2; }

say "building the current binaries"
cargo build --release --workspace --bins
say "building the kma of $old_commit"
old_kma="$(bash scripts/build-kma-at.sh "$old_commit")"
say "running the upgrade test from $old_kma"
KMS_OLD_KMA="$old_kma" cargo test --release --workspace --test compose_upgrade -- \
  --ignored --nocapture
