#!/usr/bin/env bash
# The dashboard's end-to-end test: Playwright (playwright-core, never `playwright install`)
# drives Debian's Chromium against a running admin API, under `node --test`.
#
# The Rust test that starts the stack runs this (tests/tests/admin.rs); it passes the page and
# what to look for in SAGAFLOW_UI_* variables (tests/dashboard/dashboard.test.cjs lists them).
# playwright-core is installed once into the cache, outside the clone; `--install` only installs
# it (scripts/test.sh does, before its passes).
set -euo pipefail
cd "$(dirname "$0")/.."

version=1.64.1
cache=${SAGAFLOW_CACHE:-$HOME/.cache/sagaflow}/node-playwright-core-$version
if [ ! -f "$cache/node_modules/playwright-core/package.json" ]; then
  echo "installing playwright-core $version into $cache" >&2
  mkdir -p "$cache"
  npm install --prefix "$cache" --no-save --no-audit --no-fund --silent "playwright-core@$version" >&2
fi
[ "${1:-}" != --install ] || exit 0
[ -x /usr/bin/chromium ] || { echo "Debian's chromium is missing: run scripts/setup.sh" >&2; exit 1; }
export NODE_PATH=$cache/node_modules
exec node --test --test-reporter=spec tests/dashboard/
