#!/usr/bin/env bash
# Every test: formatting, lints, Rust unit and integration tests, and the Python interop tests
# with confluent-kafka, on tansu (sqlite storage) and then again on Apache Kafka 4.4 (KRaft), or
# Kafka first while tansu is still being built (below). The Kafka pass also runs the Kafka Connect
# configurations of connect/ on a real Connect worker (scripts/connect.sh).
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

# tansu is a `cargo install` of about 15 minutes on a cold 2-core runner, and the Kafka pass
# needs none of it: when it is missing, it builds in the background (at the lowest CPU priority,
# so the tests come first) while the Kafka pass runs, and the tansu pass comes second.
tansu_build=
if wants tansu && ! scripts/broker.sh installed tansu; then
  if wants kafka; then
    echo "== building tansu in the background during the Kafka pass (log: target/tansu-install.log)" >&2
    nice -n 19 scripts/broker.sh install tansu > target/tansu-install.log 2>&1 &
    tansu_build=$!
    brokers="kafka tansu"
  else
    scripts/broker.sh install tansu
  fi
fi

for broker in $brokers; do
  if [ "$broker" = tansu ] && [ -n "$tansu_build" ]; then
    echo "== waiting for the tansu build" >&2
    wait "$tansu_build" || { tail -30 target/tansu-install.log >&2; echo "test.sh: installing tansu failed (target/tansu-install.log)" >&2; exit 1; }
  fi
  started=$(date +%s)
  rm -f target/test-skips.log
  echo "== Rust unit and integration tests on $broker" >&2
  # --workspace on both brokers, never `-p sagaflow-tests`: a narrower package set unifies
  # features differently (syn, digest, tracing-core...), and cargo then builds 60 crates a
  # second time on a cold runner, RocksDB's and librdkafka's C/C++ sources among them. The
  # unit tests run again on Kafka, which costs seconds.
  SAGAFLOW_TEST_BROKER=$broker cargo test --locked --workspace -- --test-threads 2
  echo "== Python interop tests on $broker" >&2
  SAGAFLOW_TEST_BROKER=$broker scripts/python-tests.sh
  if [ -s target/test-skips.log ]; then
    echo "== tests skipped on $broker, and why:" >&2
    cat target/test-skips.log >&2
  fi
  echo "== $broker: $(( $(date +%s) - started )) s" >&2
done
