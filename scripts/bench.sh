#!/usr/bin/env bash
# The standard benchmark set against the wsedge protocol server (JWT auth, 1 reactor pinned to
# core 0; the load generator pinned to core 1): density at 19,000; echo (ping/pong) on 100 and
# 1,000 connections, 32 B; fan-out to 1,000 and 10,000 subscribers through the admin API (one
# publish at a time, then a burst of 200 at once over a keep-alive connection and as batches);
# 20,000 handshakes at concurrency 50; churn. Loopback only, bounded (~3 minutes), stops what
# it started. Writes target/bench/bench-<time>.md and prints it.
#   scripts/bench.sh [SECS]     (seconds per echo run, default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
SECS=${1:-10}
PORT=${PORT:-18090}
SECRET=bench-secret-$$
OUT=target/bench
mkdir -p "$OUT"
cargo build --release --quiet --bin wsedge --bin wsedge-bench
B="taskset -c 1 ./target/release/wsedge-bench"
taskset -c 0 ./target/release/wsedge serve --listen "127.0.0.1:$PORT" --workers 1 --jwt-secret "$SECRET" \
  --max-connections 30000 --max-connections-per-ip 0 --rate-limit-messages 0 --max-connections-per-user 10 \
  --log-level warn &
SERVER=$!
trap 'stop $SERVER' EXIT
wait_port "$PORT"
URL="ws://127.0.0.1:$PORT/ws"
RESULTS=$(mktemp)
run() { echo ">> $*" >&2; $B "$@" --pid "$SERVER" --secret "$SECRET" --json | tee -a "$RESULTS"; }
run density --url "$URL" --conns 19000 --idle-secs 5 >/dev/null
run echo --url "$URL" --conns 100 --secs "$SECS" --size 32 >/dev/null
run echo --url "$URL" --conns 1000 --secs "$SECS" --size 32 >/dev/null
run fanout --url "$URL" --conns 1000 --msgs 200 >/dev/null
run fanout --url "$URL" --conns 10000 --msgs 20 >/dev/null
run fanout --url "$URL" --conns 10000 --msgs 200 --rate 1000000 --admin-mode keepalive >/dev/null
run fanout --url "$URL" --conns 10000 --msgs 200 --rate 1000000 --admin-mode batch --batch-size 100 >/dev/null
run handshake --url "$URL" --total 20000 --concurrency 50 >/dev/null
run churn --url "$URL" --conns 200 --secs 5 >/dev/null
REPORT="$OUT/bench-$(date +%Y%m%d-%H%M%S).md"
python3 - "$RESULTS" > "$REPORT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print("| scenario | rate | p50 / p99 latency (µs) | server CPU per unit | notes |")
print("| --- | --- | --- | --- | --- |")
for r in rows:
    s = r["scenario"]
    if s == "density":
        print(f"| density {r['connections']} | {r['connections_per_second']:.0f} conn/s | | {r['server_cpu_us_per_connection']} µs/conn | {r['bytes_per_connection_idle']:.0f} B RSS per idle connection, idle CPU {r['server_idle_cpu_percent']} % |")
    elif s == "echo":
        print(f"| echo {r['connections']} conns {r['size']} B | {r['messages_per_second']:.0f} msg/s | {r['latency_p50_us']} / {r['latency_p99_us']} | {r['server_cpu_us_per_message']} µs/msg | client CPU {r['client_cpu_percent']} % |")
    elif s == "fanout" and r.get("burst"):
        print(f"| burst {r['messages']} x {r['subscribers']} subs ({r['admin_mode']}) | {r['deliveries_per_second']:.0f} deliveries/s | {r['last_subscriber_latency_p50_us']} / {r['last_subscriber_latency_p99_us']} (to last subscriber) | {r['server_cpu_us_per_delivery']} µs/delivery | lost {r['lost']}, duplicated {r['duplicated']} |")
    elif s == "fanout":
        print(f"| fanout {r['subscribers']} subs | {r['deliveries_per_second']:.0f} deliveries/s | {r['last_subscriber_latency_p50_us']} / {r['last_subscriber_latency_p99_us']} (to last subscriber) | {r['server_cpu_us_per_delivery']} µs/delivery | lost {r['lost']}, duplicated {r['duplicated']} |")
    elif s == "handshake":
        print(f"| handshake x{r['handshakes']} @50 | {r['handshakes_per_second']:.0f} /s | {r['latency_p50_us']} / {r['latency_p99_us']} | {r['server_cpu_us_per_handshake']} µs/handshake | failed {r['failed']} |")
    elif s == "churn":
        print(f"| churn 200 | {r['cycles_per_second']:.0f} cycles/s | | {r['server_cpu_us_per_cycle']} µs/cycle | RSS {r['rss_before_bytes']//1024} → {r['rss_after_bytes']//1024} KiB, files {r['open_files_before']} → {r['open_files_after']} |")
PY
cat "$REPORT"
echo "(written to $REPORT)"
