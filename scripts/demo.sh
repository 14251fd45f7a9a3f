#!/usr/bin/env bash
# The trip demo on the local default: installs what is missing, builds, starts a tansu broker
# (unless SAGAFLOW_BOOTSTRAP points at one), runs 1,000 trip sagas with ~10% hotel failures,
# prints the summary and exits non-zero if any check fails. Extra arguments go to `sagaflow demo`
# (see `target/debug/sagaflow demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
echo "demo: building sagaflow..." >&2
cargo build --locked -p sagaflow >&2

if [ -z "${SAGAFLOW_BOOTSTRAP:-}" ]; then
  dir=$(mktemp -d -t sagaflow-demo-broker-XXXXXX)
  trap 'scripts/broker.sh stop "$dir"; rm -rf "$dir"' EXIT
  SAGAFLOW_BOOTSTRAP=$(scripts/broker.sh start "$dir" sqlite)
  echo "demo: tansu broker on $SAGAFLOW_BOOTSTRAP" >&2
  # One local broker: created topics get one replica (the default, 3, suits a real cluster).
  export SAGAFLOW_REPLICATION_FACTOR=1 SAGAFLOW_MIN_INSYNC_REPLICAS=1
  # tansu's group coordinator needs the engine's rejoin rules (docs/operations.md).
  export SAGAFLOW_TANSU_WORKAROUNDS=true
fi
export SAGAFLOW_BOOTSTRAP
target/debug/sagaflow demo --definitions examples "$@"
