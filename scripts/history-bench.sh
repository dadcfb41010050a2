#!/usr/bin/env bash
# History on each engine (one node in memory; a node on Redis), each against history off with
# the same binary:
#   1. publishes per second: 20,000 messages to one subscriber through POST /ws/batch (1,000 per
#      request), so the cost per publish (offset, keeping, framing) is what is measured
#   2. a reconnect storm: 10,000 clients come back at once and each recovers the 100 messages it
#      missed of one event (subscribe with recover): time until all have them, server memory peak
#   3. server memory per idle connection with history on and off (scripts/density.sh)
# Server (and redis-server) on core 0 (one reactor), generator on core 1; loopback only; about 4
# minutes; stops what it started. Writes target/bench/history-<time>.md and prints it.
#   scripts/history-bench.sh            (ENGINES="memory redis" by default)
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
WORK=$(mktemp -d)
SERVER=
REDIS=
REDIS_PORT=$((PORT + 10))
trap '[ -n "$SERVER" ] && stop "$SERVER"; [ -n "$REDIS" ] && stop "$REDIS"; rm -rf "$RESULTS" "$WORK"' EXIT
ENGINE_FLAGS=()
serve() {
  taskset -c 0 ./target/release/wsedge serve --listen "127.0.0.1:$PORT" --workers 1 --jwt-secret "$SECRET" \
    --max-connections 30000 --max-connections-per-ip 0 --rate-limit-messages 0 --log-level warn --public-metrics \
    "${ENGINE_FLAGS[@]}" "$@" &
  SERVER=$!
  wait_port "$PORT"
  # A cluster node is measured once it reaches Redis.
  for _ in $(seq 100); do
    [ ${#ENGINE_FLAGS[@]} = 0 ] && break
    curl -s "http://127.0.0.1:$PORT/metrics" | grep -q '^wsedge_cluster_up 1' && break
    sleep 0.1
  done
}
for engine in ${ENGINES:-memory redis}; do
if [ "$engine" = redis ]; then
  command -v redis-server >/dev/null || { echo "needs redis-server (apt-get install redis-server)" >&2; exit 1; }
  taskset -c 0 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" \
    >/dev/null 2>&1 &
  REDIS=$!
  wait_port "$REDIS_PORT"
fi
for size in 100 0; do
  label="$engine, history $([ "$size" = 0 ] && echo off || echo on)"
  [ "$engine" = redis ] && ENGINE_FLAGS=(--redis "redis://127.0.0.1:$REDIS_PORT" --redis-prefix "hb$size-$RANDOM")
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
  SERVER_FLAGS="--history-size $size ${ENGINE_FLAGS[*]}" PORT=$((PORT + 1)) scripts/density.sh 19000 1 --json \
    | grep '^{' | sed "s/^{/{\"label\":\"$label\",/" >> "$RESULTS"
done
done
REPORT="$OUT/history-$(date +%Y%m%d-%H%M%S).md"
python3 - "$RESULTS" > "$REPORT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print("| engine, history | measure | result |")
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
