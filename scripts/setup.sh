#!/usr/bin/env bash
# Installs what building and running Sagaflow needs on a fresh Debian machine, skipping what is
# already there: system packages for the bundled C/C++ libraries (RocksDB needs libclang for its
# bindings, librdkafka needs a C toolchain), Chromium for the dashboard's browser tests, PostgreSQL
# for the read models, then the tansu broker (unless --no-tansu: scripts/test.sh builds it itself,
# in the background of the Apache Kafka pass).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for pkg in libclang-dev libssl-dev pkg-config make g++ python3-venv chromium; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >&2
fi

command -v cargo >/dev/null 2>&1 || {
  echo "setup: cargo is required (https://rustup.rs)" >&2
  exit 1
}

scripts/postgres.sh install
[ "${1:-}" = --no-tansu ] || scripts/broker.sh install tansu
