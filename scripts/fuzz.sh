#!/usr/bin/env bash
# Runs every fuzz target (tests/fuzz) for SECONDS each (default 60), two at a time, and prints
# each target's executions and result. Needs the nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz`). A crash stops with its input under tests/fuzz/artifacts/;
# turn it into a regression test before fixing it.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# FUZZ_RUNS=N also stops each target after N executions (whichever comes first).
# Built without a sanitizer: wsedge has no unsafe code, and ASan makes the targets ~10x slower.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  mapfile -t TARGETS < <(cargo +nightly fuzz list --fuzz-dir tests/fuzz)
fi
FUZZ=(cargo +nightly fuzz)
OPTS=(--fuzz-dir tests/fuzz -s none)
"${FUZZ[@]}" build "${OPTS[@]}" >&2
RUNS=()
if [ -n "${FUZZ_RUNS:-}" ]; then RUNS=(-runs="$FUZZ_RUNS"); fi
LOGS=$(mktemp -d)
trap 'rm -rf "$LOGS"' EXIT
run() {
  local t=$1
  mkdir -p "tests/fuzz/corpus/$t"
  local dict=()
  if [ -e "tests/fuzz/dicts/$t.dict" ]; then dict=(-dict="tests/fuzz/dicts/$t.dict"); fi
  if "${FUZZ[@]}" run "${OPTS[@]}" "$t" -- -max_total_time="$SECS" "${RUNS[@]}" "${dict[@]}" \
      -rss_limit_mb=4096 >"$LOGS/$t.log" 2>&1; then
    echo "ok"
  else
    echo "FAILED"
  fi
}
STATUS=0
for ((i = 0; i < ${#TARGETS[@]}; i += 2)); do
  pids=()
  for t in "${TARGETS[@]:i:2}"; do
    (echo "$t $(run "$t")" >"$LOGS/$t.result") &
    pids+=($!)
  done
  wait "${pids[@]}"
done
printf '%-18s %-7s %s\n' target result executions
for t in "${TARGETS[@]}"; do
  read -r _ result <"$LOGS/$t.result"
  execs=$(grep -oE '#[0-9]+' "$LOGS/$t.log" | tail -1 | tr -d '#')
  printf '%-18s %-7s %s\n' "$t" "$result" "${execs:-?}"
  if [ "$result" != ok ]; then
    STATUS=1
    tail -n 40 "$LOGS/$t.log"
  fi
done
exit $STATUS
