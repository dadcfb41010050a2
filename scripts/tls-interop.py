#!/usr/bin/env python3
"""TLS interop against a running wsedge protocol server (run by scripts/tls-interop.sh).

Each client, over TLS 1.3 and TLS 1.2: connect to wss://localhost:PORT/ws with a token, read
`connection.established`, send a `ping` message, read the `pong`. OpenSSL's s_client over TLS
1.3 also sends a KeyUpdate (`k`) and one that asks for the server's (`K`) between pings: each
later pong must still arrive (read under the keys both sides moved to). Python's ssl and Node's
tls speak the same exchange; Node also sends a 1 MiB message in one write (many records). Prints
one line per client and version, `ok` or what went wrong; exits 1 if any failed.
Usage: tls-interop.py PORT CA_FILE TOKEN
"""
import os, socket, ssl, struct, subprocess, sys, time

PORT, CA, TOKEN = int(sys.argv[1]), sys.argv[2], sys.argv[3]
REQUEST = (f"GET /ws?token={TOKEN} HTTP/1.1\r\nHost: localhost:{PORT}\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           "Sec-WebSocket-Version: 13\r\n\r\n").encode()


def frame(text):
    """A masked client text frame."""
    data, mask = text.encode(), os.urandom(4)
    n = len(data)
    head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n)
                             if n < 65536 else bytes([0x80 | 127]) + struct.pack(">Q", n))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


PING = frame('{"type":"ping","data":{}}')


def read_until(read, needle, have=b"", limit=10.0):
    deadline = time.monotonic() + limit
    while needle not in have:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {needle!r} within {limit} s (got {have[-120:]!r})")
        chunk = read()
        if not chunk:
            raise ConnectionError(f"closed before {needle!r} (got {have[-120:]!r})")
        have += chunk
    return have[have.index(needle) + len(needle):]


def openssl(version):
    flag = {"1.3": "-tls1_3", "1.2": "-tls1_2"}[version]
    p = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{PORT}", flag, "-servername", "localhost",
                          "-CAfile", CA, "-verify_return_error", "-no_ign_eof"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    os.set_blocking(p.stdout.fileno(), False)

    def read():
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                b = p.stdout.read(65536)
            except BlockingIOError:
                b = None
            if b:
                return b
            if p.poll() is not None:
                return b""
            time.sleep(0.01)
        return b"-"

    def send(b, pause=0.3):
        p.stdin.write(b)
        p.stdin.flush()
        time.sleep(pause)  # s_client reads commands from the start of a read: keep them apart

    try:
        send(REQUEST)
        rest = read_until(read, b"connection.established")
        steps = ["ping"] + (["k", "ping", "K", "ping", "K", "k", "ping"] if version == "1.3" else ["ping"])
        for s in steps:
            if s == "ping":
                send(PING, 0)
                rest = read_until(read, b'"type":"pong"', rest)
            else:
                send(s.encode() + b"\n")
        return "ok (" + ", ".join(steps) + ")"
    finally:
        p.kill()
        p.wait()


def python_ssl(version):
    ctx = ssl.create_default_context(cafile=CA)
    v = {"1.3": ssl.TLSVersion.TLSv1_3, "1.2": ssl.TLSVersion.TLSv1_2}[version]
    ctx.minimum_version = ctx.maximum_version = v
    with socket.create_connection(("127.0.0.1", PORT), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(REQUEST)
            read = lambda: s.recv(65536)
            rest = read_until(read, b"connection.established")
            for _ in range(3):
                s.sendall(PING)
                rest = read_until(read, b'"type":"pong"', rest)
            return f"ok ({s.version()}, {s.cipher()[0]}, 3 pings)"


NODE = r"""
const tls = require('tls'), fs = require('fs'), crypto = require('crypto');
const [port, ca, token, version] = process.argv.slice(-4);
function frame(text) {
  const data = Buffer.from(text), n = data.length, mask = crypto.randomBytes(4);
  let head;
  if (n < 126) head = Buffer.from([0x81, 0x80 | n]);
  else if (n < 65536) { head = Buffer.alloc(4); head[0] = 0x81; head[1] = 0x80 | 126; head.writeUInt16BE(n, 2); }
  else { head = Buffer.alloc(10); head[0] = 0x81; head[1] = 0x80 | 127; head.writeBigUInt64BE(BigInt(n), 2); }
  const body = Buffer.alloc(n);
  for (let i = 0; i < n; i++) body[i] = data[i] ^ mask[i % 4];
  return Buffer.concat([head, mask, body]);
}
const v = version === '1.3' ? 'TLSv1.3' : 'TLSv1.2';
const s = tls.connect({ host: '127.0.0.1', port: +port, servername: 'localhost', ca: fs.readFileSync(ca),
                        minVersion: v, maxVersion: v }, () => {
  s.write(`GET /ws?token=${token} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`);
});
let got = '', stage = 0;
const timer = setTimeout(() => { console.log('timeout at stage ' + stage + ': ' + got.slice(-200)); process.exit(1); }, 10000);
s.on('data', (d) => {
  got += d.toString('latin1');
  if (stage === 0 && got.includes('connection.established')) {
    stage = 1; got = '';
    // 1 MiB in one write: many records; the server answers it (too large: an error message).
    s.write(frame(JSON.stringify({ type: 'ping', data: { pad: 'x'.repeat(1 << 20) } })));
    s.write(frame('{"type":"ping","data":{}}'));
  } else if (stage === 1 && (got.includes('"type":"pong"') || got.includes('MESSAGE_TOO_LARGE'))) {
    stage = 2;
    console.log(`ok (${s.getProtocol()}, ${s.getCipher().name}, 1 MiB message answered: ` +
                (got.includes('MESSAGE_TOO_LARGE') ? 'MESSAGE_TOO_LARGE' : 'pong') + ')');
    clearTimeout(timer); s.destroy();
  }
});
s.on('close', () => {
  if (stage === 1 && got.length >= 2 && got.charCodeAt(0) === 0x88) {
    console.log(`ok (${v}, closed ${(got.charCodeAt(2) << 8) | got.charCodeAt(3)} after the 1 MiB message)`);
    clearTimeout(timer); process.exit(0);
  }
  if (stage < 2) { console.log('closed at stage ' + stage + ': ' + JSON.stringify(got.slice(-200))); process.exit(1); }
});
s.on('error', (e) => { console.log('error: ' + e.message); process.exit(1); });
"""


def node(version):
    out = subprocess.run(["node", "-e", NODE, str(PORT), CA, TOKEN, version], capture_output=True, text=True,
                         timeout=30)
    line = (out.stdout.strip() or out.stderr.strip()).splitlines()[-1:] or ["no output"]
    if out.returncode != 0 or not line[0].startswith("ok"):
        raise RuntimeError(line[0])
    return line[0]


failed = 0
for name, fn in (("openssl s_client", openssl), ("python ssl", python_ssl), ("node tls", node)):
    for version in ("1.3", "1.2"):
        try:
            result = fn(version)
        except Exception as e:
            failed += 1
            result = f"FAILED: {type(e).__name__}: {e}"
        print(f"{name:17} TLS {version}: {result}", flush=True)
sys.exit(1 if failed else 0)
