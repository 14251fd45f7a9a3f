#!/usr/bin/env bash
# The trip demo on the local default: installs what is missing, builds, starts a tansu broker
# (unless SAGAFLOW_BOOTSTRAP points at one) and PostgreSQL for the read models (unless
# SAGAFLOW_DATABASE_URL does), runs 1,000 trip sagas with ~10% hotel failures, prints the summary
# with two BI queries and exits non-zero if any check fails. Extra arguments go to `sagaflow demo`
# (see `target/debug/sagaflow demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
echo "demo: building sagaflow..." >&2
cargo build --locked -p sagaflow >&2

dir= pgdir=
cleanup() {
  if [ -n "$pgdir" ]; then scripts/postgres.sh stop "$pgdir"; rm -rf "$pgdir"; fi
  if [ -n "$dir" ]; then scripts/broker.sh stop "$dir"; rm -rf "$dir"; fi
}
trap cleanup EXIT
if [ -z "${SAGAFLOW_BOOTSTRAP:-}" ]; then
  dir=$(mktemp -d -t sagaflow-demo-broker-XXXXXX)
  SAGAFLOW_BOOTSTRAP=$(scripts/broker.sh start "$dir" sqlite)
  echo "demo: tansu broker on $SAGAFLOW_BOOTSTRAP" >&2
  # One local broker: created topics get one replica (the default, 3, suits a real cluster).
  export SAGAFLOW_REPLICATION_FACTOR=1 SAGAFLOW_MIN_INSYNC_REPLICAS=1
  # tansu's group coordinator needs the engine's rejoin rules, and its fetches always wait the
  # full fetch.wait.max.ms (docs/operations.md).
  export SAGAFLOW_TANSU_WORKAROUNDS=true SAGAFLOW_KAFKA_FETCH_WAIT_MAX_MS=2
fi
export SAGAFLOW_BOOTSTRAP
# The read models go to a PostgreSQL of the demo's own unless SAGAFLOW_DATABASE_URL names one.
if [ -z "${SAGAFLOW_DATABASE_URL:-}" ]; then
  pgdir=$(mktemp -d -t sagaflow-demo-pg-XXXXXX)
  chmod 755 "$pgdir"
  SAGAFLOW_DATABASE_URL=$(scripts/postgres.sh start "$pgdir")
  echo "demo: PostgreSQL on $SAGAFLOW_DATABASE_URL" >&2
  export SAGAFLOW_DATABASE_URL
fi
target/debug/sagaflow demo --definitions examples "$@"
