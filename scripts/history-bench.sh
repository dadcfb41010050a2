#!/usr/bin/env bash
# History on one node (the in-memory engine), each against history off with the same binary:
#   1. publishes per second: 20,000 messages to one subscriber through POST /ws/batch (1,000 per
#      request), so the cost per publish (offset, keeping, framing) is what is measured
#   2. a reconnect storm: 10,000 clients come back at once and each recovers the 100 messages it
#      missed of one event (subscribe with recover): time until all have them, server memory peak
#   3. server memory per idle connection with history on and off (scripts/density.sh)
# Server on core 0 (one reactor), generator on core 1; loopback only; about 2 minutes; stops what
# it started. Writes target/bench/history-<time>.md and prints it.
#   scripts/history-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
SECRET=history-bench-$$
PORT=${PORT:-18420}
OUT=target/bench
mkdir -p "$OUT"
cargo build --release --quiet --bin wsedge --bin wsedge-bench
B="taskset -c 1 ./target/release/wsedge-bench"
RESULTS=$(mktemp)
SERVER=
trap '[ -n "$SERVER" ] && stop "$SERVER"; rm -f "$RESULTS"' EXIT
serve() {
  taskset -c 0 ./target/release/wsedge serve --listen "127.0.0.1:$PORT" --workers 1 --jwt-secret "$SECRET" \
    --max-connections 30000 --max-connections-per-ip 0 --rate-limit-messages 0 --log-level warn "$@" &
  SERVER=$!
  wait_port "$PORT"
}
for size in 100 0; do
  label="history $([ "$size" = 0 ] && echo off || echo on)"
  # A backlog big enough for 20,000 messages at once (the subscriber is not what is measured).
  serve --history-size "$size" --max-outbound-bytes 67108864 --admin-max-body 1048576
  echo ">> $label: publishes" >&2
  $B fanout --url "ws://127.0.0.1:$PORT/ws" --conns 1 --msgs 20000 --rate 1000000 --admin-mode batch \
    --batch-size 1000 --secret "$SECRET" --pid "$SERVER" --json | sed "s/^{/{\"label\":\"$label\",/" >> "$RESULTS"
  stop "$SERVER"
  if [ "$size" != 0 ]; then
    serve --history-size "$size"
    echo ">> $label: recovery storm" >&2
    $B recover-storm --url "ws://127.0.0.1:$PORT/ws" --secret "$SECRET" --pid "$SERVER" --conns 10000 --missed 100 \
      --json | sed "s/^{/{\"label\":\"$label\",/" >> "$RESULTS"
    stop "$SERVER"
  fi
  SERVER=
  echo ">> $label: density" >&2
  SERVER_FLAGS="--history-size $size" PORT=$((PORT + 1)) scripts/density.sh 19000 1 --json \
    | grep '^{' | sed "s/^{/{\"label\":\"$label\",/" >> "$RESULTS"
done
REPORT="$OUT/history-$(date +%Y%m%d-%H%M%S).md"
python3 - "$RESULTS" > "$REPORT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print("| history | measure | result |")
print("| --- | --- | --- |")
for r in rows:
    s = r["scenario"]
    if s == "fanout":
        print(f"| {r['label']} | publishes to one subscriber, batches of 1,000 | {r['deliveries_per_second']:,.0f} publishes/s, server {r['server_cpu_us_per_delivery']} µs each |")
    elif s == "recover-storm":
        print(f"| {r['label']} | {r['clients']:,} clients each recover {r['messages_each']} | all in {r['seconds_until_all_recovered']:.2f} s ({r['replayed_messages_per_second']:,.0f} replayed/s), server peak RSS +{r['server_peak_rss_growth_bytes'] / 2**20:.1f} MiB, {r['out_of_order_or_duplicate']} out of order or doubled |")
    elif s == "density":
        print(f"| {r['label']} | idle connections ({r['connections']:,}) | {r['bytes_per_connection_idle']:.0f} B per connection |")
PY
cat "$REPORT"
echo "(written to $REPORT)"
