#!/usr/bin/env bash
# Local Kafka-protocol broker for the demo, the tests and CI: one path for all three. Either tansu
# (sqlite or memory storage) or Apache Kafka 4.4 (one node in KRaft mode, broker and controller).
#
#   scripts/broker.sh install [tansu|kafka|all]        install unless already there (default tansu)
#   scripts/broker.sh installed tansu                  exit 0 when tansu is installed
#   scripts/broker.sh start DIR [sqlite|memory|kafka]  start on a free loopback port; prints host:port
#   scripts/broker.sh stop DIR                         stop the broker started in DIR
#
# DIR holds broker.pid, broker.log, kind, bootstrap, and tansu.db (sqlite) or server.properties,
# controller-port and data/ (kafka). Starting again in a DIR that has a bootstrap file reuses its
# port (and kafka's controller port and data), so clients reconnect after a broker restart.
# sqlite is the default: tansu 0.6's memory storage loses the rest of a batch for a consumer that
# resumes inside it (docs/operations.md), so it is only for benchmarks.
# Set TANSU to use a specific binary.
#
# kafka: the jars of scripts/kafka/pom.xml are fetched from Maven Central with mvn, once, into
# ${SAGAFLOW_CACHE:-${XDG_CACHE_HOME:-~/.cache}/sagaflow}/kafka-4.4.0/libs; java 17+ and mvn are
# installed with apt-get when missing (set JAVA to use a specific java). The broker logs warnings
# and errors to DIR/broker.log (scripts/kafka/log4j2.properties). KAFKA_BROKER_PROPERTIES holds
# extra server.properties lines (key=value, one a line), appended so that they override. The
# broker's JVM starts quickly (C1 only, serial GC, 512 MB heap), as tests want.
# SAGAFLOW_BROKER_JVM=stock gives it the flags of Kafka's own kafka-server-start.sh instead (G1,
# the C2 compiler, a 1 GB heap), the way users run Kafka, for benchmarks (README, Performance).
# KAFKA_JVM_OPTS, when set, replaces either.
# SAGAFLOW_BROKER_OWNER=PID makes start stop the broker, and remove DIR, when process PID exits.
set -euo pipefail

TANSU_VERSION=0.6.0
KAFKA_VERSION=4.4.0
SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
me=broker.sh
# shellcheck source=scripts/lib.sh
. "$SCRIPTS/lib.sh"

tansu_bin() {
  if [ -n "${TANSU:-}" ]; then echo "$TANSU"; return; fi
  if command -v tansu >/dev/null 2>&1; then command -v tansu; return; fi
  echo "${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
}

tansu_installed() {
  local bin; bin=$(tansu_bin)
  [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "$TANSU_VERSION"
}

install_tansu() {
  tansu_installed && return 0
  echo "broker.sh: installing tansu $TANSU_VERSION from crates.io (about 10 minutes, once)..." >&2
  cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql >&2
}

kafka_home() {
  echo "${SAGAFLOW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sagaflow}/kafka-$KAFKA_VERSION"
}

install_kafka() {
  local home libs jar
  home=$(kafka_home)
  libs=$home/libs
  jar=kafka_2.13-$KAFKA_VERSION.jar
  local missing=()
  find_java || missing+=(java)
  [ -f "$libs/$jar" ] || command -v mvn >/dev/null 2>&1 || missing+=(maven)
  if [ ${#missing[@]} -gt 0 ]; then
    apt_install "${missing[@]}"
    find_java || { echo "broker.sh: the kafka broker needs java 17 or newer (set JAVA)" >&2; exit 1; }
  fi
  [ ! -f "$libs/$jar" ] || return 0
  echo "broker.sh: fetching Apache Kafka $KAFKA_VERSION from Maven Central into $libs (about 45 MB, once)..." >&2
  mkdir -p "$home"
  # Leftovers of interrupted downloads (not of one still running in parallel).
  find "$home" -maxdepth 1 -name 'libs.tmp.*' -mmin +60 -exec rm -rf {} + 2>/dev/null || true
  # A complete download only ever appears under its final name, by a rename.
  local tmp; tmp=$(mktemp -d "$home/libs.tmp.XXXXXX")
  if ! mvn -q -B -f "$SCRIPTS/kafka/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$tmp" -DincludeScope=runtime >&2 || [ ! -f "$tmp/$jar" ]; then
    rm -rf "$tmp"
    echo "broker.sh: mvn could not fetch the Kafka jars (scripts/kafka/pom.xml)" >&2
    exit 1
  fi
  if ! mv -T "$tmp" "$libs" 2>/dev/null; then
    rm -rf "$tmp"  # another install finished first
    [ -f "$libs/$jar" ] || { echo "broker.sh: cannot move the Kafka jars to $libs" >&2; exit 1; }
  fi
}

install() {
  case "${1:-tansu}" in
    tansu) install_tansu ;;
    kafka) install_kafka ;;
    all) install_tansu; install_kafka ;;
    *) echo "broker.sh: install tansu, kafka or all, not '$1'" >&2; exit 2 ;;
  esac
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
  case "$storage" in
    memory|sqlite|kafka) ;;
    *) echo "broker.sh: storage must be sqlite, memory or kafka, got '$storage'" >&2; exit 2 ;;
  esac
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ -f "$dir/broker.pid" ] && alive "$(cat "$dir/broker.pid")"; then
    echo "broker.sh: a broker is already running from $dir (pid $(cat "$dir/broker.pid"))" >&2
    exit 1
  fi
  if [ "$storage" = kafka ]; then start_kafka "$dir"; else start_tansu "$dir" "$storage"; fi
}

# Watches SAGAFLOW_BROKER_OWNER, if set, from the moment the broker's pid is known: an owner that
# is killed while the broker starts up (this script with it) still takes the broker down.
watch_from_now() {
  if [ -n "${SAGAFLOW_BROKER_OWNER:-}" ]; then watch_owner "$SCRIPTS/broker.sh" "$1" broker.pid "$SAGAFLOW_BROKER_OWNER"; fi
}

start_tansu() {
  local dir=$1 storage=$2
  install_tansu
  local port
  if [ -f "$dir/bootstrap" ]; then port=$(cut -d: -f2 < "$dir/bootstrap"); else port=$(free_ports 1); fi
  local url
  case "$storage" in
    memory) url="memory://tansu/" ;;
    sqlite) url="sqlite://tansu.db" ;;
  esac
  (
    cd "$dir"
    # setsid: the broker outlives this script but not an explicit stop. RUST_LOG is the caller's
    # log level, not tansu's: at info tansu writes gigabytes of log within minutes.
    RUST_LOG=warn setsid "$(tansu_bin)" broker \
      --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine "$url" >>"$dir/broker.log" 2>&1 < /dev/null &
    echo $! > "$dir/broker.pid"
  )
  watch_from_now "$dir"
  echo tansu > "$dir/kind"
  echo "127.0.0.1:$port" > "$dir/bootstrap"
  for _ in $(seq 1 200); do
    if port_open "$port"; then
      [ "$storage" != sqlite ] || index_headers "$dir/tansu.db"
      echo "127.0.0.1:$port"
      return 0
    fi
    if ! alive "$(cat "$dir/broker.pid")"; then
      echo "broker.sh: tansu exited during start-up; last lines of $dir/broker.log:" >&2
      tail -20 "$dir/broker.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "broker.sh: tansu did not listen on port $port within 20 s (see $dir/broker.log)" >&2
  exit 1
}

# A cluster id as Kafka's Uuid.randomUuid makes them (what `StorageTool random-uuid` prints),
# without a second JVM start.
cluster_id() {
  python3 -c '
import base64, uuid
while True:
    s = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    if not s.startswith("-"):
        print(s)
        break'
}

start_kafka() {
  local dir=$1
  install_kafka
  local libs; libs=$(kafka_home)/libs
  local port="" cport=""
  [ ! -f "$dir/bootstrap" ] || port=$(cut -d: -f2 < "$dir/bootstrap")
  [ ! -f "$dir/controller-port" ] || cport=$(cat "$dir/controller-port")
  if [ -z "$port" ] || [ -z "$cport" ]; then
    local p
    for p in $(free_ports 3); do
      if [ -z "$port" ]; then port=$p
      elif [ -z "$cport" ] && [ "$p" != "$port" ]; then cport=$p
      fi
    done
  fi
  # After a kill -9 the controller keeps the dead broker's registration until its session times
  # out, and only then lets the restarted broker register: the default 9 s session made such a
  # restart take 14 s. 3 s made it about 7 s, but a broker whose heartbeats to its own controller
  # stall for 3 s on a loaded 2-core runner is fenced, and every partition loses its leader (the
  # likely cause of two tests sharing one broker failing at once, every partition leaderless);
  # 6 s is the compromise. The log cleaner and group minimum are for quick tests.
  cat > "$dir/server.properties" <<PROPS
# Written by scripts/broker.sh at each start: set KAFKA_BROKER_PROPERTIES to add or override lines.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
min.insync.replicas=1
default.replication.factor=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
num.partitions=1
log.cleaner.backoff.ms=1000
group.min.session.timeout.ms=1000
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=6000
PROPS
  [ -z "${KAFKA_BROKER_PROPERTIES:-}" ] || printf '%s\n' "$KAFKA_BROKER_PROPERTIES" >> "$dir/server.properties"
  echo "$cport" > "$dir/controller-port"
  echo kafka > "$dir/kind"
  echo "127.0.0.1:$port" > "$dir/bootstrap"
  local jvm=(-Djava.awt.headless=true "-Dlog4j2.configurationFile=$SCRIPTS/kafka/log4j2.properties"
    -cp "$libs/*")
  # Quick starts: the C1 compiler only, a serial collector and a small heap. For the broker (not
  # the format step), SAGAFLOW_BROKER_JVM=stock uses the heap and performance options of Kafka's
  # kafka-server-start.sh and kafka-run-class.sh instead, and KAFKA_JVM_OPTS replaces either.
  local quick=(-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:-UsePerfData)
  local tuning=(-Xmx512m -Xms128m "${quick[@]}")
  case "${SAGAFLOW_BROKER_JVM:-quick}" in
    quick) ;;
    stock) tuning=(-Xmx1G -Xms1G -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20
             -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent
             -XX:MaxInlineLevel=15) ;;
    *) echo "broker.sh: SAGAFLOW_BROKER_JVM is quick (the default, for tests) or stock (Kafka's own flags, for benchmarks), not '$SAGAFLOW_BROKER_JVM'" >&2
       exit 2 ;;
  esac
  [ -z "${KAFKA_JVM_OPTS:-}" ] || read -r -a tuning <<< "$KAFKA_JVM_OPTS"
  if [ ! -f "$dir/data/meta.properties" ]; then
    if ! "$JAVA_CMD" -Xmx256m "${quick[@]}" "${jvm[@]}" kafka.tools.StorageTool format -t "$(cluster_id)" \
        -c "$dir/server.properties" >>"$dir/broker.log" 2>&1 < /dev/null; then
      echo "broker.sh: formatting $dir/data failed; last lines of $dir/broker.log:" >&2
      tail -30 "$dir/broker.log" >&2
      exit 1
    fi
  fi
  (
    # setsid: the broker outlives this script but not an explicit stop.
    setsid "$JAVA_CMD" "${tuning[@]}" "${jvm[@]}" kafka.Kafka "$dir/server.properties" \
      >>"$dir/broker.log" 2>&1 < /dev/null &
    echo $! > "$dir/broker.pid"
  )
  watch_from_now "$dir"
  local rc=0
  python3 "$SCRIPTS/kafka/ready.py" "$port" "$(cat "$dir/broker.pid")" 60 || rc=$?
  if [ "$rc" -eq 0 ]; then
    echo "127.0.0.1:$port"
    return 0
  fi
  if [ "$rc" -eq 3 ]; then
    echo "broker.sh: kafka exited during start-up; last lines of $dir/broker.log:" >&2
  else
    echo "broker.sh: kafka did not answer a metadata request on port $port within 60 s; stopping it; last lines of $dir/broker.log:" >&2
    stop "$dir"
  fi
  tail -30 "$dir/broker.log" >&2
  exit 1
}

stop() {
  local dir=$1
  [ -f "$dir/broker.pid" ] || return 0
  local pid; pid=$(cat "$dir/broker.pid")
  # Kafka shuts down cleanly on TERM (about a second here; more under load): let it finish.
  local waits=50
  [ "$(cat "$dir/kind" 2>/dev/null || true)" != kafka ] || waits=300
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 "$waits"); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then
      kill -KILL "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
    fi
  fi
  rm -f "$dir/broker.pid"
}

usage="usage: $0 install [tansu|kafka|all] | installed tansu | start DIR [sqlite|memory|kafka] | stop DIR"
case "${1:-}" in
  install) install "${2:-tansu}" ;;
  installed) [ "${2:-}" = tansu ] || { echo "usage: $0 installed tansu" >&2; exit 2; }; tansu_installed ;;
  start) [ $# -ge 2 ] || { echo "usage: $0 start DIR [sqlite|memory|kafka]" >&2; exit 2; }; start "$2" "${3:-sqlite}" ;;
  stop) [ $# -ge 2 ] || { echo "usage: $0 stop DIR" >&2; exit 2; }; stop "$2" ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
