#!/usr/bin/env bash
# A private PostgreSQL server for the tests and the demo, in a directory of our own: the system's
# default cluster (and the postgresql service) is never used, and nothing needs /var/run/postgresql.
#
#   scripts/postgres.sh install          install PostgreSQL with apt-get unless already there
#   scripts/postgres.sh start DIR [PORT] start (initdb first if DIR has no cluster); prints the URL
#   scripts/postgres.sh stop DIR         fast shutdown; nothing to do if not running or DIR missing
#   scripts/postgres.sh url DIR          print the URL of the server running in DIR
#
# The URL is postgres://postgres@127.0.0.1:PORT/sagaflow (trust authentication, loopback only);
# start creates the sagaflow database. DIR holds the cluster, its Unix sockets, log and port.
# Without PORT, start reuses DIR's last port when it is free, so URLs survive a restart.
# As root the server runs as the postgres user, which must be able to reach DIR's parent.
# With SAGAFLOW_POSTGRES_OWNER=PID, start also stops the server and removes DIR once that process
# is gone: a test killed mid-run leaves no server behind (pg_ctl detaches it from the test).
set -euo pipefail

me=postgres.sh
self=$(realpath "${BASH_SOURCE[0]}")  # before the cd / below
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Debian keeps initdb and pg_ctl off PATH, one directory per major version: take the highest.
bindir() {
  local d
  for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r) \
      "$(dirname "$(readlink -f "$(command -v pg_ctl 2>/dev/null || echo /nonexistent)")")"; do
    if [ -x "$d/pg_ctl" ] && [ -x "$d/initdb" ] && [ -x "$d/postgres" ] && [ -x "$d/psql" ]; then
      echo "$d"; return 0
    fi
  done
  return 1
}

install() {
  bindir >/dev/null && return 0
  command -v apt-get >/dev/null 2>&1 || {
    echo "$me: PostgreSQL (initdb, pg_ctl, postgres, psql) is missing and there is no apt-get; install it" >&2
    exit 1
  }
  local sudo=
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
      echo "$me: PostgreSQL is missing; installing it needs root or sudo (apt-get install postgresql)" >&2
      exit 1
    }
    sudo=sudo
  fi
  # apt and dpkg chatter even with -qq: show it only when the install fails.
  local out
  if ! out=$($sudo apt-get update -qq 2>&1 &&
      $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql 2>&1 </dev/null); then
    printf '%s\n' "$out" >&2
    echo "$me: apt-get install postgresql failed (output above)" >&2
    exit 1
  fi
  bindir >/dev/null || { echo "$me: PostgreSQL installed, but no initdb/pg_ctl under /usr/lib/postgresql/*/bin" >&2; exit 1; }
}

# initdb and pg_ctl refuse to run as root.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# running, zombie or gone: the state of the postmaster named in $1/postmaster.pid. A killed
# postmaster stays a zombie until init reaps it (a second here), and meanwhile postgres takes it
# for a live server that still holds DIR.
postmaster_state() {
  local pid; pid=$(head -1 "$1/postmaster.pid" 2>/dev/null || true)
  if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then echo gone
  elif [ "$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -c1)" = Z ]; then echo zombie
  else echo running
  fi
}

running() { [ "$(postmaster_state "$1")" = running ]; }

# Line 4 of postmaster.pid is the port the server listens on.
running_port() { sed -n 4p "$1/postmaster.pid"; }

url() { echo "postgres://postgres@127.0.0.1:$1/sagaflow"; }

ensure_db() {
  local psql=("$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$1" -U postgres -d postgres)
  if [ "$("${psql[@]}" -tAc "select 1 from pg_database where datname = 'sagaflow'")" != 1 ]; then
    "${psql[@]}" -c 'create database sagaflow' >/dev/null ||
      { echo "$me: cannot create database sagaflow on port $1" >&2; exit 1; }
  fi
}

start() {
  local dir=$1 port=${2:-}
  if [ -n "$port" ] && ! [[ "$port" =~ ^[0-9]+$ && "$port" -ge 1 && "$port" -le 65535 ]]; then
    echo "$me: PORT must be a number from 1 to 65535, got '$port'" >&2; exit 2
  fi
  install
  BIN=$(bindir)
  local parent; parent=$(dirname "$dir")
  mkdir -p "$parent"
  if [ "$(id -u)" -eq 0 ]; then
    id -u postgres >/dev/null 2>&1 || { echo "$me: there is no postgres user to run the server as (reinstall postgresql)" >&2; exit 1; }
    # The server runs as postgres, so every directory above DIR must be searchable by it.
    if ! runuser -u postgres -- test -x "$parent"; then
      local p=$parent blocked=$parent
      while [ "$p" != / ]; do runuser -u postgres -- test -x "$p" || blocked=$p; p=$(dirname "$p"); done
      echo "$me: the postgres user cannot reach $dir: $blocked is not searchable by it ($(stat -c '%A %U' "$blocked"))." >&2
      echo "$me: use a DIR under /tmp, or allow it with: chmod o+x $blocked" >&2
      exit 1
    fi
    mkdir -p "$dir"
    # Only an empty DIR (new, or from mktemp) changes owner: never someone's existing directory.
    [ -n "$(ls -A "$dir")" ] || chown postgres: "$dir"
  else
    mkdir -p "$dir"
  fi
  # One start at a time per DIR: a parallel one waits, then finds the server running. The lock is
  # on DIR itself because initdb wants DIR empty; the server must not inherit it (9<&- below).
  exec 9<"$dir"
  flock -w 120 9 || { echo "$me: another start in $dir holds its lock for over 2 minutes" >&2; exit 1; }

  if running "$dir"; then
    local p; p=$(running_port "$dir")
    [ -z "$port" ] || [ "$port" = "$p" ] ||
      echo "$me: already running in $dir on port $p, not $port (stop it first to change ports)" >&2
    ensure_db "$p"
    url "$p"
    return 0
  fi

  if [ ! -f "$dir/PG_VERSION" ]; then
    local out
    # -N (no fsync of the new files) for speed: this cluster is for tests and the demo.
    if ! out=$(as_pg "$BIN/initdb" -D "$dir" -A trust -U postgres --encoding UTF8 --locale C -N 2>&1); then
      printf '%s\n' "$out" >&2
      echo "$me: initdb of $dir failed (output above); DIR must be empty or hold a cluster" >&2
      exit 1
    fi
  fi

  # After a kill -9, wait until init reaps the old postmaster (see postmaster_state).
  for _ in $(seq 1 100); do [ "$(postmaster_state "$dir")" = zombie ] || break; sleep 0.1; done
  [ -n "$port" ] || port=$(free_port "$(cat "$dir/port" 2>/dev/null || true)")
  # fsync, full_page_writes and synchronous_commit off: fast, and only safe for throwaway data
  # (tests and the demo); a machine crash can corrupt the cluster, a server crash cannot lose
  # more than the last few commits. Sockets in DIR, so /var/run/postgresql is not needed.
  if ! as_pg "$BIN/pg_ctl" -w -t 60 -D "$dir" -l "$dir/log" -o "-p $port -k '$dir' \
      -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c synchronous_commit=off" \
      start >/dev/null 2>&1 9<&- </dev/null; then
    echo "$me: postgres did not start in $dir on port $port; last lines of $dir/log:" >&2
    tail -15 "$dir/log" >&2 || true
    exit 1
  fi
  as_pg tee "$dir/port" <<<"$port" >/dev/null
  # 9<&-: the watch outlives this script, and must not hold DIR's start lock.
  if [ -n "${SAGAFLOW_POSTGRES_OWNER:-}" ]; then
    watch_owner "$self" "$dir" postmaster.pid "$SAGAFLOW_POSTGRES_OWNER" 9<&-
  fi
  ensure_db "$port"
  url "$port"
}

stop() {
  local dir=$1
  running "$dir" || return 0
  BIN=$(bindir)
  as_pg "$BIN/pg_ctl" -D "$dir" -m fast -w -t 60 stop >/dev/null ||
    { echo "$me: pg_ctl stop failed for $dir (see $dir/log)" >&2; exit 1; }
}

print_url() {
  local dir=$1
  if ! running "$dir"; then
    echo "$me: no postgres running in $dir; start it with: $0 start $dir" >&2; exit 1
  fi
  url "$(running_port "$dir")"
}

usage="usage: $0 install | start DIR [PORT] | stop DIR | url DIR"
# Absolute DIR, then cd /: the postgres user may not be able to enter the caller's directory.
abs() { realpath -m -- "$1"; }
case "${1:-}" in
  install) [ $# -eq 1 ] || { echo "$usage" >&2; exit 2; }; install ;;
  start) [ $# -eq 2 ] || [ $# -eq 3 ] || { echo "usage: $0 start DIR [PORT]" >&2; exit 2; }
    d=$(abs "$2"); cd /; start "$d" "${3:-}" ;;
  stop) [ $# -eq 2 ] || { echo "usage: $0 stop DIR" >&2; exit 2; }; d=$(abs "$2"); cd /; stop "$d" ;;
  url) [ $# -eq 2 ] || { echo "usage: $0 url DIR" >&2; exit 2; }; d=$(abs "$2"); cd /; print_url "$d" ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
