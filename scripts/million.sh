#!/usr/bin/env bash
# A million idle authenticated connections on one machine, then one publish to everyone.
#
# A process here may hold at most 20,000 files, so TOTAL connections are held by enough wsedge
# nodes sharing one port (--reuse-port, one reactor each, joined over a local redis-server) and
# by enough load-generator processes (wsedge-bench hold), each on its own source address
# (127.0.0.2, ...). Once every connection is open it reports the nodes' total RSS and bytes per
# connection, the kernel's memory (slab, TCP pages), then publishes one message to everyone
# through one node's admin API and reports the time until the last connection had it.
#
# Checks free memory and file limits first, widens the local port range for the run (restored
# after), is bounded in time (deadline per phase), and stops everything it started.
#   scripts/million.sh [TOTAL]     (default 1000000; e.g. 100000 for a quick run)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
TOTAL=${1:-1000000}
PER_NODE=${PER_NODE:-18000}   # mean per node; the kernel's hash spreads them about ±1 %
PER_GEN=${PER_GEN:-19000}
PER_USER=3
NODES=$(( (TOTAL + PER_NODE - 1) / PER_NODE ))
GENS=$(( (TOTAL + PER_GEN - 1) / PER_GEN ))
PORT=${PORT:-18500}
ADMIN_BASE=$((PORT + 1))
REDIS_PORT=${REDIS_PORT:-18499}
SECRET=million-$$
DEADLINE=${DEADLINE:-900}
OUT=target/bench
mkdir -p "$OUT"

command -v redis-server >/dev/null || { echo "needs redis-server (apt-get install redis-server)" >&2; exit 1; }
# Preflight: about 8 KiB per connection in all (two sockets in the kernel, both processes).
avail_kb=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
need_kb=$(( TOTAL * 8 ))
if [ "$avail_kb" -lt "$need_kb" ]; then
  echo "needs about $((need_kb / 1024)) MiB free for $TOTAL connections; $((avail_kb / 1024)) MiB available" >&2
  exit 1
fi
read -r used _ max < /proc/sys/fs/file-nr
if [ $(( max - used )) -lt $(( TOTAL * 2 + 10000 )) ]; then
  echo "needs $((TOTAL * 2)) more open files machine-wide; $((max - used)) left (fs.file-max)" >&2
  exit 1
fi
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt 20000 ]; then
  echo "needs a per-process file limit of 20,000 (ulimit -Hn is $(ulimit -Hn))" >&2
  exit 1
fi
ulimit -n "$(ulimit -Hn)"

cargo build --release --quiet --bin wsedge --bin wsedge-bench
WORK=$(mktemp -d)
PIDS=()
OLD_RANGE=$(cat /proc/sys/net/ipv4/ip_local_port_range)
cleanup() {
  for p in "${GEN_PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  for p in "${GEN_PIDS[@]:-}" "${PIDS[@]:-}"; do [ -n "$p" ] && stop "$p"; done
  echo "$OLD_RANGE" > /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
  rm -rf "$WORK"
}
GEN_PIDS=()
trap cleanup EXIT
# One generator holds up to PER_GEN connections from one source address to one port.
echo "1024 65535" > /proc/sys/net/ipv4/ip_local_port_range

kernel() { # slab kB, TCP pages
  echo "$(awk '/^Slab:/ {print $2}' /proc/meminfo) $(awk '/^TCP:/ {for (i=1;i<=NF;i++) if ($i=="mem") print $(i+1)}' /proc/net/sockstat)"
}
cpu_ticks() { # utime + stime (clock ticks) of the given PIDs
  local t=0
  for p in "$@"; do t=$(( t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0) )); done
  echo "$t"
}
rss_sum() { # total VmRSS (kB) of the nodes
  local t=0
  for p in "${NODE_PIDS[@]}"; do t=$(( t + $(awk '/^VmRSS:/ {print $2}' "/proc/$p/status") )); done
  echo "$t"
}

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" >/dev/null 2>&1 &
PIDS+=($!)
wait_port "$REDIS_PORT"
NODE_PIDS=()
echo ">> $NODES nodes on port $PORT, $GENS generator processes, $TOTAL connections" >&2
for i in $(seq 0 $((NODES - 1))); do
  ./target/release/wsedge serve --listen "127.0.0.1:$PORT" --reuse-port --workers 1 --jwt-secret "$SECRET" \
    --redis "redis://127.0.0.1:$REDIS_PORT" --node-id "n$i" --admin-listen "127.0.0.1:$((ADMIN_BASE + i))" \
    --max-connections 19900 --max-connections-per-ip 0 --max-pending-handshakes 19900 \
    --max-connections-per-user "$PER_USER" --rate-limit-messages 0 \
    --heartbeat-interval 600 --connection-timeout 1200 --handshake-timeout 120 --log-level warn \
    >"$WORK/node-$i.log" 2>&1 &
  PIDS+=($!)
  NODE_PIDS+=($!)
done
for i in $(seq 0 $((NODES - 1))); do wait_port "$((ADMIN_BASE + i))"; done
for i in $(seq 0 $((NODES - 1))); do
  for _ in $(seq 100); do
    curl -s "http://127.0.0.1:$((ADMIN_BASE + i))/metrics" | grep -q '^wsedge_cluster_up 1' && break
    sleep 0.1
  done
done
sleep 1
RSS0=$(rss_sum)
read -r SLAB0 TCP0 <<<"$(kernel)"
T0=$(date +%s)
left=$TOTAL
for g in $(seq 0 $((GENS - 1))); do
  n=$(( left < PER_GEN ? left : PER_GEN ))
  left=$(( left - n ))
  ./target/release/wsedge-bench hold --url "ws://127.0.0.1:$PORT/ws" --conns "$n" --secret "$SECRET" \
    --per-user "$PER_USER" --user-offset $(( g * PER_GEN )) --sources 1 --source-base "$g" \
    --concurrency 100 --ready-file "$WORK/ready-$g" --linger-file "$WORK/linger" --deadline-secs "$DEADLINE" \
    >"$WORK/gen-$g.json" 2>"$WORK/gen-$g.err" &
  GEN_PIDS+=($!)
done
echo ">> waiting for every connection to open" >&2
for _ in $(seq "$DEADLINE"); do
  ready=$(find "$WORK" -name "ready-*" | wc -l)
  [ "$ready" -ge "$GENS" ] && break
  sleep 1
done
RAMP=$(( $(date +%s) - T0 ))
[ "$ready" -ge "$GENS" ] || { echo "only $ready of $GENS generators finished opening" >&2; exit 1; }
OPEN=$(cat "$WORK"/ready-* | awk '{o += $1; f += $2} END {print o, f}')
sleep 3   # let the last handshakes' replies be written and memory settle
RSS1=$(rss_sum)
read -r SLAB1 TCP1 <<<"$(kernel)"
STATS=$(curl -s -H "Authorization: Bearer $(./target/release/wsedge token --sub ops --role admin --jwt-secret "$SECRET")" \
  "http://127.0.0.1:$ADMIN_BASE/ws/stats")
ADMIN=$(./target/release/wsedge token --sub ops --role admin --jwt-secret "$SECRET")
echo ">> publishing to everyone" >&2
NODE_CPU0=$(cpu_ticks "${NODE_PIDS[@]}")
GEN_CPU0=$(cpu_ticks "${GEN_PIDS[@]}")
PUB_NS=$(date +%s%N)
REPLY=$(curl -s -H "Authorization: Bearer $ADMIN" "http://127.0.0.1:$ADMIN_BASE/ws/broadcast" -d '{"type": "million"}')
# Each generator reports once every connection has the message, then holds on (closing a
# million connections is not part of the publish): the CPU is read when all have reported.
for _ in $(seq "$DEADLINE"); do
  reported=$(cat "$WORK"/gen-*.json 2>/dev/null | grep -c '^{' || true)
  [ "$reported" -ge "$GENS" ] && break
  sleep 0.2
done
NODE_CPU1=$(cpu_ticks "${NODE_PIDS[@]}")
GEN_CPU1=$(cpu_ticks "${GEN_PIDS[@]}")
touch "$WORK/linger"
for p in "${GEN_PIDS[@]}"; do wait "$p" || true; done
GEN_PIDS=()
TICK_HZ=$(getconf CLK_TCK)
REPORT="$OUT/million-$(date +%Y%m%d-%H%M%S).md"
python3 - "$WORK" "$TOTAL" "$NODES" "$GENS" "$OPEN" "$RAMP" "$RSS0" "$RSS1" "$SLAB0" "$SLAB1" "$TCP0" "$TCP1" \
  "$PUB_NS" "$STATS" "$REPLY" "$((NODE_CPU1 - NODE_CPU0))" "$((GEN_CPU1 - GEN_CPU0))" "$TICK_HZ" > "$REPORT" <<'PY'
import glob, json, sys
(work, total, nodes, gens, opened, ramp, rss0, rss1, slab0, slab1, tcp0, tcp1, pub_ns, stats, reply, node_cpu, gen_cpu, hz) = sys.argv[1:]
gens_out = []
for f in sorted(glob.glob(f"{work}/gen-*.json")):
    for line in open(f):
        if line.startswith("{"):
            gens_out.append(json.loads(line))
open_n, failed = map(int, opened.split())
received = sum(g["received"] for g in gens_out)
last = max((g["last_receipt_unix_ns"] for g in gens_out), default=0)
first = min((g["first_receipt_unix_ns"] for g in gens_out if g["first_receipt_unix_ns"]), default=0)
st = json.loads(stats).get("data", {}) if stats.startswith("{") else {}
rp = json.loads(reply).get("data", {}) if reply.startswith("{") else {}
rss = (int(rss1) - int(rss0)) * 1024
print(f"| what | value |")
print(f"| --- | --- |")
print(f"| connections open (asked {int(total):,}) | {open_n:,} (failed {failed}); cluster stats say {st.get('total_connections', '?'):,} over {len(st.get('nodes', []))} nodes |")
print(f"| processes | {nodes} wsedge nodes (1 reactor each) on one port, {gens} generators, 1 redis-server |")
print(f"| time to open them all | {ramp} s |")
print(f"| nodes' RSS growth | {rss / 2**20:,.0f} MiB: **{rss / max(open_n, 1):.0f} B per connection** |")
print(f"| kernel slab growth | {(int(slab1) - int(slab0)) / 1024:,.0f} MiB ({(int(slab1) - int(slab0)) * 1024 / max(open_n, 1):,.0f} B per connection, both ends of loopback) |")
print(f"| kernel TCP memory (sockstat pages) | {tcp0} → {tcp1} |")
print(f"| publish to everyone: nodes reached | {rp.get('nodes_reached', '?')} |")
print(f"| connections that got it | {received:,} |")
print(f"| publish to first / last delivery | {(first - int(pub_ns)) / 1e9:.3f} s / **{(last - int(pub_ns)) / 1e9:.3f} s** |")
ncpu, gcpu = int(node_cpu) / int(hz), int(gen_cpu) / int(hz)
print(f"| CPU spent on that publish | nodes {ncpu:.1f} s ({ncpu * 1e6 / max(received, 1):.1f} µs per delivery), generators {gcpu:.1f} s ({gcpu * 1e6 / max(received, 1):.1f} µs per delivery), on 2 cores |")
PY
cat "$REPORT"
echo "(written to $REPORT)"
for f in "$WORK"/gen-*.err; do [ -s "$f" ] && { echo "$f:"; head -3 "$f"; } >&2; done
exit 0
