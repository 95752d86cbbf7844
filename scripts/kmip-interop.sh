#!/usr/bin/env bash
# PyKMIP 0.11.0, an independent KMIP client, against a real two-KMA cluster at KMIP 1.2, 1.4 and
# 2.0 (issue 19, SPEC U5): one "PASS KMIP <version>" line per version, or the failing step and
# exit 1. Run by the test command after `cargo test`, which built kma, kmsctl and drive-sim.
#
# What it sets up, as an operator would: a policy that allows import and its group `tapes`; a
# KMIP client `library1` in it (enrolled from its certificate request, granted the right to
# revoke and destroy); `stranger` in another group; a drive that writes a tape in `tapes`, whose
# key library1 then reads over KMIP.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${CARGO_TARGET_DIR:-$PWD/target}/release"
for binary in kma kmsctl drive-sim; do
  [ -x "$bin/$binary" ] || { echo "kmip-interop: $bin/$binary is missing: run cargo test --release --workspace first" >&2; exit 1; }
done
work=$(mktemp -d /tmp/kmip-interop.XXXXXX)
cluster_pid=
cleanup() {
  [ -n "$cluster_pid" ] && kill "$cluster_pid" 2>/dev/null && wait "$cluster_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

echo "kmip-interop: PyKMIP 0.11.0 into a virtual environment"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check pykmip==0.11.0

echo "kmip-interop: a two-KMA cluster under $work (pool keys are Ready once replicated)"
"$bin/kma" local --dir "$work/cluster" --nodes 2 --base-port 0 > "$work/cluster.log" 2>&1 &
cluster_pid=$!
for _ in $(seq 1 120); do
  grep -q "is up" "$work/cluster.log" 2>/dev/null && break
  kill -0 "$cluster_pid" 2>/dev/null || { cat "$work/cluster.log" >&2; exit 1; }
  sleep 1
done
grep -q "is up" "$work/cluster.log" || { echo "kmip-interop: the cluster did not come up" >&2; cat "$work/cluster.log" >&2; exit 1; }
kma1="$work/cluster/kma1"
management=$(sed -n 's/^management = "\(.*\)"/\1/p' "$kma1/listening.toml")
service=$(sed -n 's/^service = "\(.*\)"/\1/p' "$kma1/listening.toml")
kmip=$(sed -n 's/^kmip = "\(.*\)"/\1/p' "$kma1/listening.toml")
ca="$kma1/tls/ca.pem"
officer=$(sed -n 's/^security_officer_passphrase = "\(.*\)"/\1/p' "$work/cluster/secrets.toml")
export KMSCTL_HOME="$work/kmsctl"
kmsctl() { "$bin/kmsctl" "$@"; }
echo "$officer" | kmsctl login --address "$management" --ca "$ca" --user admin --passphrase-stdin > /dev/null
kmsctl user roles admin --role security-officer --role compliance-officer --role operator > /dev/null

kmsctl policy create tapes --encryption-period 30d --cryptoperiod 1y --allow-import > /dev/null
kmsctl group create tapes --policy tapes > /dev/null
kmsctl group create other --policy tapes > /dev/null
enroll() {
  local id=$1 group=$2
  echo "unused by KMIP $id" | kmsctl agent create "$id" --site east --passphrase-stdin > /dev/null
  kmsctl agent add-group "$id" "$group" > /dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$id" \
    -keyout "$work/$id.key" -out "$work/$id.csr" 2> /dev/null
  kmsctl agent enroll-kmip "$id" --csr "$work/$id.csr" --out "$work/$id.pem" > /dev/null
}
enroll library1 tapes
enroll stranger other
kmsctl agent kmip-rights library1 --revoke-destroy on > /dev/null

echo "drive1 passphrase" > "$work/drive1.passphrase"
echo "drive1 passphrase" | kmsctl agent create drive1 --site east --passphrase-stdin > /dev/null
kmsctl agent add-group drive1 tapes > /dev/null
"$bin/drive-sim" --kma "$service" --ca "$ca" --agent drive1 --passphrase-file "$work/drive1.passphrase" \
  --cert "$work/drive1.pem" --key "$work/drive1.key" --drives 1 --tapes-per-drive 1 --ops 2 \
  --tape-dir "$work/tapes" --quiet > /dev/null
drive_key=$(kmsctl --json key list --group tapes | "$work/venv/bin/python" -c \
  'import json, sys; print(json.load(sys.stdin)[0]["id"])')

# The port's TLS 1.2 exception (docs/kmip.md): ECDHE with AES-GCM is taken, anything else not.
tls12() {
  echo | openssl s_client -connect "$kmip" -tls1_2 -CAfile "$ca" -cert "$work/library1.pem" \
    -key "$work/library1.key" -brief "$@" 2>&1 || true
}
session=$(tls12)
if echo "$session" | grep -q "Protocol version: TLSv1.2" && echo "$session" | grep -q "Ciphersuite: ECDHE-ECDSA-AES.*-GCM"; then
  echo "PASS TLS 1.2: $(echo "$session" | sed -n 's/^Ciphersuite: //p')"
else
  echo "FAIL TLS 1.2: no ECDHE-AES-GCM session: $session" >&2; exit 1
fi
if tls12 -cipher ECDHE-ECDSA-CHACHA20-POLY1305 | grep -q "Protocol version: TLSv1.2"; then
  echo "FAIL TLS 1.2: ChaCha20 was accepted" >&2; exit 1
fi
echo "PASS TLS 1.2: ChaCha20 (not AES-GCM) refused"

echo "kmip-interop: PyKMIP against $kmip"
"$work/venv/bin/python" scripts/kmip_interop.py "${kmip%:*}" "${kmip##*:}" "$ca" \
  "$work/library1.pem" "$work/library1.key" "$work/stranger.pem" "$work/stranger.key" "$drive_key"
