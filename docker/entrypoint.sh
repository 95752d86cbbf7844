#!/usr/bin/env bash
# Entry point of the KMA container: brings a compose cluster up by itself, then runs the KMA.
#
# A KMA whose data dir already holds kma.toml just runs (`exec "$@"`, by default
# `kma run --data-dir /data`), whatever its role: restarts never re-initialise or re-join.
# On a first start:
#   KMS_ROLE=init  `kma init` (new cluster, CA, admin certificate), copy the admin certificate to
#                  $KMS_EXPORT for host-side tools, then run; in the background, once the KMA
#                  knows a leader, write one join token per name in $KMS_JOINERS to
#                  $KMS_SHARED/tokens/<name>, one at a time: the next only after the previous
#                  KMA has joined (a KMA's node ID is decided when it is admitted, so joins must
#                  not overlap).
#   KMS_ROLE=join  wait for $KMS_SHARED/tokens/$KMS_NAME, claim it (rename to .claimed), run
#                  `kma join` until it reports the join, stop it, mark $KMS_SHARED/joined/<name>,
#                  then run. A failed join exits non-zero (the restart policy starts it again);
#                  the next start drops the claimed token, which the first KMA may have used up,
#                  and the first KMA writes a fresh one.
#   KMS_ROLE=run   (default) just run.
# Settings: KMS_NAME, KMS_SITE, KMS_ADVERTISE (host:port other KMAs use), KMS_MANAGEMENT
# (default 0.0.0.0:7001), KMS_SERVICE (default 0.0.0.0:7101), KMS_PEER (joiners: the first KMA's
# management address), KMS_SHARED (default /shared, a volume all KMAs mount), KMS_EXPORT
# (default /export), KMS_EXPORT_UID / KMS_EXPORT_GID (owner of the exported files).
set -euo pipefail

data="${KMS_DATA_DIR:-/data}"
shared="${KMS_SHARED:-/shared}"
name="${KMS_NAME:-kma}"
management="${KMS_MANAGEMENT:-0.0.0.0:7001}"
service="${KMS_SERVICE:-0.0.0.0:7101}"
advertise="${KMS_ADVERTISE:-$name:${management##*:}}"

say() { echo "entrypoint[$name]: $*" >&2; }

if [ $# -eq 0 ]; then
  set -- kma run --data-dir "$data"
fi

where=(--data-dir "$data" --name "$name" --site "${KMS_SITE:-}" --management "$management"
  --advertise "$advertise" --service "$service")

# Copies the admin client certificate, its key and the CA out of the data dir, readable by the
# host user who runs the tests (the data dir itself stays in a Docker volume).
export_admin() {
  local export="${KMS_EXPORT:-/export}" file
  [ -d "$export" ] || return 0
  mkdir -p "$export/tls"
  for file in admin-key.pem admin.pem ca.pem; do
    cp "$data/tls/$file" "$export/tls/.$file.tmp"
    chown "${KMS_EXPORT_UID:-0}:${KMS_EXPORT_GID:-${KMS_EXPORT_UID:-0}}" "$export/tls/.$file.tmp"
    mv -f "$export/tls/.$file.tmp" "$export/tls/$file"
  done
  chmod 0600 "$export/tls/admin-key.pem"
  say "admin certificate copied to $export/tls"
}

leader_known() {
  kma status --data-dir "$data" --peer "127.0.0.1:${management##*:}" 2>/dev/null \
    | grep -q '"leader_id": [0-9]'
}

# Runs in the background of the first KMA: one join token per joiner, in order. Bounded: gives up
# after an hour (a joiner still missing then needs an operator: `kma token`).
mint_tokens() {
  local joiner token tries=0
  mkdir -p "$shared/tokens" "$shared/joined"
  until leader_known; do
    tries=$((tries + 1))
    [ "$tries" -lt 600 ] || { say "no leader after 10 minutes; writing no join tokens"; return 1; }
    sleep 1
  done
  for joiner in ${KMS_JOINERS:-}; do
    tries=0
    until [ -e "$shared/joined/$joiner" ]; do
      if [ ! -e "$shared/tokens/$joiner" ] && [ ! -e "$shared/tokens/$joiner.claimed" ]; then
        token="$(kma token --data-dir "$data" | tail -n 1)"
        printf '%s\n' "$token" >"$shared/tokens/.$joiner.tmp"
        mv -f "$shared/tokens/.$joiner.tmp" "$shared/tokens/$joiner"
        say "join token for $joiner written to $shared/tokens/$joiner"
      fi
      tries=$((tries + 1))
      [ "$tries" -lt 3600 ] || { say "$joiner has not joined after an hour; giving up"; return 1; }
      sleep 1
    done
  done
  say "every KMA in '${KMS_JOINERS:-}' has joined"
}

first_kma() {
  if [ ! -f "$data/kma.toml" ]; then
    say "first start: creating a new cluster"
    kma init "${where[@]}"
  fi
  export_admin
  if [ -n "${KMS_JOINERS:-}" ]; then
    mint_tokens &
  fi
  exec "$@"
}

# Runs `kma join` (which joins, then serves) until it reports the join, then stops it so that the
# KMA proper runs as this container's main process.
join_once() {
  local token log=/tmp/kma-join.log pid
  token="$(cat "$shared/tokens/$name.claimed")"
  say "joining through ${KMS_PEER:?KMS_PEER must be set}"
  : >"$log"
  kma join "${where[@]}" --peer "$KMS_PEER" --token "$token" > >(tee -a "$log") 2>&1 &
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
  local waited=0
  mkdir -p "$shared/tokens" "$shared/joined"
  if [ -f "$data/kma.toml" ]; then
    touch "$shared/joined/$name"
    exec "$@"
  fi
  # A claimed token here belongs to an attempt that died: the first KMA may have used it up.
  rm -f "$shared/tokens/$name.claimed"
  say "waiting for a join token in $shared/tokens/$name"
  until [ -e "$shared/tokens/$name" ]; do
    waited=$((waited + 1))
    if [ $((waited % 30)) -eq 0 ]; then say "still waiting for a join token (${waited}s)"; fi
    # Bounded: exit after an hour; the restart policy starts the wait again.
    [ "$waited" -lt 3600 ] || { say "no join token after an hour"; exit 1; }
    sleep 1
  done
  mv -f "$shared/tokens/$name" "$shared/tokens/$name.claimed"
  join_once
  say "joined; starting the KMA"
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
