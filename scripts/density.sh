#!/usr/bin/env bash
# Density: RSS growth of the wsedge server per idle authenticated connection.
# Starts a release server on loopback, opens CONNS connections from a separate process spread
# over 127.0.0.2+, reads /proc/PID/status, stops the server. Bounded: ~1 minute.
#   scripts/density.sh [CONNS] [WORKERS]     (SERVER_FLAGS="..." adds server flags)
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${1:-19000}
WORKERS=${2:-2}
SECRET=density-bench-secret
PORT=${PORT:-18080}
cargo build --release --quiet --bin wsedge --bin wsedge-bench
./target/release/wsedge serve --listen "127.0.0.1:$PORT" --workers "$WORKERS" --jwt-secret "$SECRET" \
  --max-connections $((CONNS + 100)) --max-connections-per-ip 0 --log-level warn ${SERVER_FLAGS:-} &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done
timeout 300 ./target/release/wsedge-bench density --url "ws://127.0.0.1:$PORT/ws" --conns "$CONNS" \
  --pid "$SERVER" --secret "$SECRET" "${@:3}"
