#!/usr/bin/env bash
# Interop tests with clients we did not write (confluent-kafka from PyPI) against a local
# broker, the sagaflow registry and engine. Expects target/debug/sagaflow (scripts/test.sh builds
# it). Uses SAGAFLOW_BOOTSTRAP when set, else starts a broker on a free port: tansu (sqlite), or
# Apache Kafka when SAGAFLOW_TEST_BROKER=kafka. `--install` only makes the virtualenv
# (scripts/test.sh does, before its passes).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/python-venv
if [ ! -x "$venv/bin/pytest" ] || ! cmp -s tests/python/requirements.txt "$venv/requirements.txt"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r tests/python/requirements.txt
  cp tests/python/requirements.txt "$venv/requirements.txt"
fi
[ "${1:-}" != --install ] || exit 0

work=$(mktemp -d -t sagaflow-pytest-XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -z "${started_broker:-}" ] || scripts/broker.sh stop "$work/broker"
  rm -rf "$work"
}
trap cleanup EXIT

if [ -z "${SAGAFLOW_BOOTSTRAP:-}" ]; then
  mode=sqlite
  [ "${SAGAFLOW_TEST_BROKER:-tansu}" != kafka ] || mode=kafka
  SAGAFLOW_BOOTSTRAP=$(scripts/broker.sh start "$work/broker" "$mode")
  started_broker=1
fi
# tansu's group coordinator needs the engine's rejoin rules, and its fetches always wait the full
# fetch.wait.max.ms (docs/operations.md).
[ "${SAGAFLOW_TEST_BROKER:-tansu}" = kafka ] \
  || export SAGAFLOW_TANSU_WORKAROUNDS=true SAGAFLOW_KAFKA_FETCH_WAIT_MAX_MS=2
# One local broker: the topics the engine and the registry create get one replica.
export SAGAFLOW_BOOTSTRAP SAGAFLOW_REPLICATION_FACTOR=1 SAGAFLOW_MIN_INSYNC_REPLICAS=1

target/debug/sagaflow registry --bootstrap "$SAGAFLOW_BOOTSTRAP" --listen 127.0.0.1:0 --topic "_schemas-py-$$" \
  > "$work/registry.out" 2> "$work/registry.err" &
pids+=($!)
for _ in $(seq 1 300); do
  grep -q '^registry:' "$work/registry.out" 2>/dev/null && break
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$work/registry.err" >&2; exit 1; }
  sleep 0.1
done
SAGAFLOW_REGISTRY_URL=$(sed -n 's/^registry: //p' "$work/registry.out")
[ -n "$SAGAFLOW_REGISTRY_URL" ] || { echo "registry did not start" >&2; cat "$work/registry.err" >&2; exit 1; }
export SAGAFLOW_REGISTRY_URL SAGAFLOW_BIN="$PWD/target/debug/sagaflow"

"$venv/bin/pytest" -q tests/python
