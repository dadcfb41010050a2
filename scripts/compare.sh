#!/usr/bin/env bash
# Side-by-side: the same scenarios, in one run, against `wsedge echo` and peers implementing the
# same echo/broadcast protocol (scripts/peers/): Node `ws`, Bun (uWebSockets), tokio-tungstenite
# and fastwebsockets. Every server runs single-threaded pinned to core 0; the load generator is
# pinned to core 1. Peer dependencies are installed and built in $WSEDGE_PEERS_HOME (default
# ~/.cache/wsedge-peers), never in the repository. Loopback only; bounded (~5 minutes).
# Writes target/bench/compare-<time>.md and prints it, with wsedge / best-peer ratios.
#   scripts/compare.sh [--tls] [SECS] [PEERS...]   (SECS per echo run, default 5; PEERS default all)
# --tls: every server behind TLS with the same fresh ECDSA P-256 certificate (wsedge with
# --tls-cert, Bun with BoringSSL, fastwebsockets with tokio-rustls), the generator speaking
# wss://; adds idle memory per connection at 19,000 and handshakes with session resumption.
# Env: WSEDGE_BIN (this wsedge binary instead of the fresh build: before/after comparisons).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
TLS=
SCHEME=ws
if [ "${1:-}" = --tls ]; then
  TLS=1
  SCHEME=wss
  shift
fi
SECS=${1:-5}
shift || true
if [ -n "$TLS" ]; then
  PEERS=${*:-"bun fastwebsockets"}
  CERTS=$(mktemp -d)
  trap 'rm -rf "$CERTS"' EXIT
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=localhost \
    -keyout "$CERTS/key.pem" -out "$CERTS/cert.pem" >/dev/null 2>&1
  export TLS_CERT="$CERTS/cert.pem" TLS_KEY="$CERTS/key.pem"
else
  PEERS=${*:-"node-ws bun tokio-tungstenite fastwebsockets"}
fi
HOME_DIR=${WSEDGE_PEERS_HOME:-$HOME/.cache/wsedge-peers}
OUT=target/bench
mkdir -p "$OUT" "$HOME_DIR/node"

echo ">> preparing peers in $HOME_DIR" >&2
if [ ! -d "$HOME_DIR/node/node_modules/ws" ] || [ ! -x "$HOME_DIR/node/node_modules/.bin/bun" ]; then
  (cd "$HOME_DIR/node" && npm install --silent --no-audit --no-fund ws@8 bun@1 >&2)
fi
rm -rf "$HOME_DIR/rust-src" && cp -r scripts/peers/rust "$HOME_DIR/rust-src"
(cd "$HOME_DIR/rust-src" && cargo build --release --quiet --target-dir "$HOME_DIR/rust-target" >&2)
cargo build --release --quiet --bin wsedge --bin wsedge-bench
export NODE_PATH="$HOME_DIR/node/node_modules"

command_for() {
  case "$1" in
    wsedge) echo "${WSEDGE_BIN:-./target/release/wsedge} echo --listen 127.0.0.1:$2 --workers 1 --log-level warn${TLS:+ --tls-cert $TLS_CERT --tls-key $TLS_KEY}" ;;
    node-ws) echo "node scripts/peers/node-ws/server.js $2" ;;
    bun) echo "$HOME_DIR/node/node_modules/.bin/bun scripts/peers/bun/server.js $2" ;;
    tokio-tungstenite) echo "$HOME_DIR/rust-target/release/peer-tokio-tungstenite $2" ;;
    fastwebsockets) echo "$HOME_DIR/rust-target/release/peer-fastwebsockets $2" ;;
  esac
}

RESULTS=$(mktemp)
PORT=19400
for server in wsedge $PEERS; do
  PORT=$((PORT + 1))
  echo ">> $server" >&2
  # shellcheck disable=SC2046
  taskset -c 0 $(command_for "$server" "$PORT") >/dev/null 2>&1 &
  LAUNCHED=$!
  wait_port "$PORT"
  PID=$(pid_on_port "$PORT")
  PID=${PID:-$LAUNCHED}
  taskset -a -p -c 0 "$PID" >/dev/null
  URL="$SCHEME://127.0.0.1:$PORT/"
  B="taskset -c 1 ./target/release/wsedge-bench"
  SCENARIOS=(
    "echo --conns 100 --secs $SECS --size 32"
    "echo --conns 1000 --secs $SECS --size 32"
    "fanout --conns 1000 --msgs 200"
    "fanout --conns 10000 --msgs 20"
    "handshake --total 20000 --concurrency 50")
  if [ -n "$TLS" ]; then
    SCENARIOS+=("handshake --total 20000 --concurrency 50 --tls-resume" "density --conns 19000 --idle-secs 5")
  fi
  for args in "${SCENARIOS[@]}"; do
    # shellcheck disable=SC2086
    if line=$(timeout 120 $B $args --url "$URL" --pid "$PID" --json 2>/dev/null | tail -1) && [ -n "$line" ]; then
      echo "{\"server\": \"$server\", \"args\": \"$args\", \"r\": $line}" >> "$RESULTS"
    else
      echo "{\"server\": \"$server\", \"args\": \"$args\", \"r\": null}" >> "$RESULTS"
    fi
  done
  stop "$PID"
  stop "$LAUNCHED"
  sleep 1
done

REPORT="$OUT/compare-$(date +%Y%m%d-%H%M%S).md"
python3 - "$RESULTS" > "$REPORT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
servers = list(dict.fromkeys(r["server"] for r in rows))
scen = list(dict.fromkeys(r["args"] for r in rows))
def metric(r):
    s = r["scenario"]
    if s == "echo":
        return r["messages_per_second"], r["server_cpu_us_per_message"], r["latency_p99_us"]
    if s == "fanout":
        return r["deliveries_per_second"], r["server_cpu_us_per_delivery"], r["last_subscriber_latency_p99_us"]
    if s == "density":
        # Lower is better for all three: bytes per idle connection, CPU per connection, none.
        return r["bytes_per_connection_idle"], r["server_cpu_us_per_connection"], 0
    return r["handshakes_per_second"], r["server_cpu_us_per_handshake"], r["latency_p99_us"]
get = {(r["server"], r["args"]): r["r"] for r in rows}
print("Rate / server CPU µs per unit / p99 latency µs (fanout: to the last subscriber; density: bytes per idle connection / CPU µs per connection). Servers single-threaded on core 0, load generator on core 1.\n")
print("| scenario | " + " | ".join(servers) + " | wsedge / best peer: rate, CPU, p99 |")
print("| --- |" + " --- |" * (len(servers) + 1))
for a in scen:
    cells, vals = [], {}
    for s in servers:
        r = get.get((s, a))
        if r is None or (r.get("lost", 0) or r.get("failed", 0)):
            cells.append("failed" if r is None else f"{metric(r)[0]:.0f} (lost {r.get('lost', 0)}, failed {r.get('failed', 0)})")
            continue
        rate, cpu, p99 = metric(r)
        vals[s] = (rate, cpu, p99)
        cells.append(f"{rate:.0f} / {cpu} / {p99}")
    peers = {s: v for s, v in vals.items() if s != "wsedge"}
    ratio = ""
    if "wsedge" in vals and peers:
        w = vals["wsedge"]
        best_rate = (min if a.startswith("density") else max)(v[0] for v in peers.values())
        best_cpu = min(v[1] for v in peers.values() if v[1])
        best_p99 = min(v[2] for v in peers.values())
        ratio = f"{w[0] / best_rate:.2f}x, {w[1] / best_cpu:.2f}x, {w[2] / max(best_p99, 1):.2f}x"
    print(f"| {a} | " + " | ".join(cells) + f" | {ratio} |")
PY
cat "$REPORT"
echo "(written to $REPORT)"
