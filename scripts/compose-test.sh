#!/usr/bin/env bash
# Checks docker-compose.yml without Docker (none runs here):
#   1. compose-go (the Compose specification's reference library, scripts/compose-check) validates
#      it against the specification's schema and its consistency, and that every service waited
#      for as healthy has a health check, images are pinned, build files and mounts exist;
#   2. every Sagaflow service's command parses with the sagaflow binary this tree builds, and
#      every SAGAFLOW_* variable it sets is one that subcommand reads (a misspelt one would be
#      silently ignored);
#   3. broken copies of the file are refused, so that the checks above can fail.
# compose-check is built once with the Go toolchain (modules from the Go module proxy) into
# ${SAGAFLOW_CACHE:-${XDG_CACHE_HOME:-~/.cache}/sagaflow}/compose-check-<hash of its source>.
#
#   scripts/compose-test.sh [SAGAFLOW_BINARY]   default target/debug/sagaflow
set -euo pipefail
cd "$(dirname "$0")/.."
me=compose-test.sh

sagaflow=${1:-target/debug/sagaflow}
[ -x "$sagaflow" ] || { echo "$me: $sagaflow is missing; build it first (cargo build -p sagaflow)" >&2; exit 1; }
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
checker=$(go_tool compose-check)

work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

# 2: the services' commands and variables, against the binary. FILE is checked by compose-check
# first; prints nothing and fails with each problem on stderr.
check_services() {
  "$checker" "$1" > "$work/services.jsonl"
  python3 - "$sagaflow" "$work/services.jsonl" "$1" <<'EOF'
import json, re, subprocess, sys
sagaflow, services, file = sys.argv[1:4]

def accepted(sub):
    """The SAGAFLOW_* variables subcommand `sub` reads: clap's `[env: X]`, and for the engine
    every configuration key (SAGAFLOW_<KEY>, which `sagaflow engine --help` lists)."""
    out = subprocess.run([sagaflow, sub, "--help"], capture_output=True, text=True, check=True).stdout
    names = set(re.findall(r"env: (SAGAFLOW_[A-Z0-9_]+)", out))
    if sub == "engine":
        names |= {"SAGAFLOW_" + k.upper().replace("-", "_")
                  for k in re.findall(r"^([a-z][a-z0-9-]*) = ", out, re.M)}
    return names

problems, checked = [], 0
for line in open(services):
    s = json.loads(line)
    if s["image"] != "sagaflow:local":
        continue
    args = s["command"] or []
    tool = s["entrypoint"] == ["sagaflow"]
    if tool:
        # A tool service (`docker compose run --rm cli start ...`): its variables serve whichever
        # subcommand runs, so each must be read by one of them.
        args = ["start"]
    sub = args[0]
    # clap refuses an unknown subcommand or flag before it gets to --help.
    run = subprocess.run([sagaflow, *args, "--help"], capture_output=True, text=True)
    if run.returncode != 0:
        problems.append(f"service {s['name']}: `sagaflow {' '.join(args)}` does not parse: {run.stderr.strip()}")
        continue
    if tool:
        top = subprocess.run([sagaflow, "--help"], capture_output=True, text=True, check=True).stdout
        subs = re.findall(r"^  ([a-z][a-z-]*) ", top.split("Commands:", 1)[1], re.M)
        ok = set().union(*(accepted(c) for c in subs if c != "help"))
    else:
        ok = accepted(sub)
    for var in sorted(s["environment"]):
        if var.startswith("SAGAFLOW_KAFKA_"):
            continue  # librdkafka properties, read by every subcommand
        if var.startswith("SAGAFLOW_") and var not in ok:
            problems.append(f"service {s['name']}: `sagaflow {sub}` does not read {var}")
    checked += 1
for p in problems:
    print(f"{file}: {p}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"compose: {checked} Sagaflow services: commands parse, every SAGAFLOW_* variable is read", file=sys.stderr)
EOF
}
check_services docker-compose.yml

# 3: broken copies must be refused, each for its own reason.
refuse() {
  local what=$1 expect=$2 out
  if out=$(cd "$work" && "$checker" broken.yml 2>&1 >/dev/null); then
    echo "$me: a file with $what was accepted" >&2; exit 1
  fi
  grep -q -- "$expect" <<<"$out" || { echo "$me: a file with $what was refused for another reason: $out" >&2; exit 1; }
}
cp -r examples Dockerfile "$work/"
sed 's/^  postgres:$/  postgres:\n    restart_policy: always/' docker-compose.yml > "$work/broken.yml"
refuse "a key the specification does not have" "restart_policy"
python3 - docker-compose.yml "$work/broken.yml" <<'EOF'
import sys
text = open(sys.argv[1]).read()
# Drop the schema registry's health check: kafka's stays, so the file is still valid YAML.
start = text.index("\n  schema-registry:\n")
block = text.index("    healthcheck:", start)
end = text.index("\n\n", block)
open(sys.argv[2], "w").write(text[:block] + text[end + 1:])
EOF
refuse "a dependency waited for as healthy without a health check" 'waits for "schema-registry" to be healthy'
sed 's|image: postgres:17|image: postgres|' docker-compose.yml > "$work/broken.yml"
refuse "an unpinned image" "not pinned"
sed 's|SAGAFLOW_HTTP_LISTEN:|SAGAFLOW_HTTP_LISTN:|' docker-compose.yml > "$work/broken.yml"
if out=$(check_services "$work/broken.yml" 2>&1); then
  echo "$me: a misspelt SAGAFLOW_ variable was accepted" >&2; exit 1
fi
grep -q "does not read SAGAFLOW_HTTP_LISTN" <<<"$out" || { echo "$me: a misspelt variable was refused for another reason: $out" >&2; exit 1; }
echo "compose: docker-compose.yml is valid (compose-go $(sed -n 's/.*compose-go\/v2 \(v[0-9.]*\).*/\1/p' scripts/compose-check/go.mod)); 4 broken copies refused" >&2
