#!/usr/bin/env bash
# Interop check with a real browser: headless Chromium (Debian's `chromium`, installed if
# missing) opens WebSockets to a local wsedge server: token as `bearer` subprotocol,
# permessage-deflate negotiated (the server runs with --compression on) and used both ways by a
# ping/pong, a bad token (must be close 1008 with its reason, not 1006), an oversized message
# (compressed by the browser; error, then 1009). The page reports to a local HTTP listener.
# Loopback only; ~20 seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
command -v chromium >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
cargo build --release --quiet --bin wsedge
WS_PORT=${WS_PORT:-19711}
HTTP_PORT=${HTTP_PORT:-19712}
SECRET=browser-check-$$
WORK=$(mktemp -d)
./target/release/wsedge serve --listen "127.0.0.1:$WS_PORT" --jwt-secret "$SECRET" --log-level warn \
  --compression on --compression-min-size 64 &
SERVER=$!
python3 -m http.server "$HTTP_PORT" --bind 127.0.0.1 --directory "$WORK" >"$WORK/http.log" 2>&1 &
HTTP=$!
trap 'stop $SERVER; stop $HTTP; rm -rf "$WORK"' EXIT
wait_port "$WS_PORT"
wait_port "$HTTP_PORT"
TOKEN=$(./target/release/wsedge token --sub browser-user --jwt-secret "$SECRET")
sed -e "s/@TOKEN@/$TOKEN/g" -e "s/@WS_PORT@/$WS_PORT/g" -e "s/@HTTP_PORT@/$HTTP_PORT/g" \
  scripts/browser-check.html >"$WORK/check.html"
timeout 20 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$WORK/profile" "http://127.0.0.1:$HTTP_PORT/check.html" >/dev/null 2>&1 || true
RESULT=$(sed -n 's/.*GET \/result?\([^ ]*\) HTTP.*/\1/p' "$WORK/http.log" | python3 -c 'import sys, urllib.parse; print(urllib.parse.unquote(sys.stdin.read().strip()))')
echo "chromium: $RESULT"
PING=$(printf 'from-chromium-%.0s' 1 2 3 4 5 6 7 8)
EXPECTED="open protocol=bearer extensions=permessage-deflate; server_no_context_takeover; client_no_context_takeover | connection.established | pong $PING | good closed 1000 |"
EXPECTED+='  bad token closed 1008 "authentication failed: malformed token" | big MESSAGE_TOO_LARGE | oversize closed 1009 "message too large"'
# The three sockets interleave, so compare the events as sets.
sorted() { tr '|' '\n' | sed 's/^ *//; s/ *$//' | sort; }
if [ "$(echo "$RESULT" | sorted)" = "$(echo "$EXPECTED" | sorted)" ]; then
  echo "browser check: OK"
else
  echo "browser check: FAILED (expected: $EXPECTED)"
  exit 1
fi
