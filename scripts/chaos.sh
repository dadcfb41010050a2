#!/usr/bin/env bash
# Fault scenarios against a real cluster under steady publish load: one redis-server, two wsedge
# nodes (node b's Redis link through a TCP proxy that can stall or cut it alone), 100 clients per
# node and ~200 publishes/s through both admin APIs. Scenarios, with history on and off: Redis
# frozen (SIGSTOP 5 s), Redis killed and restarted empty, Redis killed and restarted with its AOF
# (history on), b's link stalled 5 s, b's link cut, b's password refused 5 s. One markdown table
# per scenario: publishes answered 2xx / 504 / 503 / other, delivered, lost after 2xx (goal 0),
# duplicates, 1012 closes (needless: goal 0 with history on), time to detect (/ready 503) and to
# full service. The checks and what they leave out: the docstring of scripts/chaos.py.
# Loopback only, bounded (~3 minutes), stops what it started. Writes target/bench/chaos-<time>.md
# (node and Redis logs beside it, in chaos-<time>-logs/) and prints it.
#   scripts/chaos.sh [SCENARIO...]     (frozen restart-empty restart-aof b-stall b-cut b-password)
# Env: WSEDGE_BIN (skip the build, use this binary), CHAOS_LOG_LEVEL (warn; debug to diagnose), CHAOS_PORT (19400: ports from there, 10 per
# run), CHAOS_RATE (200), CHAOS_SUBS (100 per node), CHAOS_STEADY (5), CHAOS_FAULT (5).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
python3 -c 'import websockets' 2>/dev/null || python3 -m pip install -q websockets
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "needs redis-server and redis-cli (apt-get install redis-server)" >&2
    exit 1
  fi
fi
if [ -z "${WSEDGE_BIN:-}" ]; then
  cargo build --release --quiet --bin wsedge
  WSEDGE_BIN=./target/release/wsedge
fi
OUT=target/bench
mkdir -p "$OUT"
STAMP=$(date +%Y%m%d-%H%M%S)
REPORT="$OUT/chaos-$STAMP.md"
WORK=$(mktemp -d)
PY=
cleanup() {
  [ -n "$PY" ] && stop "$PY"
  # Whatever chaos.py started and could not stop itself (a frozen Redis is thawed first).
  if [ -f "$WORK/pids" ]; then
    while read -r p; do kill -CONT "$p" 2>/dev/null || true; stop "$p"; done < "$WORK/pids"
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
python3 scripts/chaos.py --bin "$WSEDGE_BIN" --work "$WORK" --out "$REPORT" --logs "$OUT/chaos-$STAMP-logs" "$@" &
PY=$!
wait "$PY"
PY=
echo "(written to $REPORT)"
