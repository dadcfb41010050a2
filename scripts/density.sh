#!/usr/bin/env bash
# Density: RSS growth of the wsedge server per idle authenticated connection.
# Starts a release server on loopback, opens CONNS connections from a separate process spread
# over 127.0.0.2+, reads /proc/PID/status, stops the server. Bounded: ~1 minute.
#   scripts/density.sh [--tls] [CONNS] [WORKERS]     (SERVER_FLAGS="..." adds server flags)
# --tls: the server with a fresh self-signed certificate (openssl), the clients over wss://.
# Env: WSEDGE_BIN (this server binary instead of the fresh build: before/after comparisons).
set -euo pipefail
cd "$(dirname "$0")/.."
SCHEME=ws
if [ "${1:-}" = --tls ]; then
  shift
  SCHEME=wss
  CERTS=$(mktemp -d)
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=localhost \
    -keyout "$CERTS/key.pem" -out "$CERTS/cert.pem" >/dev/null 2>&1
  SERVER_FLAGS="${SERVER_FLAGS:-} --tls-cert $CERTS/cert.pem --tls-key $CERTS/key.pem"
fi
CONNS=${1:-19000}
WORKERS=${2:-2}
SECRET=density-bench-secret
PORT=${PORT:-18080}
cargo build --release --quiet --bin wsedge --bin wsedge-bench
"${WSEDGE_BIN:-./target/release/wsedge}" serve --listen "127.0.0.1:$PORT" --workers "$WORKERS" --jwt-secret "$SECRET" \
  --max-connections $((CONNS + 100)) --max-connections-per-ip 0 --log-level warn ${SERVER_FLAGS:-} &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true; [ -n "${CERTS:-}" ] && rm -rf "$CERTS"' EXIT
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done
timeout 300 ./target/release/wsedge-bench density --url "$SCHEME://127.0.0.1:$PORT/ws" --conns "$CONNS" \
  --pid "$SERVER" --secret "$SECRET" "${@:3}"
