#!/usr/bin/env bash
# permessage-deflate on fan-out: a ~2 KB JSON message (records like an application's) published
# to N subscribers that negotiated compression, against the same publishes to subscribers that
# did not (the same server, --compression on). Per run: deliveries/s, server CPU per delivery,
# bytes on the wire per delivery, and compressions per publish from /metrics (1: compressed once,
# whatever the recipients). One at a time to 1,000 and 10,000 subscribers, then a burst of 200
# to 10,000. Server on core 0 (one reactor), generator on core 1; loopback; about 3 minutes.
# Writes target/bench/compression-<time>.md and prints it.
#   scripts/compression-bench.sh [PAD_BYTES]     (default 2000)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
PAD=${1:-2000}
SECRET=compression-bench-$$
PORT=${PORT:-18460}
OUT=target/bench
mkdir -p "$OUT"
cargo build --release --quiet --bin wsedge --bin wsedge-bench
B="taskset -c 1 ./target/release/wsedge-bench"
RESULTS=$(mktemp)
taskset -c 0 ./target/release/wsedge serve --listen "127.0.0.1:$PORT" --workers 1 --jwt-secret "$SECRET" \
  --max-connections 30000 --max-connections-per-ip 0 --rate-limit-messages 0 --log-level warn \
  --compression on --max-outbound-bytes 16777216 --admin-max-body 1048576 --public-metrics &
SERVER=$!
trap 'stop "$SERVER"; rm -f "$RESULTS"' EXIT
wait_port "$PORT"
compressions() { curl -s "http://127.0.0.1:$PORT/metrics" | sed -nE 's/^wsedge_compressions_total ([0-9]+).*/\1/p'; }
run() { # run LABEL MSGS ARGS...
  local label=$1 msgs=$2; shift 2
  local before json
  before=$(compressions)
  echo ">> $label: $*" >&2
  json=$($B fanout --url "ws://127.0.0.1:$PORT/ws" --secret "$SECRET" --pid "$SERVER" --pad "$PAD" \
    --msgs "$msgs" --json "$@" | grep '^{' || true)
  [ -n "$json" ] || { echo "   (no result)" >&2; return 0; }
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r["label"]=sys.argv[2]; r["compressions"]=int(sys.argv[3]); print(json.dumps(r))' \
    "$json" "$label" "$(( $(compressions) - before ))" >> "$RESULTS"
}
for conns in 1000 10000; do
  run "plain, $conns subscribers" 20 --conns "$conns"
  run "deflate, $conns subscribers" 20 --conns "$conns" --deflate
done
run "plain, burst of 200 to 10000" 200 --conns 10000 --rate 1000000
run "deflate, burst of 200 to 10000" 200 --conns 10000 --rate 1000000 --deflate
REPORT="$OUT/compression-$(date +%Y%m%d-%H%M%S).md"
python3 - "$RESULTS" "$PAD" > "$REPORT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print(f"| run (~{sys.argv[2]} B of JSON per message) | deliveries/s | server CPU per delivery | bytes on the wire per delivery | compressions per publish | lost |")
print("| --- | --- | --- | --- | --- | --- |")
for r in rows:
    per = r["compressions"] / max(r["messages"], 1)
    print(f"| {r['label']} | {r['deliveries_per_second']:,.0f} | {r['server_cpu_us_per_delivery']} µs | {r['wire_bytes_per_delivery']:,.0f} | {per:g} | {r['lost']} |")
PY
cat "$REPORT"
echo "(written to $REPORT)"
