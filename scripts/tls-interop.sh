#!/usr/bin/env bash
# TLS interop with third-party clients against the protocol server behind TLS (a fresh
# self-signed ECDSA certificate for localhost): OpenSSL's s_client, Python's ssl and Node's tls,
# each over TLS 1.3 and 1.2 (scripts/tls-interop.py: connect, connection.established, pings;
# s_client also sends KeyUpdates, `k` and `K`, between them; Node a 1 MiB message), then headless
# Chromium (Debian's `chromium`, installed if missing) over wss:// with the certificate trusted
# by its SPKI hash: open, ping/pong, a 60 KB message, close 1000. Chromium offers no switch to
# cap its TLS version, so it runs TLS 1.3 only. Loopback only; about 20 seconds.
#   scripts/tls-interop.sh
# Env: WSEDGE_BIN (this server binary instead of the fresh build).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
command -v openssl >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q openssl >/dev/null; }
command -v chromium >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
[ -n "${WSEDGE_BIN:-}" ] || cargo build --release --quiet --bin wsedge
BIN=${WSEDGE_BIN:-./target/release/wsedge}
PORT=${PORT:-19731}
HTTP_PORT=${HTTP_PORT:-19732}
SECRET=tls-interop-$$
WORK=$(mktemp -d)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
"$BIN" serve --listen "127.0.0.1:$PORT" --jwt-secret "$SECRET" --log-level warn \
  --tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem" &
SERVER=$!
python3 -m http.server "$HTTP_PORT" --bind 127.0.0.1 --directory "$WORK" >"$WORK/http.log" 2>&1 &
HTTP=$!
trap 'stop $SERVER; stop $HTTP; rm -rf "$WORK"' EXIT
wait_port "$PORT"
wait_port "$HTTP_PORT"
TOKEN=$("$BIN" token --sub interop-user --jwt-secret "$SECRET")
STATUS=0
python3 scripts/tls-interop.py "$PORT" "$WORK/cert.pem" "$TOKEN" || STATUS=1

# Chromium: the page reports to the local HTTP listener.
cat >"$WORK/check.html" <<EOF
<!doctype html><html><body><script>
const out = [];
const ws = new WebSocket('wss://localhost:$PORT/ws?token=$TOKEN');
let n = 0;
ws.onmessage = (e) => {
  const m = JSON.parse(e.data);
  out.push(m.type + (m.data && m.data.code ? ' ' + m.data.code : ''));
  // Then a ping padded to 60 KB (many records each way; the answer says what the server read).
  if (n === 0) ws.send(JSON.stringify({ type: 'ping', data: { pad: 'p'.repeat(60000) } }));
  else ws.close(1000, 'bye');
  n++;
};
ws.onclose = (e) => {
  out.push('closed ' + e.code);
  new Image().src = 'http://127.0.0.1:$HTTP_PORT/result?' + encodeURIComponent(out.join(' | '));
};
</script></body></html>
EOF
SPKI=$(openssl x509 -in "$WORK/cert.pem" -pubkey -noout | openssl pkey -pubin -outform der |
  openssl dgst -sha256 -binary | base64)
timeout 20 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --ignore-certificate-errors-spki-list="$SPKI" --user-data-dir="$WORK/profile" \
  "http://127.0.0.1:$HTTP_PORT/check.html" >/dev/null 2>&1 || true
RESULT=$(sed -n 's/.*GET \/result?\([^ ]*\) HTTP.*/\1/p' "$WORK/http.log" | python3 -c 'import sys, urllib.parse; print(urllib.parse.unquote(sys.stdin.read().strip()))')
if [ "$RESULT" = "connection.established | pong | closed 1000" ]; then
  echo "chromium          TLS 1.3: ok (connection.established, 60 KB ping, pong, close 1000)"
else
  echo "chromium          TLS 1.3: FAILED: ${RESULT:-no report}"
  STATUS=1
fi
exit $STATUS
