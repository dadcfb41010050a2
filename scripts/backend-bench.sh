#!/usr/bin/env bash
# The backend bridge: forwarded messages per second from 1,000 clients to an HTTP backend (a
# sink in the load generator's process, on the other core), the latency forwarding adds at a
# steady 10,000 messages/s, the same through a Redis stream, and RSS per idle connection with
# forwarding configured against without. Server pinned to core 0 (one reactor), generator and
# sink to core 1, redis-server to core 1. "max" cases send as fast as the backend takes them
# (at most 5,000 not yet at the backend), one message per client write; "burst8" has each
# chosen client write 8 messages at once. Bounded: about 2 minutes.
#   scripts/backend-bench.sh [SECS]      (WSEDGE_BIN=path: that server binary)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
SECS=${1:-10}
cargo build --release --quiet --bin wsedge --bin wsedge-bench
BIN=${WSEDGE_BIN:-./target/release/wsedge}
GEN=./target/release/wsedge-bench
SECRET=backend-bench-secret
PORT=18300 SINK=18301 RPORT=18302
OUT=$(mktemp -d)
SERVER= REDIS=
trap 'stop "$SERVER"; stop "$REDIS"; rm -rf "$OUT"' EXIT

serve() {
  taskset -c 0 "$BIN" serve --listen "127.0.0.1:$PORT" --workers 1 --jwt-secret "$SECRET" \
    --max-connections 30000 --max-connections-per-ip 0 --rate-limit-messages 0 --log-level warn \
    --forward chat "$@" &
  SERVER=$!
  wait_port "$PORT"
}

gen() {
  taskset -c 1 "$GEN" forward --url "ws://127.0.0.1:$PORT/ws" --secret "$SECRET" --pid "$SERVER" \
    --conns 1000 --secs "$SECS" --json "$@"
}

echo "== HTTP backend" >&2
serve --backend-url "http://127.0.0.1:$SINK/events"
gen --sink "127.0.0.1:$SINK" >"$OUT/http-max.json"
stop "$SERVER"
serve --backend-url "http://127.0.0.1:$SINK/events"
gen --sink "127.0.0.1:$SINK" --burst 8 >"$OUT/http-max-burst8.json"
stop "$SERVER"
serve --backend-url "http://127.0.0.1:$SINK/events"
gen --sink "127.0.0.1:$SINK" --rate 10000 >"$OUT/http-10k.json"
stop "$SERVER"

echo "== Redis stream" >&2
taskset -c 1 redis-server --port "$RPORT" --save '' --appendonly no --daemonize no --loglevel warning >/dev/null &
REDIS=$!
wait_port "$RPORT"
serve --redis "redis://127.0.0.1:$RPORT" --backend-stream bench:inbox --backend-stream-maxlen 1000000
gen --stream "127.0.0.1:$RPORT/bench:inbox" >"$OUT/stream-max.json"
stop "$SERVER"
serve --redis "redis://127.0.0.1:$RPORT" --backend-stream bench:inbox --backend-stream-maxlen 1000000
gen --stream "127.0.0.1:$RPORT/bench:inbox" --rate 10000 >"$OUT/stream-10k.json"
stop "$SERVER"
stop "$REDIS"

echo "== idle memory, forwarding off and on" >&2
PORT=18310 scripts/density.sh 19000 1 --json >"$OUT/density-off.json"
PORT=18311 SERVER_FLAGS="--backend-url http://127.0.0.1:$SINK/events --forward chat,rpc,upload.cancel" \
  scripts/density.sh 19000 1 --json >"$OUT/density-on.json"

python3 - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
def load(name):
    return json.loads(out.joinpath(name).read_text().strip().splitlines()[-1])
print(f"{'case':<22}{'forwarded/s':>13}{'requests/s':>12}{'items/req':>11}{'p50 us':>9}{'p99 us':>9}{'cpu us/msg':>12}{'errors':>8}")
for case in ["http-max", "http-max-burst8", "http-10k", "stream-max", "stream-10k"]:
    r = load(case + ".json")
    print(f"{case:<22}{r['forwarded_per_second']:>13.0f}{r['requests_per_second']:>12.0f}{r['items_per_request']:>11}"
          f"{r['latency_p50_us']:>9}{r['latency_p99_us']:>9}{str(r['server_cpu_us_per_message']):>12}{r['client_errors']:>8}")
for case in ["density-off", "density-on"]:
    r = load(case + ".json")
    print(f"{case:<22} per idle connection: RSS {r['bytes_per_connection_idle']:.0f} B, anonymous {r['anon_bytes_per_connection_idle']:.0f} B")
PY
