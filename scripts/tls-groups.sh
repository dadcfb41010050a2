#!/usr/bin/env bash
# TLS 1.3 full handshakes against the protocol server (1 reactor pinned to core 0, the generator
# on core 1, ECDSA P-256 certificate), once per client key-exchange order: X25519 first (browsers,
# wsedge's client), P-384 first with X25519 listed (rustls 0.23.48's ring default), P-384 only.
# Prints handshakes/s, server CPU per handshake and p50/p99 latency for each. Loopback only,
# bounded (~1 minute), stops what it started. Writes target/bench/tls-groups-<time>.md.
#   scripts/tls-groups.sh [TOTAL]     (handshakes per order, default 10000)
# Env: WSEDGE_BIN (skip the build, use this server binary).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
TOTAL=${1:-10000}
PORT=${PORT:-18190}
SECRET=bench-secret-$$
OUT=target/bench
mkdir -p "$OUT"
cargo build --release --quiet --bin wsedge --bin wsedge-bench
BIN=${WSEDGE_BIN:-./target/release/wsedge}
DIR=$(mktemp -d)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -keyout "$DIR/key.pem" -out "$DIR/cert.pem" 2>/dev/null
taskset -c 0 "$BIN" serve --listen "127.0.0.1:$PORT" --workers 1 --jwt-secret "$SECRET" \
  --tls-cert "$DIR/cert.pem" --tls-key "$DIR/key.pem" --max-connections-per-ip 0 \
  --rate-limit-messages 0 --max-connections-per-user 100 --log-level warn &
SERVER=$!
trap 'stop $SERVER; rm -rf "$DIR"' EXIT
wait_port "$PORT"
REPORT="$OUT/tls-groups-$(date +%Y%m%d-%H%M%S).md"
{
  echo "| client offers | handshakes/s | server CPU per handshake | p50 / p99 latency (µs) | failed |"
  echo "| --- | --- | --- | --- | --- |"
  for groups in x25519,p256,p384 p384,x25519 p384; do
    taskset -c 1 ./target/release/wsedge-bench handshake --url "wss://127.0.0.1:$PORT/ws" --pid "$SERVER" \
      --secret "$SECRET" --total "$TOTAL" --concurrency 50 --tls-groups "$groups" --json |
      python3 -c 'import json,sys
r = json.loads(sys.stdin.read())
print("| %s | %.0f | %s µs | %s / %s | %s |" % (sys.argv[1], r["handshakes_per_second"],
      r["server_cpu_us_per_handshake"], r["latency_p50_us"], r["latency_p99_us"], r["failed"]))' "$groups"
  done
} > "$REPORT"
cat "$REPORT"
echo "(written to $REPORT; server $BIN)"
