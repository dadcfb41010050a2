#!/usr/bin/env bash
# Fan-out through Redis, side by side with the same runs on one node. Servers (wsedge nodes,
# one reactor each, and redis-server) share core 0, the load generator core 1, so a cluster
# gets the same CPU as the single node it is compared with.
#   1. one node: 10,000 subscribers; 100 publishes one at a time, then a burst of 200
#   2. two nodes on one port (SO_REUSEPORT, the kernel splits the subscribers), publishes
#      through node A's admin API: the same two runs, plus PUBLISH commands per message
#      (INFO commandstats, minus the nodes' own probes, twice a second)
#   3. the saturating case: every subscriber on node B, the burst of 200 published on node A,
#      so every message crosses Redis
# Loopback only, bounded (~2 minutes), stops what it started. Writes
# target/bench/cluster-<time>.md and prints it.
#   scripts/cluster-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
command -v redis-server >/dev/null || { echo "needs redis-server (apt-get install redis-server)" >&2; exit 1; }
SECRET=bench-secret-$$
REDIS_PORT=${REDIS_PORT:-16390}
PORT=${PORT:-18190}
OUT=target/bench
mkdir -p "$OUT"
cargo build --release --quiet --bin wsedge --bin wsedge-bench
B="taskset -c 1 ./target/release/wsedge-bench"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do stop "$p"; done; rm -rf "$WORK"; }
WORK=$(mktemp -d)
trap cleanup EXIT
RESULTS="$WORK/results"

serve() { # serve PORT [extra flags...]: a node on core 0; prints its PID
  local port=$1; shift
  taskset -c 0 ./target/release/wsedge serve --listen "127.0.0.1:$port" --workers 1 --jwt-secret "$SECRET" \
    --max-connections 30000 --max-connections-per-ip 0 --rate-limit-messages 0 --max-connections-per-user 10 \
    --log-level warn "$@" >/dev/null 2>&1 &
  echo $!
}
metric() { # metric ADMIN_PORT NAME
  curl -s "http://127.0.0.1:$1/metrics" | awk -v n="wsedge_$2" '$1 == n { print $2 }'
}
publishes() { redis-cli -p "$REDIS_PORT" info commandstats | sed -nE 's/^cmdstat_publish:calls=([0-9]+).*/\1/p'; }
run() { # run LABEL ARGS...
  local label=$1; shift
  echo ">> $label: $*" >&2
  $B fanout "$@" --secret "$SECRET" --json | sed "s/^{/{\"label\":\"$label\",/" >> "$RESULTS"
}

# 1. One node.
P=$(serve "$PORT")
PIDS+=("$P")
wait_port "$PORT"
run "one node" --url "ws://127.0.0.1:$PORT/ws" --conns 10000 --msgs 100 --pid "$P"
run "one node" --url "ws://127.0.0.1:$PORT/ws" --conns 10000 --msgs 200 --rate 1000000 --pid "$P"
stop "$P"

# 2. Two nodes on one port.
taskset -c 0 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" \
  >/dev/null 2>&1 &
R=$!
PIDS+=("$R")
wait_port "$REDIS_PORT"
CLUSTER=(--redis "redis://127.0.0.1:$REDIS_PORT" --reuse-port)
A=$(serve "$PORT" "${CLUSTER[@]}" --node-id a --admin-listen "127.0.0.1:$((PORT + 1))")
PIDS+=("$A")
NB=$(serve "$PORT" "${CLUSTER[@]}" --node-id b --admin-listen "127.0.0.1:$((PORT + 2))")
PIDS+=("$NB")
wait_port "$((PORT + 1))"
wait_port "$((PORT + 2))"
for port in $((PORT + 1)) $((PORT + 2)); do
  for _ in $(seq 100); do [ "$(metric "$port" cluster_up)" = 1 ] && break; sleep 0.1; done
done
for msgs in 100 200; do
  rate=0
  [ "$msgs" = 200 ] && rate=1000000
  pub0=$(publishes)
  probes0=$(( $(metric $((PORT + 1)) cluster_probes_total) + $(metric $((PORT + 2)) cluster_probes_total) ))
  run "two nodes, subscribers on both" --url "ws://127.0.0.1:$PORT/ws" --admin-addr "127.0.0.1:$((PORT + 1))" \
    --conns 10000 --msgs "$msgs" --rate "$rate" --pid "$A" --also-pid "$NB" --also-pid "$R"
  probes=$(( $(metric $((PORT + 1)) cluster_probes_total) + $(metric $((PORT + 2)) cluster_probes_total) - probes0 ))
  echo "{\"label\":\"redis\",\"messages\":$msgs,\"publish_calls\":$(( $(publishes) - pub0 )),\"probes\":$probes}" >> "$RESULTS"
done
stop "$A"
stop "$NB"

# 3. Every message through Redis: subscribers on B, publisher on A.
A=$(serve "$PORT" "${CLUSTER[@]}" --node-id a --admin-listen "127.0.0.1:$((PORT + 1))")
PIDS+=("$A")
NB=$(serve "$((PORT + 3))" "${CLUSTER[@]}" --node-id b)
PIDS+=("$NB")
wait_port "$((PORT + 1))"
wait_port "$((PORT + 3))"
for _ in $(seq 100); do [ "$(metric $((PORT + 1)) cluster_up)" = 1 ] && break; sleep 0.1; done
run "through redis: subscribers on B, publishes on A" --url "ws://127.0.0.1:$((PORT + 3))/ws" \
  --admin-addr "127.0.0.1:$((PORT + 1))" --conns 10000 --msgs 200 --rate 1000000 --pid "$NB" --also-pid "$A" --also-pid "$R"

REPORT="$OUT/cluster-$(date +%Y%m%d-%H%M%S).md"
python3 - "$RESULTS" > "$REPORT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print("| setup | run | deliveries/s | p50 / p99 to last subscriber (µs) | server CPU per delivery (µs) | notes |")
print("| --- | --- | --- | --- | --- | --- |")
for r in rows:
    if r["label"] == "redis":
        per = (r["publish_calls"] - r["probes"]) / r["messages"]
        print(f"| redis | {r['messages']} messages | | | | {r['publish_calls']} PUBLISH calls, {r['probes']} of them probes: **{per:g} PUBLISH per message** |")
        continue
    run = f"burst {r['messages']} x {r['subscribers']}" if r.get("burst") else f"{r['messages']} one at a time to {r['subscribers']}"
    print(f"| {r['label']} | {run} | {r['deliveries_per_second']:.0f} | {r['last_subscriber_latency_p50_us']} / {r['last_subscriber_latency_p99_us']} | {r['server_cpu_us_per_delivery']} | lost {r['lost']}, duplicated {r['duplicated']} |")
PY
cat "$REPORT"
echo "(written to $REPORT)"
