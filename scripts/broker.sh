#!/usr/bin/env bash
# Local Kafka-protocol broker (tansu) for the demo, the tests and CI: one path for all three.
#
#   scripts/broker.sh install                    install tansu unless it is already there
#   scripts/broker.sh start DIR [sqlite|memory]  start on a free loopback port; prints host:port
#   scripts/broker.sh stop DIR                   stop the broker started in DIR
#
# DIR holds broker.pid, broker.log, bootstrap and (sqlite) tansu.db. Starting again in a DIR that
# has a bootstrap file reuses its port, so clients reconnect after a broker restart.
# sqlite is the default: tansu 0.6's memory storage loses the rest of a batch for a consumer that
# resumes inside it (docs/operations.md), so it is only for benchmarks.
# Set TANSU to use a specific binary.
set -euo pipefail

TANSU_VERSION=0.6.0

tansu_bin() {
  if [ -n "${TANSU:-}" ]; then echo "$TANSU"; return; fi
  if command -v tansu >/dev/null 2>&1; then command -v tansu; return; fi
  echo "${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
}

install() {
  local bin; bin=$(tansu_bin)
  if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    return 0
  fi
  echo "broker.sh: installing tansu $TANSU_VERSION from crates.io (about 10 minutes, once)..." >&2
  cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql >&2
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

port_open() {
  python3 -c 'import socket,sys; s=socket.socket(); s.settimeout(0.5); sys.exit(0 if s.connect_ex(("127.0.0.1",int(sys.argv[1])))==0 else 1)' "$1"
}

# tansu 0.6's sqlite schema has no index on record headers, so fetching each record scans every
# header in the broker: fetches get slower as topics grow, until group heartbeats time out. The
# index changes no data and no behaviour; tansu's own queries use it.
index_headers() {
  python3 - "$1" <<'PY'
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], timeout=30)
for _ in range(100):
    try:
        db.execute("create index if not exists sagaflow_header_record on header (topition, offset_id)")
        db.commit()
        sys.exit(0)
    except sqlite3.OperationalError as e:  # the schema is not created yet
        last = e
        time.sleep(0.1)
sys.exit(f"broker.sh: cannot index tansu's header table: {last}")
PY
}

start() {
  local dir=$1 storage=${2:-sqlite}
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  install
  if [ -f "$dir/broker.pid" ] && kill -0 "$(cat "$dir/broker.pid")" 2>/dev/null; then
    echo "broker.sh: a broker is already running from $dir (pid $(cat "$dir/broker.pid"))" >&2
    exit 1
  fi
  local port
  if [ -f "$dir/bootstrap" ]; then port=$(cut -d: -f2 < "$dir/bootstrap"); else port=$(free_port); fi
  local url
  case "$storage" in
    memory) url="memory://tansu/" ;;
    sqlite) url="sqlite://tansu.db" ;;
    *) echo "broker.sh: storage must be memory or sqlite, got '$storage'" >&2; exit 2 ;;
  esac
  (
    cd "$dir"
    # setsid: the broker outlives this script but not an explicit stop.
    setsid "$(tansu_bin)" broker \
      --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine "$url" >>"$dir/broker.log" 2>&1 < /dev/null &
    echo $! > "$dir/broker.pid"
  )
  echo "127.0.0.1:$port" > "$dir/bootstrap"
  for _ in $(seq 1 200); do
    if port_open "$port"; then
      [ "$storage" != sqlite ] || index_headers "$dir/tansu.db"
      echo "127.0.0.1:$port"
      return 0
    fi
    if ! kill -0 "$(cat "$dir/broker.pid")" 2>/dev/null; then
      echo "broker.sh: tansu exited during start-up; last lines of $dir/broker.log:" >&2
      tail -20 "$dir/broker.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "broker.sh: tansu did not listen on port $port within 20 s (see $dir/broker.log)" >&2
  exit 1
}

stop() {
  local dir=$1
  [ -f "$dir/broker.pid" ] || return 0
  local pid; pid=$(cat "$dir/broker.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/broker.pid"
}

case "${1:-}" in
  install) install ;;
  start) [ $# -ge 2 ] || { echo "usage: $0 start DIR [sqlite|memory]" >&2; exit 2; }; start "$2" "${3:-sqlite}" ;;
  stop) [ $# -ge 2 ] || { echo "usage: $0 stop DIR" >&2; exit 2; }; stop "$2" ;;
  *) echo "usage: $0 install | start DIR [sqlite|memory] | stop DIR" >&2; exit 2 ;;
esac
