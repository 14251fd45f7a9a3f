#!/usr/bin/env bash
# Every test: formatting, lints, Rust unit and integration tests, and the Python interop tests
# with confluent-kafka, on tansu (sqlite storage) and on Apache Kafka 4.4 (KRaft). The two broker
# passes run at the same time: the tests wait on brokers, timers and timeouts far more than they
# compute (a pass alone keeps the 2-core runner about 40 % idle), and together they take a warm
# run from about 30 to about 20 minutes. Their lines carry a [tansu] or [kafka] prefix, and each
# pass's output is also kept in target/test-<broker>.log. The Kafka pass also runs the Kafka
# Connect configurations of connect/ on a real Connect worker (scripts/connect.sh).
# The tests are written for that doubled load: the scenarios that stop a broker or a Connect
# worker give their steps 180 s rather than the example's 30 s (tests/src/trips.rs), and the
# Kafka broker a test binary shares rides out a 30 s controller stall (tests/src/lib.rs).
# On tansu each integration test starts its own broker on a free port; on Kafka the tests of one
# test binary share one (tests/src/lib.rs, Broker::for_test). SAGAFLOW_BOOTSTRAP overrides both.
# Before the broker passes, the deployment files: docker-compose.yml (scripts/compose-test.sh) and
# the Helm chart (scripts/helm-test.sh). Installs what is missing first. Set
# SAGAFLOW_TEST_BROKERS="tansu" or "kafka" to run one.
set -euo pipefail
cd "$(dirname "$0")/.."

brokers=${SAGAFLOW_TEST_BROKERS:-tansu kafka}
wants() { case " $brokers " in *" $1 "*) return 0 ;; esac; return 1; }

scripts/setup.sh --no-tansu
# A run that stops early (a failure, Ctrl-C, a CI timeout) also stops the tansu build, the passes
# and everything they started; the tests stop their brokers when they are killed. Job control
# gives each background job (the build, each pass) a process group of its own, so that one
# signal reaches all of a pass's processes, even those whose parent has already gone.
set -m
pids=()
tansu_build=
scratch=
tansu_rc=target/tansu-install.rc
stop_all() {
  local entry
  for entry in "${pids[@]}"; do kill -TERM -- "-${entry#*:}" 2>/dev/null || true; done
  if [ -n "$tansu_build" ] && [ ! -s "$tansu_rc" ]; then kill -TERM -- "-$tansu_build" 2>/dev/null || true; fi
  [ -z "$scratch" ] || { stop_scratch; rm -rf "$scratch"; }
}
# Stops the brokers, Connect workers and PostgreSQL servers still running from the scratch, before
# its files go: their owners' watches stop them once the tests are gone, but only while their pid
# files are there to say what to stop.
stop_scratch() {
  local f stops=()
  for f in "$scratch"/*/broker.pid "$scratch"/*/connect.pid "$scratch"/*/postmaster.pid; do
    [ -e "$f" ] || continue
    case "$f" in
      */broker.pid) scripts/broker.sh stop "${f%/*}" & ;;
      */connect.pid) scripts/connect.sh stop "${f%/*}" & ;;
      *) scripts/postgres.sh stop "${f%/*}" & ;;
    esac
    stops+=("$!")
  done
  [ ${#stops[@]} -eq 0 ] || wait "${stops[@]}" || true
}
trap stop_all EXIT
trap 'exit 143' TERM INT

# tansu is a `cargo install` of about 17 minutes on a cold 2-core runner. When it is missing it
# builds in the background from here on, at the same CPU priority as the build below: the two
# passes run at the same time and keep the machine about 80 % busy, so a tansu build left to
# finish during them gets little CPU and holds the tansu pass back by as much, while sharing with
# the build lets both passes start together.
if wants tansu && ! scripts/broker.sh installed tansu; then
  mkdir -p target && rm -f "$tansu_rc"
  echo "== building tansu in the background (log: target/tansu-install.log)" >&2
  (scripts/broker.sh install tansu > target/tansu-install.log 2>&1; echo $? > "$tansu_rc") &
  tansu_build=$!
fi

if wants kafka; then
  scripts/broker.sh install kafka
  scripts/connect.sh install
fi

echo "== cargo fmt" >&2
cargo fmt --all -- --check

echo "== build and clippy" >&2
if command -v clippy-driver >/dev/null 2>&1; then
  # Lint while building: clippy-driver wraps rustc for the workspace's own crates only (exactly
  # what `cargo clippy` does), with `-D warnings` passed the way cargo-clippy passes it. A
  # separate `cargo clippy` pass would compile RocksDB's and librdkafka's C/C++ sources a second
  # time (cargo gives its build scripts other hashes), about 15 minutes on a cold 2-core runner.
  export RUSTC_WORKSPACE_WRAPPER; RUSTC_WORKSPACE_WRAPPER=$(command -v clippy-driver)
  export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
  cargo build --locked --workspace --all-targets
else
  cargo build --locked --workspace --all-targets
  cargo clippy --locked --workspace --all-targets -- -D warnings
fi

echo "== deployment files: docker-compose.yml, helm/sagaflow" >&2
scripts/compose-test.sh
scripts/helm-test.sh

# What the tests install on first use, installed here, before any pass: a first run says up front
# what it installs, and no test's time includes it.
echo "== test tools: pytest and confluent-kafka, Schemathesis, playwright-core, the OTLP receiver" >&2
scripts/python-tests.sh --install
scripts/schemathesis.sh --install
scripts/dashboard-test.sh --install
(me=test.sh; . scripts/lib.sh && go_tool otlp-sink > /dev/null)

# Waits for the background tansu build, saying every minute how far it is.
wait_for_tansu() {
  local waited=0
  echo "== the tansu pass waits for the tansu build" >&2
  while [ ! -s "$tansu_rc" ] && kill -0 "$tansu_build" 2>/dev/null; do
    sleep 5; waited=$((waited + 5))
    [ $((waited % 60)) -ne 0 ] \
      || echo "== tansu build: $(grep -c Compiling target/tansu-install.log) crates compiled, ${waited} s waited" >&2
  done
  if [ "$(cat "$tansu_rc" 2>/dev/null)" != 0 ]; then
    tail -30 target/tansu-install.log >&2
    echo "test.sh: installing tansu failed (target/tansu-install.log)" >&2
    return 1
  fi
}

# One broker's pass; its status is the first failure's, but every test binary and the Python
# tests run even after a failure (--no-fail-fast), so one run shows everything that fails.
pass() {
  local broker=$1 rc=0 r started
  if [ "$broker" = tansu ] && [ -n "$tansu_build" ]; then wait_for_tansu || return 1; fi
  started=$(date +%s)
  rm -f "target/test-skips-$broker.log"
  echo "== Rust unit and integration tests on $broker" >&2
  # --workspace on both brokers, never `-p sagaflow-tests`: a narrower package set unifies
  # features differently (syn, digest, tracing-core...), and cargo then builds 60 crates a
  # second time on a cold runner, RocksDB's and librdkafka's C/C++ sources among them. The
  # unit tests run again on Kafka, which costs seconds.
  SAGAFLOW_TEST_BROKER=$broker cargo test --locked --workspace --no-fail-fast -- --test-threads 2 || rc=$?
  echo "== Python interop tests on $broker" >&2
  SAGAFLOW_TEST_BROKER=$broker scripts/python-tests.sh || { r=$?; [ "$rc" -ne 0 ] || rc=$r; }
  if [ -s "target/test-skips-$broker.log" ]; then
    echo "== tests skipped on $broker, and why:" >&2
    cat "target/test-skips-$broker.log" >&2
  fi
  echo "== $broker: $(( $(date +%s) - started )) s" >&2
  return "$rc"
}

# The tests' scratch (brokers' logs, RocksDB state, PostgreSQL data) goes on tmpfs when there is
# one with room and TMPDIR is not set: the tests kill processes, never the machine, so fsync buys
# them nothing, and on a loaded runner an fsync queued behind the other tests' writes can stall a
# broker for seconds.
if [ -z "${TMPDIR:-}" ] && [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ] \
    && [ "$(df -Pk /dev/shm | awk 'NR == 2 { print $4 }')" -ge $((4 * 1024 * 1024)) ]; then
  scratch=$(mktemp -d /dev/shm/sagaflow-test.XXXXXX)
  # PostgreSQL runs as its own user, which must reach its data directory in here.
  chmod 755 "$scratch"
  export TMPDIR=$scratch
  echo "== test scratch on tmpfs: $scratch" >&2
fi

# Both passes at once, each in the background and waited for, so that a TERM or Ctrl-C reaches
# stop_all at once. The tansu pass waits there for the tansu build, if it is still going.
for broker in $brokers; do
  (pass "$broker" 2>&1 | tee "target/test-$broker.log" | sed -u "s/^/[$broker] /") &
  pids+=("$broker:$!")
done
failed=()
for entry in "${pids[@]}"; do
  wait "${entry#*:}" || failed+=("${entry%%:*}")
done
pids=()  # all waited for: nothing left for stop_all
if [ ${#failed[@]} -gt 0 ]; then
  for broker in "${failed[@]}"; do
    echo "== the $broker pass failed; its output is in target/test-$broker.log. Failures:" >&2
    grep -E -A3 '^test .* FAILED$|panicked at|^FAILED |^E  ' "target/test-$broker.log" \
      | head -60 >&2 || true
  done
  exit 1
fi
echo "== passed on: $brokers" >&2
