#!/usr/bin/env bash
# Builds the `kma` binary of an older commit into a cache and prints its path (the rolling
# upgrade test, chaos-tests/tests/compose_upgrade.rs, runs a cluster on it first):
#   bash scripts/build-kma-at.sh 160ce5d        # prints <cache>/kma-<full sha>
# The commit's tree is exported (`git archive`) to a temporary directory, removed on exit, and
# built there with `cargo build --release --workspace --bins` into its own target dir, never the
# main one: the main target's release/kma is what the tests put in the current image. Later
# builds of other commits reuse that target dir's dependencies (RocksDB is compiled once). Does
# nothing when the binary of that commit is in the cache already. Progress goes to stderr; only
# the path goes to stdout.
#   KMS_OLD_TARGET_DIR  the cache and target dir      (default <main target dir>/../target-old)
#   CARGO_TARGET_DIR    the main target dir            (default <repo>/target)
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

say() { echo "build-kma-at: $*" >&2; }
fail() {
  say "error: $1"
  [ -z "${2:-}" ] || say "help: $2"
  exit 1
}

[ $# -eq 1 ] && [ -n "$1" ] || fail "one argument expected: the commit to build" \
  "bash scripts/build-kma-at.sh 160ce5d"
commit="$1"
sha="$(git rev-parse --verify --quiet "$commit^{commit}")" \
  || fail "'$commit' is not a commit of this repository" \
    "name one that \`git log --oneline\` lists (fetch it first if it is not here)"

main_target="${CARGO_TARGET_DIR:-$repo/target}"
case "$main_target" in /*) ;; *) main_target="$repo/$main_target" ;; esac
cache="${KMS_OLD_TARGET_DIR:-$(dirname "$main_target")/target-old}"
case "$cache" in /*) ;; *) cache="$repo/$cache" ;; esac
if [ "$(realpath -m "$cache")" = "$(realpath -m "$main_target")" ]; then
  fail "KMS_OLD_TARGET_DIR is the main target dir ($main_target): its release/kma would be replaced" \
    "point KMS_OLD_TARGET_DIR at another directory, or leave it unset ($(dirname "$main_target")/target-old)"
fi
binary="$cache/kma-$sha"

if [ -x "$binary" ]; then
  say "kma of $sha is in the cache already"
  echo "$binary"
  exit 0
fi

source_dir="$(mktemp -d "${TMPDIR:-/tmp}/kma-at-${sha:0:12}.XXXXXX")"
trap 'rm -rf "$source_dir"' EXIT
say "exporting $sha to $source_dir"
git archive --format=tar "$sha" | tar -x -C "$source_dir"
say "building kma of $sha in $cache (a cold build compiles RocksDB: about 20 minutes on two cores)"
mkdir -p "$cache"
if ! (cd "$source_dir" && CARGO_TARGET_DIR="$cache" cargo build --release --workspace --bins >&2)
then
  fail "the build of $sha failed (see cargo's messages above)" \
    "check that this commit builds: its Cargo.lock, toolchain and system packages (bash scripts/install-system-deps.sh)"
fi
[ -x "$cache/release/kma" ] \
  || fail "the build of $sha made no $cache/release/kma" "is the KMA binary called kma at $sha?"
cp "$cache/release/kma" "$binary.tmp"
mv -f "$binary.tmp" "$binary"
say "built $binary"
echo "$binary"
