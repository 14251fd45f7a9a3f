#!/usr/bin/env bash
# Property-based tests of an HTTP API against its own OpenAPI 3.0/3.1 document, with Schemathesis.
#
# Usage: scripts/schemathesis.sh URL_OF_OPENAPI_JSON [extra `st run` args]
#   e.g. scripts/schemathesis.sh http://127.0.0.1:8080/openapi.json --seed 1 --workers 2
#        scripts/schemathesis.sh --install   only installs it (scripts/test.sh does, before its
#                                            passes)
# The API's base URL is the document's origin (plus the path of its `servers[0].url`, if any);
# pass `--url BASE` to point elsewhere. Exits non-zero when any check fails.
#
# Env:
#   SCHEMATHESIS_MAX_EXAMPLES  test cases per operation in the fuzzing phase (default 30)
#   SCHEMATHESIS_WAIT          seconds to wait for the document to be served (default 30), so a
#                              server started in the background just before needs no sleep loop
#   SAGAFLOW_CACHE             where the virtualenv lives (default ~/.cache/sagaflow)
set -euo pipefail

# Exact pin: checks and generators change between 4.x releases, so a new release must not turn a
# green run red by itself. Bump on purpose.
version=4.32.5

if [ $# -lt 1 ]; then
  echo "usage: scripts/schemathesis.sh URL_OF_OPENAPI_JSON [extra st run args]" >&2
  exit 2
fi
schema=$1
shift

# The venv lives outside the repo, so it is neither committed nor wiped with the work tree, and
# is reused as long as it holds the pinned version (`--clear` also repairs a half-made one).
venv=${SAGAFLOW_CACHE:-$HOME/.cache/sagaflow}/schemathesis-venv
if [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("schemathesis"))' 2>/dev/null)" != "$version" ]; then
  echo "installing schemathesis $version into $venv" >&2
  python3 -m venv --clear "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi
[ "$schema" != --install ] || exit 0

# Everything a run would write to the current directory goes to a scratch dir instead:
# Hypothesis' storage (.hypothesis/: unicode tables, constants) via its env var, and
# Schemathesis' own .schemathesis/ state, which is switched off in a config file. Turning that
# cache off also keeps runs independent: otherwise requests found in one run are replayed in the
# next. Passing our own --config-file means a schemathesis.toml in the repo would be ignored.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export HYPOTHESIS_STORAGE_DIRECTORY=$scratch/hypothesis
printf '[cache]\nenabled = false\n' >"$scratch/schemathesis.toml"

# --checks all: status codes, content types, headers and bodies must match the document, no 5xx,
#   schema-valid input must not get 400/422, invalid input must get a 4xx, undeclared methods 405.
# --generation-database none: no example database (Hypothesis' is .hypothesis/ in the cwd).
# All four phases (examples, coverage, fuzzing, stateful) run by default; narrow with --phases.
# Extra args come last, so they override ours (`--exclude-checks X`, `--max-examples N`, ...).
"$venv/bin/st" --config-file "$scratch/schemathesis.toml" run "$schema" \
  --checks all \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-30}" \
  --generation-database none \
  --wait-for-schema "${SCHEMATHESIS_WAIT:-30}" \
  "$@"
