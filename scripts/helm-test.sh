#!/usr/bin/env bash
# Checks the Helm chart (helm/sagaflow) offline: `helm lint --strict` and `helm template` with
# the default values, the production values (helm/sagaflow/ci/production-values.yaml) and the
# production values with the scale-down hook Job and the example participants rendered, then
# validates every rendered manifest against the Kubernetes API schemas with kubernetes-validate
# (strict: unknown fields are errors). Also checks that the PrometheusRule names only metrics the
# code exports, and that the checks can fail: values.schema.json must refuse bad values, and
# kubernetes-validate must refuse broken manifests. Exits non-zero on any failure.
#
# Usage: scripts/helm-test.sh
#
# Helm 4 is built once with `go install` (a few minutes on two cores) and kubernetes-validate
# installed once into a virtualenv, both in the cache, outside the clone; warm runs take seconds.
# Env:
#   SAGAFLOW_CACHE   where they live (default ${XDG_CACHE_HOME:-~/.cache}/sagaflow)
set -euo pipefail
cd "$(dirname "$0")/.."

# Exact pins: a new release must not turn a green run red by itself. Bump on purpose.
helm_version=v4.3.1
kubernetes_validate_version=1.37.0

chart=helm/sagaflow
cache=${SAGAFLOW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sagaflow}

# `go install` stamps the module version into the binary (`helm version` shows only v4.3), so
# `go version -m` tells whether the cached binary is the pinned one.
helm_dir=$cache/helm-$helm_version
helm=$helm_dir/helm
if ! go version -m "$helm" 2>/dev/null | grep -Eq "^[[:space:]]+mod[[:space:]]+helm\.sh/helm/v4[[:space:]]+$helm_version[[:space:]]"; then
  command -v go >/dev/null 2>&1 || {
    echo "helm-test.sh: Helm $helm_version is built with the Go toolchain, which is missing: install Go 1.26 or newer (https://go.dev/dl)" >&2
    exit 1
  }
  echo "installing helm $helm_version into $helm_dir (go install, a few minutes)" >&2
  mkdir -p "$helm_dir"
  GOBIN=$helm_dir go install "helm.sh/helm/v4/cmd/helm@$helm_version" >&2 || {
    echo "helm-test.sh: go install helm.sh/helm/v4/cmd/helm@$helm_version failed with $(go version) (output above); a Go older than helm's go.mod asks for is the usual cause: install a newer one (https://go.dev/dl)" >&2
    exit 1
  }
fi

# kubernetes-validate bundles the API schemas of each Kubernetes release it supports, so it works
# offline. `--clear` also repairs a half-made venv.
venv=$cache/kubernetes-validate-venv
if [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))' 2>/dev/null)" != "$kubernetes_validate_version" ]; then
  echo "installing kubernetes-validate $kubernetes_validate_version into $venv" >&2
  python3 -m venv --clear "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$kubernetes_validate_version" >&2
fi
# The newest Kubernetes it has schemas for; helm renders for the same (.Capabilities.KubeVersion).
kube_version=$("$venv/bin/python" -c 'from kubernetes_validate.utils import latest_version; print(latest_version())')
echo "helm $helm_version, kubernetes-validate $kubernetes_validate_version, Kubernetes $kube_version"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "ok: $*"; }
fail() { failed=$((failed + 1)); echo "FAILED: $*"; }

# Validates the manifests of each file given; prints one line per skipped CRD kind and per
# error, and a count per file. Exit 1 on any error. With --expect-invalid FILE it instead checks
# that every manifest of FILE is refused (the negative check).
cat >"$work/validate.py" <<'EOF'
import sys

import yaml
from kubernetes_validate import utils

# Custom resources have no schema among the bundled ones (they come with their CRDs), so they
# are skipped, saying so, instead of failing as unknown kinds.
CRDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}


def errors_of(doc, version):
    try:
        utils.validate(doc, version, strict=True)
        return None
    except utils.ValidationError as e:
        where = "/".join(str(p) for p in e.path) or "(top)"
        return f"at {where}: {e.message}"
    except utils.SchemaNotFoundError as e:
        return e.message


def manifests(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


version, args = sys.argv[1], sys.argv[2:]
if args[0] == "--expect-invalid":
    bad = 0
    for doc in manifests(args[1]):
        error = errors_of(doc, version)
        label = doc["metadata"]["name"]
        if error is None:
            print(f"  accepted, but it is broken: {label}")
            bad += 1
        else:
            print(f"  refused as it should be: {label}: {error}")
    sys.exit(1 if bad else 0)

total_errors = 0
for path in args:
    valid = skipped = 0
    for doc in manifests(path):
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if (doc.get("apiVersion"), doc.get("kind")) in CRDS:
            print(f"  skipped {name}: a custom resource, no schema offline (its CRD brings it)")
            skipped += 1
            continue
        error = errors_of(doc, version)
        if error:
            print(f"  INVALID {name} {error}")
            total_errors += 1
        else:
            valid += 1
    print(f"  {path.rsplit('/', 1)[-1]}: {valid} manifests valid, {skipped} skipped")
    if valid == 0:
        print("  INVALID: nothing rendered")
        total_errors += 1
sys.exit(1 if total_errors else 0)
EOF
validate() { "$venv/bin/python" "$work/validate.py" "$kube_version" "$@"; }

# Value sets: name, then helm arguments. The hook Job needs `lookup` (a live cluster) in "auto"
# mode, so the third set renders it through "maxReplicas".
production=(-f "$chart/ci/production-values.yaml")
cases=(default production production-hooks)
args_default=()
args_production=("${production[@]}")
args_production_hooks=("${production[@]}" --set engine.scaleDown.removeMembers=maxReplicas
  --set participants.enabled=true)

for case in "${cases[@]}"; do
  declare -n args="args_${case//-/_}"
  if out=$("$helm" lint --strict --kube-version "$kube_version" "$chart" "${args[@]}" 2>&1); then
    pass "helm lint --strict ($case)"
  else
    echo "$out"
    fail "helm lint --strict ($case)"
  fi
  if "$helm" template sagaflow "$chart" --namespace sagaflow --kube-version "$kube_version" \
    "${args[@]}" >"$work/$case.yaml"; then
    if validate "$work/$case.yaml"; then
      pass "kubernetes-validate --strict ($case)"
    else
      fail "kubernetes-validate --strict ($case)"
    fi
  else
    fail "helm template ($case)"
  fi
  unset -n args
done
grep -q '^kind: Job$' "$work/production-hooks.yaml" && pass "the scale-down hook Job renders" ||
  fail "the scale-down hook Job did not render"

# Every metric the alerts use must exist in the code: engine counters are declared in the
# counters! macro without their sagaflow_ prefix, the rest are spelled out.
missing=()
for metric in $(sed -n '/^kind: PrometheusRule$/,/^---$/p' "$work/production.yaml" |
  grep -oE 'sagaflow_[a-z_]+' | sort -u); do
  grep -rqE "\"$metric([^a-z_]|\$)" engine projections --include='*.rs' ||
    grep -qE "^[[:space:]]+${metric#sagaflow_} =>" engine/runtime/src/metrics.rs ||
    missing+=("$metric")
done
if [ ${#missing[@]} -eq 0 ]; then
  pass "every metric the PrometheusRule names is exported by the code"
else
  fail "the PrometheusRule names metrics the code does not export: ${missing[*]}"
fi

# Helm reads no file outside the chart, so the default definition is a copy of the example.
if cmp -s examples/trip.yaml "$chart/files/trip.yaml"; then
  pass "the chart's files/trip.yaml is examples/trip.yaml"
else
  fail "helm/sagaflow/files/trip.yaml differs from examples/trip.yaml: cp examples/trip.yaml helm/sagaflow/files/trip.yaml"
fi

# Negative checks: each must be refused, for the stated reason.
refused() { # description, expected text, command...
  local what=$1 expect=$2
  shift 2
  local out
  if out=$("$@" 2>&1); then
    fail "$what: accepted"
  elif grep -qF -- "$expect" <<<"$out"; then
    pass "$what: refused"
  else
    echo "$out"
    fail "$what: refused, but not with \"$expect\""
  fi
}
template=("$helm" template sagaflow "$chart" --kube-version "$kube_version")
refused "values.schema.json, a string for engine.replicas" "/engine/replicas" \
  "${template[@]}" --set-string engine.replicas=3
refused "values.schema.json, a misspelled key (engine.replica)" "'replica' not allowed" \
  "${template[@]}" --set engine.replica=3
refused "values.schema.json, session-timeout-ms beside static membership" "/engine/config" \
  "${template[@]}" --set engine.config.session-timeout-ms=30000
refused "the chart, engine.replicas above engine.maxReplicas" "exceeds engine.maxReplicas" \
  "${template[@]}" --set engine.replicas=17
# The engine refuses these at start (engine/runtime/src/config.rs): the schema refuses them first.
refused "values.schema.json, max-batch-bytes below the engine's 10000" "/engine/config/max-batch-bytes" \
  "${template[@]}" --set engine.config.max-batch-bytes=4096
refused "values.schema.json, evict-silent-peers-ms between 1 and 999" "/engine/config/evict-silent-peers-ms" \
  "${template[@]}" --set engine.config.evict-silent-peers-ms=500
refused "the chart, both registry credentials" "registry.basicAuth and registry.bearerToken" \
  "${template[@]}" --set registry.basicAuth.existingSecret=a --set registry.bearerToken.existingSecret=b

# kubernetes-validate must refuse broken manifests: the rendered StatefulSet with a field
# Kubernetes does not know (strict), and with a string for replicas.
sed -n '/^kind: StatefulSet$/,/^---$/p' "$work/default.yaml" | sed '/^---$/d' >"$work/sts.yaml"
{
  echo "apiVersion: apps/v1"
  sed -e '/^apiVersion:/d' -e 's/^  serviceName: /  servicename: /' "$work/sts.yaml"
  echo "---"
  echo "apiVersion: apps/v1"
  sed -e '/^apiVersion:/d' -e 's/^  replicas: .*/  replicas: "three"/' "$work/sts.yaml"
} >"$work/broken.yaml"
if [ "$(grep -c '^kind: StatefulSet$' "$work/broken.yaml")" = 2 ] &&
  validate --expect-invalid "$work/broken.yaml"; then
  pass "kubernetes-validate refuses broken manifests"
else
  fail "kubernetes-validate accepted a broken manifest"
fi

echo "helm-test: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
