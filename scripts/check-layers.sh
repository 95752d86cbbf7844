#!/usr/bin/env bash
# The node's layers import one way only (issue #15, ARCHITECTURE.md "node in layers"):
# transport/ uses neither write/ nor listen/, and write/ does not use listen/; neither uses what
# wires the layers together and sits above them all (kma, leader, duties, view, setup).
# Fails with the offending lines. Run by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/../node/src"

bad=0
check() {
  local layer=$1 pattern=$2
  # Doc comments may name a higher layer; code may not.
  if grep -rnE "$pattern" "$layer" | grep -vE "^[^:]+:[0-9]+:\s*//" >/tmp/layer-violations.$$; then
    echo "error: node/src/$layer must not use a higher layer:" >&2
    sed 's/^/  /' /tmp/layer-violations.$$ >&2
    bad=1
  fi
  rm -f /tmp/layer-violations.$$
}
# `crate::write`, `crate::listen`, and `super::super::write`-style paths alike.
check transport '(crate|super)::(write|listen|kma|leader|duties|view|setup)\b'
check write '(crate|super)::(listen|kma|leader|duties|view|setup)\b'
if [ "$bad" -ne 0 ]; then
  echo "help: send what a higher layer needs up through a channel or a handle (see node/src/transport/mod.rs)" >&2
  exit 1
fi
echo "node layers: transport -> nothing above, write -> transport only: ok"
