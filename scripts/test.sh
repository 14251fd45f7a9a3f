#!/usr/bin/env bash
# Every test: formatting, lints, Rust unit and integration tests (each integration test starts
# its own tansu broker on a free port, or uses SAGAFLOW_BOOTSTRAP), then the Python interop
# tests with confluent-kafka. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

echo "== build" >&2
cargo build --locked --workspace --all-targets

echo "== cargo fmt / clippy" >&2
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings

echo "== Rust tests" >&2
cargo test --locked --workspace -- --test-threads 2

echo "== Python interop tests" >&2
scripts/python-tests.sh
