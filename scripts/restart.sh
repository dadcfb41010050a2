#!/usr/bin/env bash
# A restart that refuses no one: a server holding 1,000 connections while handshakes arrive at a
# steady 2,000 per second is replaced by a new process (started with the same --handover-socket,
# which takes over the listening sockets); the old one drains (1001, in batches over
# --drain-window 5) and exits. Prints the handshakes made and failed (refused, reset or
# unanswered: the goal is 0) and how and when the held connections were closed. Servers on core
# 0 (one reactor each), the generator on core 1; loopback; about 30 seconds.
# Writes target/bench/restart-<time>.md and prints it.
#   scripts/restart.sh [RATE] [HOLD]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
RATE=${1:-2000}
HOLD=${2:-1000}
SECRET=restart-bench-$$
PORT=${PORT:-18470}
OUT=target/bench
mkdir -p "$OUT"
cargo build --release --quiet --bin wsedge --bin wsedge-bench
WORK=$(mktemp -d)
SOCK="$WORK/handover.sock"
OLD=
NEW=
trap '[ -n "$OLD" ] && stop "$OLD"; [ -n "$NEW" ] && stop "$NEW"; rm -rf "$WORK"' EXIT
serve() {
  taskset -c 0 ./target/release/wsedge serve --listen "127.0.0.1:$PORT" --workers 1 --jwt-secret "$SECRET" \
    --max-connections 30000 --max-connections-per-ip 0 --rate-limit-messages 0 --log-level warn \
    --drain-window 5 --handover-socket "$SOCK" > /dev/null &
  LAST=$!
}
serve
OLD=$LAST
wait_port "$PORT"
taskset -c 1 ./target/release/wsedge-bench restart-stream --url "ws://127.0.0.1:$PORT/ws" --secret "$SECRET" \
  --hold "$HOLD" --rate "$RATE" --secs 15 --json > "$WORK/result.json" &
BENCH=$!
sleep 5
echo ">> starting the new process (the old one holds $HOLD connections)" >&2
serve
NEW=$LAST
STARTED=$(date +%s.%N)
# The old process exits once it has drained.
while kill -0 "$OLD" 2>/dev/null; do sleep 0.1; done
EXITED=$(date +%s.%N)
OLD=
wait "$BENCH"
REPORT="$OUT/restart-$(date +%Y%m%d-%H%M%S).md"
python3 - "$WORK/result.json" "$STARTED" "$EXITED" > "$REPORT" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
took = float(sys.argv[3]) - float(sys.argv[2])
print("| measure | result |")
print("| --- | --- |")
print(f"| handshakes at {r['rate']:,.0f}/s through the restart | {r['handshakes']:,} made, **{r['handshakes_failed']} failed, {r['handshakes_unanswered']} unanswered** |")
print(f"| connections held by the old process | {r['held']:,}; closed with: {r['held_closes_by_code']} |")
print(f"| from the new process's start to the old one's exit | {took:.1f} s (drain window 5 s) |")
PY
cat "$REPORT"
echo "(written to $REPORT)"
