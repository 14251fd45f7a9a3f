#!/usr/bin/env bash
# Every test: formatting, lints, Rust unit and integration tests (each integration test starts
# its own tansu broker on a free port, or uses SAGAFLOW_BOOTSTRAP), then the Python interop
# tests with confluent-kafka. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

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

echo "== Rust tests" >&2
cargo test --locked --workspace -- --test-threads 2

echo "== Python interop tests" >&2
scripts/python-tests.sh
