#!/usr/bin/env bash
# Interop with Python's `websockets` (installed with pip if missing): against `wsedge echo
# --compression on`, a client that offers permessage-deflate (websockets does by default) gets
# it, and text and binary messages, compressible or not, small or large (1 MiB), come back
# intact; a client that offers nothing runs uncompressed. Loopback only; ~5 seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
python3 -c 'import websockets' 2>/dev/null || python3 -m pip install -q websockets
cargo build --release --quiet --bin wsedge
PORT=${PORT:-19721}
./target/release/wsedge echo --listen "127.0.0.1:$PORT" --workers 1 --log-level warn --compression on &
SERVER=$!
trap 'stop $SERVER' EXIT
wait_port "$PORT"
python3 - "$PORT" <<'PY'
import os, sys
from websockets.sync.client import connect
url = f"ws://127.0.0.1:{sys.argv[1]}/"
with connect(url, max_size=None) as ws:
    ext = ws.response.headers.get("Sec-WebSocket-Extensions")
    assert ext == "permessage-deflate; server_no_context_takeover; client_no_context_takeover", ext
    for msg in ["hi", "hello " * 1000, os.urandom(3000).hex(), b"\x00" * 5000, os.urandom(2000), "é€" * 300_000]:
        ws.send(msg)
        assert ws.recv() == msg, f"{type(msg).__name__} of {len(msg)} changed"
with connect(url, compression=None) as ws:
    assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
    ws.send("plain " * 500)
    assert ws.recv() == "plain " * 500
import websockets
print(f"python websockets {websockets.__version__}: permessage-deflate negotiated, 6 messages echoed intact; uncompressed too: OK")
PY
