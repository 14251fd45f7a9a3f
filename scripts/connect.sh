#!/usr/bin/env bash
# Local Kafka Connect 4.4 worker (distributed mode, one node) with Debezium's PostgreSQL source
# connector, for the outbox relay of the tests and the demo (connect/README.md), and the
# PostgreSQL preparation Debezium needs on a server of scripts/postgres.sh.
#
#   scripts/connect.sh install                    fetch the worker and plugins unless already there
#   scripts/connect.sh start DIR BOOTSTRAP        start a worker on Kafka BOOTSTRAP; prints its REST URL
#   scripts/connect.sh stop DIR                   stop the worker started in DIR
#   scripts/connect.sh url DIR                    print the REST URL of the worker running in DIR
#   scripts/connect.sh prepare-postgres PGDIR     wal_level=logical (restarts the server if needed),
#                                                 role debezium, its pg_hba.conf line; prints its URL
#   scripts/connect.sh publish PGDIR PUB TABLE..  create publication PUB for TABLEs (which must
#                                                 exist), grant debezium SELECT on them
#   scripts/connect.sh drop-slot PGDIR SLOT       drop replication slot SLOT (ending its walsender)
#
# install: the jars of connect/runtime/pom.xml are fetched from Maven Central with mvn, once, into
# ${SAGAFLOW_CACHE:-${XDG_CACHE_HOME:-~/.cache}/sagaflow}/connect-4.4.0-debezium-3.6.1.Final:
# libs/ (the worker's class path) and plugins/ (plugin.path: debezium-connector-postgres 3.6.1 and
# debezium-connector-jdbc 3.6.0, the newest JDBC sink on Maven Central). It also builds Sagaflow's
# Avro converter (connect/converter, with its tests) into connect-converter-<hash of its source>,
# the worker's second plugin directory. Needs java 17+ (set JAVA to use a specific one) and mvn;
# installs them with apt-get when missing, as broker.sh does.
#
# start: DIR holds worker.properties (written at each start), connect.pid, connect.log, rest-url
# and group-id. The group id and the config/offset/status topics (connect-GROUP-configs, ...) are
# made once per DIR, so a worker started again in the same DIR resumes its connectors and their
# offsets; the REST port is reused when free. Ready means GET / answers and GET /connector-plugins
# lists the Debezium plugins. The worker logs INFO and up to DIR/connect.log
# (connect/log4j2.properties). CONNECT_WORKER_PROPERTIES holds extra worker.properties lines
# (key=value, one a line), appended so that they override.
# SAGAFLOW_CONNECT_OWNER=PID makes start stop the worker, and remove DIR, when process PID exits
# (the replication slot stays in PostgreSQL: drop it with drop-slot, or throw the cluster away).
#
# prepare-postgres: PGDIR is a DIR of scripts/postgres.sh with its server running. The role is
# debezium, password debezium (DEBEZIUM_PASSWORD to change it), REPLICATION LOGIN, and connects to
# the sagaflow database with scram-sha-256 from 127.0.0.1. Prints
# postgres://debezium:PASSWORD@127.0.0.1:PORT/sagaflow. Every step is skipped when already done.
set -euo pipefail

KAFKA_VERSION=4.4.0
DEBEZIUM_VERSION=3.6.1.Final
DEBEZIUM_JDBC_VERSION=3.6.0.Final
SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$SCRIPTS")
me=connect.sh
# shellcheck source=scripts/lib.sh
. "$SCRIPTS/lib.sh"
PLUGIN_CLASSES=(io.debezium.connector.postgresql.PostgresConnector io.debezium.connector.jdbc.JdbcSinkConnector)

die() { echo "$me: $*" >&2; exit 1; }

connect_home() {
  echo "${SAGAFLOW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sagaflow}/connect-$KAFKA_VERSION-debezium-$DEBEZIUM_VERSION"
}

# The marker of a complete install: the worker jar and both plugins' connector jars.
installed() {
  local home=$1
  [ -f "$home/libs/connect-runtime-$KAFKA_VERSION.jar" ] &&
    [ -f "$home/plugins/debezium-connector-postgres/debezium-connector-postgres-$DEBEZIUM_VERSION.jar" ] &&
    [ -f "$home/plugins/debezium-connector-jdbc/debezium-connector-jdbc-$DEBEZIUM_JDBC_VERSION.jar" ]
}

install() {
  local home; home=$(connect_home)
  local missing=()
  find_java || missing+=(java)
  # Maven only when something is to be fetched or built: a full cache runs with java alone.
  if ! installed "$home" || ! converter_built; then
    command -v mvn >/dev/null 2>&1 || missing+=(maven)
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    apt_install "${missing[@]}"
    find_java || die "Kafka Connect needs java 17 or newer: none on PATH or under /usr/lib/jvm (set JAVA)"
  fi
  install_converter
  installed "$home" && return 0
  echo "$me: fetching Kafka Connect $KAFKA_VERSION and Debezium $DEBEZIUM_VERSION plugins from Maven Central into $home (about 120 MB, once)..." >&2
  mkdir -p "$(dirname "$home")"
  find "$(dirname "$home")" -maxdepth 1 -name "$(basename "$home").tmp.*" -mmin +60 -exec rm -rf {} + 2>/dev/null || true
  # A complete install only ever appears under its final name, by a rename.
  local tmp; tmp=$(mktemp -d "$home.tmp.XXXXXX")
  if ! mvn -q -B -Dstyle.color=never -f "$ROOT/connect/runtime/pom.xml" \
      dependency:copy-dependencies@libs dependency:unpack-dependencies@plugins \
      -Dconnect.out="$tmp" >&2 || ! installed "$tmp"; then
    rm -rf "$tmp"
    die "mvn could not fetch the Kafka Connect jars or Debezium plugins (connect/runtime/pom.xml; output above). Is Maven Central reachable (mvn -v, ~/.m2/settings.xml)?"
  fi
  rm -rf "$tmp/.markers"
  if ! mv -T "$tmp" "$home" 2>/dev/null; then
    rm -rf "$tmp"  # another install finished first
    installed "$home" || die "cannot move the Kafka Connect jars to $home"
  fi
}

# The plugin directory of Sagaflow's Avro converter (connect/converter), built from this tree's
# source: a change of its source is a new directory.
converter_home() {
  local hash
  hash=$(cd "$ROOT/connect/converter" && find pom.xml src -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-12)
  echo "${SAGAFLOW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sagaflow}/connect-converter-$hash"
}

# Builds the converter with Maven (running its tests) unless this source's build is cached.
converter_built() {
  [ -f "$(converter_home)/sagaflow-avro-converter/sagaflow-connect-avro-converter-0.1.0.jar" ]
}

install_converter() {
  local out; out=$(converter_home)
  converter_built && return 0
  echo "$me: building the Sagaflow Avro converter (connect/converter) with its tests..." >&2
  local pom=$ROOT/connect/converter/pom.xml target=$ROOT/connect/converter/target
  rm -rf "$target/plugin" "$target/surefire-reports"
  mvn -q -B -Dstyle.color=never -f "$pom" package >&2 ||
    die "building connect/converter failed (output above; the reports are in $target/surefire-reports)"
  # Tests skipped (-DskipTests in MAVEN_OPTS or settings.xml) leave no reports: say so.
  local tests
  tests=$(cat "$target"/surefire-reports/TEST-*.xml 2>/dev/null | grep -o '<testsuite [^>]*' | sed -n 's/.* tests="\([0-9]*\)".*/\1/p' | awk '{ n += $1 } END { print n + 0 }' || true)
  echo "$me: connect/converter: ${tests:-0} tests passed" >&2
  mkdir -p "$(dirname "$out")"
  local tmp; tmp=$(mktemp -d "$out.tmp.XXXXXX")
  cp -r "$target/plugin/." "$tmp/"
  mv -T "$tmp" "$out" 2>/dev/null || rm -rf "$tmp"  # another build finished first
}

# Whether one of the comma-separated host:port of $1 accepts a TCP connection.
bootstrap_open() {
  python3 - "$1" <<'PY'
import socket, sys
for hp in sys.argv[1].split(","):
    host, _, port = hp.strip().rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=2).close()
        sys.exit(0)
    except (OSError, ValueError):
        pass
sys.exit(1)
PY
}

# Exit 0 when the worker at URL $1 answers GET / and lists every class of $2.. in
# GET /connector-plugins; 1 when not (yet).
rest_ready() {
  python3 - "$@" <<'PY'
import json, sys, urllib.request
url, classes = sys.argv[1], sys.argv[2:]
try:
    with urllib.request.urlopen(url + "/", timeout=2) as r:
        json.load(r)
    with urllib.request.urlopen(url + "/connector-plugins", timeout=5) as r:
        listed = {p["class"] for p in json.load(r)}
except Exception:
    sys.exit(1)
sys.exit(0 if all(c in listed for c in classes) else 1)
PY
}

start() {
  local dir=$1 bootstrap=$2
  [[ "$bootstrap" == *:* ]] || die "BOOTSTRAP must be host:port (what scripts/broker.sh start prints), got '$bootstrap'"
  install
  # Without a broker the worker would wait a minute for one before it gives up.
  bootstrap_open "$bootstrap" ||
    die "nothing accepts connections at BOOTSTRAP $bootstrap: start Kafka first (scripts/broker.sh start DIR kafka prints its host:port)"
  local home; home=$(connect_home)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ -f "$dir/connect.pid" ] && alive "$(cat "$dir/connect.pid")"; then
    die "a Connect worker is already running from $dir (pid $(cat "$dir/connect.pid")); stop it with: $0 stop $dir"
  fi
  [ -f "$dir/group-id" ] || echo "connect-$(basename "$dir" | tr -c 'A-Za-z0-9_.\n-' _)-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')" > "$dir/group-id"
  local group; group=$(cat "$dir/group-id")
  local port=""
  [ ! -f "$dir/rest-url" ] || port=$(sed 's/.*://' "$dir/rest-url")
  port=$(free_port $port)
  # offset.flush.interval.ms: the source offsets (and so the slot's confirmed LSN) are committed
  # every second, not every minute: after a crash at most a second of rows is delivered again.
  cat > "$dir/worker.properties" <<PROPS
# Written by scripts/connect.sh at each start: set CONNECT_WORKER_PROPERTIES to add or override lines.
bootstrap.servers=$bootstrap
group.id=$group
config.storage.topic=$group-configs
offset.storage.topic=$group-offsets
status.storage.topic=$group-status
config.storage.replication.factor=1
offset.storage.replication.factor=1
status.storage.replication.factor=1
offset.storage.partitions=1
status.storage.partitions=1
offset.flush.interval.ms=1000
listeners=http://127.0.0.1:$port
rest.advertised.host.name=127.0.0.1
rest.advertised.port=$port
plugin.path=$home/plugins,$(converter_home)
# Both Debezium plugins and the converter ship ServiceLoader manifests: no class scan (about 15 s
# of a 20 s start).
plugin.discovery=service_load
key.converter=org.apache.kafka.connect.storage.StringConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
value.converter.schemas.enable=false
topic.creation.enable=true
PROPS
  [ -z "${CONNECT_WORKER_PROPERTIES:-}" ] || printf '%s\n' "$CONNECT_WORKER_PROPERTIES" >> "$dir/worker.properties"
  local url="http://127.0.0.1:$port"
  echo "$url" > "$dir/rest-url"
  echo "[$(date '+%F %T')] scripts/connect.sh: starting the worker" >> "$dir/connect.log"
  (
    # setsid: the worker outlives this script but not an explicit stop.
    setsid "$JAVA_CMD" -Xmx512m -Xms128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:-UsePerfData \
      -Djava.awt.headless=true "-Dlog4j2.configurationFile=$ROOT/connect/log4j2.properties" \
      -cp "$home/libs/*" org.apache.kafka.connect.cli.ConnectDistributed "$dir/worker.properties" \
      >>"$dir/connect.log" 2>&1 < /dev/null &
    echo $! > "$dir/connect.pid"
  )
  local pid; pid=$(cat "$dir/connect.pid")
  local deadline=$((SECONDS + ${CONNECT_START_TIMEOUT:-120}))
  while [ $SECONDS -lt $deadline ]; do
    if rest_ready "$url" "${PLUGIN_CLASSES[@]}"; then
      if [ -n "${SAGAFLOW_CONNECT_OWNER:-}" ]; then watch_owner "$SCRIPTS/connect.sh" "$dir" connect.pid "$SAGAFLOW_CONNECT_OWNER"; fi
      echo "$url"
      return 0
    fi
    if ! alive "$pid"; then
      echo "$me: the Connect worker exited during start-up (is Kafka up at $bootstrap?); last lines of $dir/connect.log:" >&2
      tail -30 "$dir/connect.log" >&2
      rm -f "$dir/connect.pid"
      exit 1
    fi
    sleep 0.5
  done
  echo "$me: the Connect worker did not answer on $url with the Debezium plugins listed within ${CONNECT_START_TIMEOUT:-120} s; stopping it; last lines of $dir/connect.log:" >&2
  stop "$dir"
  tail -30 "$dir/connect.log" >&2
  exit 1
}

stop() {
  local dir=$1
  [ -f "$dir/connect.pid" ] || return 0
  local pid; pid=$(cat "$dir/connect.pid")
  # On TERM the worker stops its tasks, commits their offsets and leaves the group: let it finish.
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then
      echo "$me: the worker in $dir did not stop within 30 s of SIGTERM; killing it (its last offsets may be delivered again)" >&2
      kill -KILL "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
    fi
  fi
  rm -f "$dir/connect.pid"
}

print_url() {
  local dir=$1
  [ -f "$dir/connect.pid" ] && alive "$(cat "$dir/connect.pid")" ||
    die "no Connect worker running in $dir; start it with: $0 start $dir BOOTSTRAP"
  cat "$dir/rest-url"
}

# ---- PostgreSQL (a DIR of scripts/postgres.sh) ----

pg_bin() {
  local d
  for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
    [ -x "$d/psql" ] && { echo "$d"; return 0; }
  done
  command -v psql >/dev/null 2>&1 && { dirname "$(command -v psql)"; return 0; }
  die "psql not found (install PostgreSQL with: scripts/postgres.sh install)"
}

as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# PGPORT of the server running in PGDIR $1, or an error naming the fix.
pg_port() {
  local url
  url=$("$SCRIPTS/postgres.sh" url "$1") || die "PostgreSQL is not running in $1; start it with: scripts/postgres.sh start $1"
  echo "$url" | sed 's|.*:\([0-9]*\)/.*|\1|'
}

# psql as postgres on database sagaflow of the server in PGDIR $1; the rest are psql arguments.
pg() {
  local dir=$1; shift
  "$(pg_bin)/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$(pg_port "$dir")" -U postgres -d sagaflow "$@"
}

prepare_postgres() {
  local dir=$1 password=${DEBEZIUM_PASSWORD:-debezium}
  [[ "$password" != *"'"* ]] || die "DEBEZIUM_PASSWORD must not contain a single quote"
  pg_port "$dir" >/dev/null
  # 1. wal_level=logical takes a server restart; postgres.sh start reuses the port.
  if [ "$(pg "$dir" -tAc 'show wal_level')" != logical ]; then
    pg "$dir" -c 'alter system set wal_level = logical'
    "$SCRIPTS/postgres.sh" stop "$dir"
    "$SCRIPTS/postgres.sh" start "$dir" >/dev/null
    [ "$(pg "$dir" -tAc 'show wal_level')" = logical ] ||
      die "wal_level is still not logical after a restart of the server in $dir (see $dir/postgresql.auto.conf and $dir/log)"
  fi
  # 2. The role Debezium connects as: replication (the slot and its stream) and login.
  pg "$dir" -v pw="$password" <<'SQL'
select format('create role debezium with replication login password %L', :'pw')
  where not exists (select 1 from pg_roles where rolname = 'debezium') \gexec
select format('alter role debezium with replication login password %L', :'pw') \gexec
grant connect, create on database sagaflow to debezium;
grant usage on schema public to debezium;
SQL
  # 3. Its pg_hba.conf line, before initdb's trust lines (the first matching line wins), so that
  # the password is really checked. Logical replication connections match a database name.
  local hba; hba=$(pg "$dir" -tAc 'show hba_file')
  local line="host    sagaflow        debezium        127.0.0.1/32            scram-sha-256"
  if ! grep -qxF "$line" "$hba"; then
    as_pg sed -i "1i # Added by scripts/connect.sh prepare-postgres: Debezium's role, with its password.\n$line" "$hba"
    pg "$dir" -tAc 'select pg_reload_conf()' >/dev/null
  fi
  local port; port=$(pg_port "$dir")
  local bad; bad=$(pg "$dir" -tAc "select count(*) from pg_hba_file_rules where error is not null")
  [ "$bad" = 0 ] || die "$hba has $bad line(s) in error (select * from pg_hba_file_rules where error is not null)"
  # 4. Check: debezium logs in with its password, and not without.
  PGPASSWORD=$password "$(pg_bin)/psql" -X -q -h 127.0.0.1 -p "$port" -U debezium -d sagaflow -tAc \
    "select rolreplication from pg_roles where rolname = current_user" 2>/dev/null | grep -qx t ||
    die "role debezium cannot log in to sagaflow on port $port with its password (see $hba and $dir/log)"
  if PGPASSWORD=wrong-$password "$(pg_bin)/psql" -X -q -h 127.0.0.1 -p "$port" -U debezium -d sagaflow -tAc 'select 1' >/dev/null 2>&1; then
    die "role debezium logs in with a wrong password: the pg_hba.conf line in $hba does not apply"
  fi
  echo "postgres://debezium:$password@127.0.0.1:$port/sagaflow"
}

publish() {
  local dir=$1 pub=$2; shift 2
  local t
  for t in "$@"; do
    pg "$dir" -v t="$t" -v pub="$pub" <<'SQL'
grant select on :t to debezium;
select format('create publication %I for table %s', :'pub', :'t')
  where not exists (select 1 from pg_publication where pubname = :'pub') \gexec
select format('alter publication %I add table %s', :'pub', :'t')
  where not exists (select 1 from pg_publication_tables where pubname = :'pub'
    and format('%I.%I', schemaname, tablename)::regclass = :'t'::regclass) \gexec
SQL
  done
  pg "$dir" -v pub="$pub" -tA <<'SQL'
select string_agg(format('%I.%I', schemaname, tablename), ' ') from pg_publication_tables where pubname = :'pub'
SQL
}

drop_slot() {
  local dir=$1 slot=$2
  running_pg "$dir" || return 0
  # An active slot (a walsender streams it) cannot be dropped: end that walsender first.
  pg "$dir" -v slot="$slot" -tA <<'SQL' >/dev/null
select pg_terminate_backend(active_pid) from pg_replication_slots
  where slot_name = :'slot' and active_pid is not null;
SQL
  local i
  for i in $(seq 1 50); do
    if pg "$dir" -v slot="$slot" -tA <<'SQL' >/dev/null 2>&1; then return 0; fi
select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = :'slot';
SQL
    sleep 0.2
  done
  die "cannot drop replication slot $slot in $dir: still active? (select * from pg_replication_slots); stop the Connect worker first"
}

running_pg() { "$SCRIPTS/postgres.sh" url "$1" >/dev/null 2>&1; }

usage="usage: $0 install | start DIR BOOTSTRAP | stop DIR | url DIR | prepare-postgres PGDIR | publish PGDIR PUB TABLE... | drop-slot PGDIR SLOT"
abs() { realpath -m -- "$1"; }
case "${1:-}" in
  install) [ $# -eq 1 ] || { echo "$usage" >&2; exit 2; }; install ;;
  start) [ $# -eq 3 ] || { echo "usage: $0 start DIR BOOTSTRAP" >&2; exit 2; }; start "$(abs "$2")" "$3" ;;
  stop) [ $# -eq 2 ] || { echo "usage: $0 stop DIR" >&2; exit 2; }; stop "$(abs "$2")" ;;
  url) [ $# -eq 2 ] || { echo "usage: $0 url DIR" >&2; exit 2; }; print_url "$(abs "$2")" ;;
  prepare-postgres) [ $# -eq 2 ] || { echo "usage: $0 prepare-postgres PGDIR" >&2; exit 2; }
    d=$(abs "$2"); cd /; prepare_postgres "$d" ;;
  publish) [ $# -ge 4 ] || { echo "usage: $0 publish PGDIR PUBLICATION TABLE..." >&2; exit 2; }
    d=$(abs "$2"); shift 2; cd /; publish "$d" "$@" ;;
  drop-slot) [ $# -eq 3 ] || { echo "usage: $0 drop-slot PGDIR SLOT" >&2; exit 2; }
    d=$(abs "$2"); cd /; drop_slot "$d" "$3" ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
