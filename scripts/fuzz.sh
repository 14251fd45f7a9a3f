#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ one after another, each for a given time, and fails if
# any of them found a crash. Not part of CI: fuzzing finds new inputs at random, so a red run
# would not say what a submission broke.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#   SECONDS_PER_TARGET  default 600; the first build comes on top (librdkafka included, about
#                       15 minutes on 2 cores), later ones are incremental
#   TARGET...           default every fuzz/fuzz_targets/*.rs
#
# Stable Rust is enough: with `-s none` (no sanitizer; the fuzzed crates have no unsafe code)
# cargo-fuzz passes rustc only stable `-C` flags, so neither nightly nor RUSTC_BOOTSTRAP is
# needed. Builds use the release profile plus debug assertions and overflow checks, which is
# cargo-fuzz's default.
#
# The seeds in fuzz/corpus/TARGET are tracked. libFuzzer writes every new input into the first
# corpus directory it is given, so it gets a scratch one first, fuzz/target/corpus/TARGET (kept
# across runs, so coverage builds up; ignored by git), and reads the seeds from the second.
# Crashes, timeouts and out-of-memory inputs land in fuzz/artifacts/TARGET/, and each target's
# output in fuzz/target/logs/TARGET.log.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
  exit 2
}

seconds=${1:-600}
case $seconds in '' | *[!0-9]*) usage ;; esac
[ "$seconds" -gt 0 ] || usage
if [ $# -gt 0 ]; then shift; fi

all=()
for file in fuzz/fuzz_targets/*.rs; do
  all+=("$(basename "$file" .rs)")
done
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=("${all[@]}")
fi
for target in "${targets[@]}"; do
  if [ ! -f "fuzz/fuzz_targets/$target.rs" ]; then
    echo "no fuzz target '$target'; there are: ${all[*]}" >&2
    exit 2
  fi
done

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

# Every target shares one build; doing it first keeps it out of the first target's time.
echo "== building ${#targets[@]} fuzz target(s)" >&2
cargo fuzz build -s none

marker=$(mktemp)
trap 'rm -f "$marker"' EXIT
mkdir -p fuzz/target/logs
failed=()
artifacts=()
index=0
for target in "${targets[@]}"; do
  index=$((index + 1))
  scratch=fuzz/target/corpus/$target
  log=fuzz/target/logs/$target.log
  mkdir -p "$scratch"
  touch "$marker"
  echo "== [$index/${#targets[@]}] $target: fuzzing for ${seconds}s (log: $log)" >&2
  started=$(date +%s)
  set +e
  cargo fuzz run -s none "$target" "$scratch" "fuzz/corpus/$target" \
    -- -max_total_time="$seconds" 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
  set -e
  elapsed=$(($(date +%s) - started))
  found=()
  if [ -d "fuzz/artifacts/$target" ]; then
    while IFS= read -r file; do
      found+=("$file")
    done < <(find "fuzz/artifacts/$target" -type f -newer "$marker" | sort)
  fi
  if [ "$status" -eq 0 ] && [ ${#found[@]} -eq 0 ]; then
    echo "== [$index/${#targets[@]}] $target: no crash in ${elapsed}s" >&2
    continue
  fi
  failed+=("$target")
  if [ ${#found[@]} -eq 0 ]; then
    echo "== [$index/${#targets[@]}] $target: FAILED (exit $status) with no artifact; see $log" >&2
  else
    echo "== [$index/${#targets[@]}] $target: FOUND ${#found[@]} failing input(s) after ${elapsed}s" >&2
    for file in "${found[@]}"; do
      artifacts+=("$target $file")
    done
  fi
done

echo >&2
if [ ${#failed[@]} -eq 0 ]; then
  echo "== no crash in ${#targets[@]} target(s), ${seconds}s each" >&2
  exit 0
fi
echo "== failed: ${failed[*]}" >&2
for entry in "${artifacts[@]}"; do
  target=${entry%% *}
  file=${entry#* }
  echo "   $file" >&2
  echo "     reproduce: cargo fuzz run -s none $target $file" >&2
done
exit 1
