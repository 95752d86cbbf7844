#!/usr/bin/env bash
# Entry point of the KMA container: brings a compose cluster up by itself, then runs the KMA.
#
# A KMA whose data dir already holds kma.toml just runs (`exec "$@"`, by default
# `kma run --data-dir /data`), whatever its role: restarts never re-initialise or re-join.
# On a first start (SPEC C4: a KMA joins with a one-time passphrase once the quorum approves):
#   KMS_ROLE=init  write $KMS_SECRETS_FILE (random passphrases of the Security Officer and of the
#                  quorum, mode 0600) if absent, `kma init` with it, copy the CA and the secrets file
#                  to $KMS_EXPORT for host-side tools, then run. In the background, once the KMA
#                  knows a leader, take the names in $KMS_JOINERS one at a time: wait for the
#                  joiner to announce its site ($KMS_SHARED/sites/<name>), write a random one-time
#                  passphrase to $KMS_SHARED/passphrases/<name>, `kma admit` it (entry plus quorum
#                  approval), mark $KMS_SHARED/admitted/<name>; once it has joined
#                  ($KMS_SHARED/joined/<name>), `kma unlock --autonomous` it (a joined KMA starts
#                  locked) and mark $KMS_SHARED/unlocked/<name>. Only then the next joiner: a
#                  KMA's node ID is decided when its entry is created, so joins must not overlap.
#   KMS_ROLE=join  announce the site, wait until admitted, run `kma join --passphrase-file`
#                  (which waits for the approval, then serves) until it reports the join, stop it,
#                  mark $KMS_SHARED/joined/<name>, then run. A failed join exits non-zero (the
#                  restart policy starts it again and it tries again with the same passphrase).
#   KMS_ROLE=run   (default) just run.
# The secrets file in the first KMA's volume is a development convenience: one container plays
# every quorum member. A real quorum keeps its passphrases to itself (docs/docker.md).
# Settings: KMS_NAME, KMS_SITE, KMS_ADVERTISE (host:port other KMAs use), KMS_MANAGEMENT
# (default 0.0.0.0:7001), KMS_SERVICE (default 0.0.0.0:7101), KMS_KMIP (default 0.0.0.0:5696, the
# KMIP port for tape libraries; written into kma.toml when the KMA is created), KMS_PEER (joiners: the first KMA's
# management address), KMS_SHARED (default /shared, a volume all KMAs mount), KMS_SECRETS_FILE
# (default $KMS_DATA_DIR/secrets.toml), KMS_EXPORT (default /export), KMS_EXPORT_UID /
# KMS_EXPORT_GID (owner of the exported files).
set -euo pipefail

data="${KMS_DATA_DIR:-/data}"
shared="${KMS_SHARED:-/shared}"
secrets="${KMS_SECRETS_FILE:-$data/secrets.toml}"
name="${KMS_NAME:-kma}"
management="${KMS_MANAGEMENT:-0.0.0.0:7001}"
service="${KMS_SERVICE:-0.0.0.0:7101}"
kmip="${KMS_KMIP:-0.0.0.0:5696}"
advertise="${KMS_ADVERTISE:-$name:${management##*:}}"
local_peer="127.0.0.1:${management##*:}"

say() { echo "entrypoint[$name]: $*" >&2; }

if [ $# -eq 0 ]; then
  set -- kma run --data-dir "$data"
fi

where=(--data-dir "$data" --name "$name" --site "${KMS_SITE:-}" --management "$management"
  --advertise "$advertise" --service "$service" --kmip "$kmip")

# 32 hex digits from /dev/urandom (128 bits).
random_passphrase() {
  od -An -tx1 -N16 /dev/urandom | tr -d ' \n'
}

# Writes $2 to the file $1 atomically (temporary file, then rename), readable by its owner only.
write_private() {
  local tmp
  tmp="$(dirname "$1")/.$(basename "$1").tmp"
  (umask 077 && printf '%s\n' "$2" >"$tmp")
  mv -f "$tmp" "$1"
}

# The quickstart secrets of `kma init`, `kma admit` and `kma unlock`, made once.
write_secrets() {
  [ -f "$secrets" ] && return 0
  mkdir -p "$(dirname "$secrets")"
  write_private "$secrets" "# Written by the KMA container entry point: development only.
security_officer = \"admin\"
security_officer_passphrase = \"$(random_passphrase)\"
quorum_threshold = 1
autonomous_unlock = true

[[quorum]]
id = \"q1\"
passphrase = \"$(random_passphrase)\""
  say "quickstart secrets written to $secrets"
}

# Copies the CA and the quickstart secrets file out of the data dir, readable by the host user
# who runs the tests (the data dir itself stays in a Docker volume). Host-side tools log in as
# the Security Officer with its passphrase, a session recorded in the state like anyone's:
# `kma init` writes no administrator certificate (issue #16 point 9). Development only, like
# the secrets file itself.
export_access() {
  local export="${KMS_EXPORT:-/export}" owner
  [ -d "$export" ] || return 0
  owner="${KMS_EXPORT_UID:-0}:${KMS_EXPORT_GID:-${KMS_EXPORT_UID:-0}}"
  mkdir -p "$export/tls"
  cp "$data/tls/ca.pem" "$export/tls/.ca.pem.tmp"
  chown "$owner" "$export/tls/.ca.pem.tmp"
  mv -f "$export/tls/.ca.pem.tmp" "$export/tls/ca.pem"
  install -m 0600 "$secrets" "$export/.secrets.toml.tmp"
  chown "$owner" "$export/.secrets.toml.tmp"
  mv -f "$export/.secrets.toml.tmp" "$export/secrets.toml"
  say "CA and quickstart secrets copied to $export"
}

leader_known() {
  kma status --data-dir "$data" --peer "$local_peer" 2>/dev/null \
    | grep -q '"leader_id": [0-9]'
}

# Waits, one second at a time, until the file $1 exists; gives up after $2 seconds saying $3.
wait_for_file() {
  local waited=0
  until [ -e "$1" ]; do
    waited=$((waited + 1))
    [ "$waited" -lt "$2" ] || { say "$3"; return 1; }
    if [ $((waited % 60)) -eq 0 ]; then say "still waiting for $1 (${waited}s)"; fi
    sleep 1
  done
}

# Creates the joiner's entry with a one-time passphrase and has the quorum approve its join.
# The passphrase file is written before `kma admit`, so that a rerun (after a restart of this
# container) admits with the same passphrase. Retried: the cluster accepts it only once the
# quickstart (Security Officer, quorum) is committed.
admit() {
  local joiner="$1" site tries=0
  [ -e "$shared/admitted/$joiner" ] && return 0
  wait_for_file "$shared/sites/$joiner" 3600 "$joiner did not announce its site in an hour" \
    || return 1
  site="$(cat "$shared/sites/$joiner")"
  if [ ! -e "$shared/passphrases/$joiner" ]; then
    write_private "$shared/passphrases/$joiner" "$(random_passphrase)"
  fi
  until kma admit --data-dir "$data" --secrets-file "$secrets" --peer "$local_peer" \
      --name "$joiner" --site "$site" --passphrase-file "$shared/passphrases/$joiner"; do
    tries=$((tries + 1))
    [ "$tries" -lt 300 ] || { say "kma admit $joiner kept failing; giving up"; return 1; }
    sleep 2
  done
  touch "$shared/admitted/$joiner"
  say "$joiner admitted; its one-time passphrase is in $shared/passphrases/$joiner"
}

# Has the quorum unlock a joined KMA and let it unlock itself after restarts. `kma unlock`
# retries for a minute until the KMA is a member; this retries that a few times.
unlock() {
  local joiner="$1" tries=0
  until kma unlock --data-dir "$data" --secrets-file "$secrets" --peer "$local_peer" \
      --name "$joiner" --autonomous; do
    tries=$((tries + 1))
    [ "$tries" -lt 10 ] || { say "kma unlock $joiner kept failing; giving up"; return 1; }
    sleep 5
  done
  touch "$shared/unlocked/$joiner"
}

# Runs in the background of the first KMA: admits, awaits and unlocks each joiner, in order.
# Bounded: gives up after an hour per step (then an operator runs `kma admit` / `kma unlock`).
admit_joiners() {
  local joiner tries=0
  mkdir -p "$shared/sites" "$shared/passphrases" "$shared/admitted" "$shared/joined" \
    "$shared/unlocked"
  until leader_known; do
    tries=$((tries + 1))
    [ "$tries" -lt 600 ] || { say "no leader after 10 minutes; admitting no KMA"; return 1; }
    sleep 1
  done
  for joiner in ${KMS_JOINERS:-}; do
    [ -e "$shared/unlocked/$joiner" ] && continue
    admit "$joiner" || return 1
    wait_for_file "$shared/joined/$joiner" 3600 "$joiner has not joined after an hour" \
      || return 1
    unlock "$joiner" || return 1
    say "$joiner joined and unlocked"
  done
  say "every KMA in '${KMS_JOINERS:-}' has joined and is unlocked"
}

first_kma() {
  if [ ! -f "$data/kma.toml" ]; then
    say "first start: creating a new cluster"
    write_secrets
    kma init "${where[@]}" --secrets-file "$secrets" | tee /tmp/kma-init.log
    # Joiners pin the CA by the fingerprint init printed (kma join --ca-fingerprint).
    mkdir -p "$shared"
    write_private "$shared/ca-fingerprint" \
      "$(sed -n 's/^CA fingerprint (for kma join --ca-fingerprint): //p' /tmp/kma-init.log)"
  fi
  export_access
  if [ -n "${KMS_JOINERS:-}" ]; then
    admit_joiners &
  fi
  exec "$@"
}

# Runs `kma join` (which waits for the quorum's approval, joins, then serves) until it reports
# the join, then stops it so that the KMA proper runs as this container's main process.
join_once() {
  local log=/tmp/kma-join.log pid
  say "joining through ${KMS_PEER:?KMS_PEER must be set}"
  : >"$log"
  kma join "${where[@]}" --peer "$KMS_PEER" --passphrase-file "$shared/passphrases/$name" \
    --ca-fingerprint "$(cat "$shared/ca-fingerprint")" > >(tee -a "$log") 2>&1 &
  pid=$!
  until grep -q 'joined as node' "$log"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" || true
      say "kma join failed; exiting so that the container is started again"
      exit 1
    fi
    sleep 0.5
  done
  kill -TERM "$pid"
  wait "$pid" || true
  touch "$shared/joined/$name"
}

joiner() {
  mkdir -p "$shared/sites" "$shared/joined"
  if [ -f "$data/kma.toml" ]; then
    touch "$shared/joined/$name"
    exec "$@"
  fi
  printf '%s\n' "$KMS_SITE" >"$shared/sites/.$name.tmp"
  mv -f "$shared/sites/.$name.tmp" "$shared/sites/$name"
  # Bounded: exit after an hour; the restart policy starts the wait again.
  say "waiting to be admitted ($shared/admitted/$name) with a passphrase in $shared/passphrases"
  wait_for_file "$shared/admitted/$name" 3600 "not admitted after an hour" || exit 1
  join_once
  say "joined; starting the KMA (locked until the quorum unlocks it)"
  exec "$@"
}

if [ "${KMS_ROLE:-run}" != run ] && [ -z "${KMS_SITE:-}" ]; then
  say "KMS_SITE must be set for KMS_ROLE=${KMS_ROLE}"
  exit 2
fi
case "${KMS_ROLE:-run}" in
  init) first_kma "$@" ;;
  join) joiner "$@" ;;
  run) exec "$@" ;;
  *) say "unknown KMS_ROLE '$KMS_ROLE' (init, join or run)"; exit 2 ;;
esac
