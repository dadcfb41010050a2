#!/usr/bin/env bash
# Reconnect storm: CONNS clients (default 5,000) hold connections to one wsedge server, each
# with the client library's backoff (full jitter, base 0.5 s, cap 20 s); the server is stopped
# (SIGTERM: every client gets 1001) and started again on the same port after DOWN seconds
# (default 2). Prints the histogram of reconnect attempts over time: they should spread over
# the backoff window with no second spike. Loopback only, bounded (~1 minute), stops what it
# started. Writes target/bench/reconnect-storm-<time>.txt.
#   scripts/reconnect-storm.sh [CONNS] [DOWN]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
CONNS=${1:-5000}
DOWN=${2:-2}
PORT=${PORT:-18170}
SECRET=storm-secret-$$
OUT=target/bench
mkdir -p "$OUT"
cargo build --release --quiet --bin wsedge --bin wsedge-bench
WORK=$(mktemp -d)
serve() {
  ./target/release/wsedge serve --listen "127.0.0.1:$PORT" --jwt-secret "$SECRET" --log-level warn \
    --max-connections $((CONNS + 100)) --max-connections-per-ip 0 --max-pending-handshakes 100000 \
    --shutdown-timeout 2 &
  SERVER=$!
}
serve
BENCH=
trap 'stop $SERVER; [ -n "$BENCH" ] && stop $BENCH; rm -rf "$WORK"' EXIT
wait_port "$PORT"
REPORT="$OUT/reconnect-storm-$(date +%Y%m%d-%H%M%S).txt"
./target/release/wsedge-bench reconnect-storm --url "ws://127.0.0.1:$PORT/ws" --secret "$SECRET" \
  --conns "$CONNS" --ready-file "$WORK/ready" >"$WORK/result.json" 2>"$REPORT" &
BENCH=$!
for _ in $(seq 600); do [ -s "$WORK/ready" ] && break; kill -0 $BENCH 2>/dev/null || break; sleep 0.1; done
[ -s "$WORK/ready" ] || { cat "$REPORT"; echo "the clients did not connect" >&2; exit 1; }
echo ">> $(cat "$WORK/ready") clients connected; stopping the server for $DOWN s" >&2
kill -TERM $SERVER
wait $SERVER 2>/dev/null || true
sleep "$DOWN"
serve
wait $BENCH
BENCH=
cat "$REPORT"
cat "$WORK/result.json"
echo "(written to $REPORT)"
