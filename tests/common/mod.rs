//! Shared test helpers: a real server on 127.0.0.1:0, real WebSocket clients (tungstenite's
//! client over std TcpStream), and raw sockets for hostile input.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};
use wsedge::app::ProtocolApp;
use wsedge::{AuthMode, Config, JwtConfig, RunningServer, Server};

pub mod backend;
pub mod cdp;
pub mod http;
pub mod redis;

pub const SECRET: &str = "integration-test-secret";
pub const TIMEOUT: Duration = Duration::from_secs(5);

pub type Ws = WebSocket<TcpStream>;

pub fn config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: 1,
        auth: AuthMode::Jwt(JwtConfig::hs256(SECRET)),
        ..Config::default()
    }
}

pub fn start(config: Config) -> RunningServer {
    Server::start(config, ProtocolApp::default()).expect("server starts")
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn sign(claims: Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

pub fn token(sub: &str) -> String {
    sign(json!({"sub": sub, "exp": now() + 3600}))
}

pub fn admin_token(sub: &str) -> String {
    sign(json!({"sub": sub, "exp": now() + 3600, "role": "admin"}))
}

/// Connects with `path` (e.g. `/ws?token=..`) and optional extra headers.
pub fn try_connect(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<Ws, tungstenite::Error> {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (k, v) in headers {
        let name: tungstenite::http::HeaderName = k.parse().unwrap();
        req.headers_mut().insert(name, v.parse().unwrap());
    }
    tungstenite::client(req, stream).map(|(ws, _)| ws).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(e) => e,
        tungstenite::HandshakeError::Interrupted(_) => panic!("blocking handshake interrupted"),
    })
}

/// Connects with a token in the query and returns the socket after `connection.established`.
pub fn connect(addr: SocketAddr, token: &str) -> (Ws, Value) {
    let mut ws = try_connect(addr, &format!("/ws?token={token}"), &[]).expect("upgrade");
    let hello = recv_json(&mut ws);
    assert_eq!(hello["type"], "connection.established", "{hello}");
    (ws, hello)
}

/// The next text message as JSON (skipping pings, which tungstenite answers itself).
pub fn recv_json(ws: &mut Ws) -> Value {
    loop {
        match ws.read().expect("message") {
            Message::Text(t) => return serde_json::from_str(&t).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// The next text message of type `kind`, skipping others.
pub fn next_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let m = recv_json(ws);
        if m["type"] == kind {
            return m;
        }
    }
}

pub fn send_json(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).unwrap();
}

/// Reads until the server's close frame; returns its code and reason.
pub fn expect_close(ws: &mut Ws) -> (u16, String) {
    loop {
        match ws.read() {
            Ok(Message::Close(Some(CloseFrame { code, reason }))) => return (code.into(), reason.to_string()),
            Ok(Message::Close(None)) => return (1005, String::new()),
            Ok(_) => continue,
            Err(e) => panic!("expected a close frame, got error {e}"),
        }
    }
}

/// Polls `cond` until it holds or `TIMEOUT` passes.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---- raw sockets ----

pub fn raw(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s
}

pub fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Reads an HTTP response head (and body by Content-Length); returns (status, head, body).
pub fn read_http(s: &mut TcpStream) -> (u16, String, String) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => panic!(
                "connection ended inside the response head: {:?}",
                String::from_utf8_lossy(&buf)
            ),
        }
    }
    let head = String::from_utf8(buf).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let len = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0; len];
    s.read_exact(&mut body).unwrap();
    (status, head, String::from_utf8_lossy(&body).into_owned())
}

/// A raw socket after a successful upgrade with `token` (the 101 head consumed).
pub fn raw_ws(addr: SocketAddr, token: &str) -> TcpStream {
    let mut s = raw(addr);
    s.write_all(upgrade_request(&format!("/ws?token={token}")).as_bytes())
        .unwrap();
    let (status, _, _) = read_http(&mut s);
    assert_eq!(status, 101);
    s
}

/// A masked client frame with the given first byte (FIN/RSV/opcode).
pub fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xFA, 0x21, 0x3D];
    let mut out = vec![first];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n < 65536 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Reads one server frame: (first byte, payload). Server frames are never masked.
pub fn read_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).expect("frame header");
    assert_eq!(h[1] & 0x80, 0, "server frames must not be masked");
    let len = match h[1] & 0x7F {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).unwrap();
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).unwrap();
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut p = vec![0; len];
    s.read_exact(&mut p).unwrap();
    (h[0], p)
}

/// Reads frames until a close frame; returns its code and reason.
pub fn read_close(s: &mut TcpStream) -> (u16, String) {
    loop {
        let (first, p) = read_frame(s);
        if first & 0x0F == 0x8 {
            assert_eq!(first, 0x88);
            if p.is_empty() {
                return (1005, String::new());
            }
            return (
                u16::from_be_bytes([p[0], p[1]]),
                String::from_utf8(p[2..].to_vec()).unwrap(),
            );
        }
    }
}

/// After a close, the server ends the TCP connection (reads return 0 or an error).
pub fn expect_eof(s: &mut TcpStream) {
    let mut b = [0u8; 1024];
    loop {
        match s.read(&mut b) {
            Ok(0) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

/// The address a `wsedge` child process logs ("listening on ADDR"); its log is drained from
/// then on so it never blocks on a full pipe.
pub fn listening_addr(child: &mut std::process::Child) -> SocketAddr {
    use std::io::BufRead;
    let err = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(err).lines();
    let addr = loop {
        let line = lines.next().expect("the server logs its address").unwrap();
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    addr
}

/// A prerequisite program: present, or the test stops at once naming the package to install
/// (tests never install system packages; `.ci/run` does on a fresh machine).
pub fn require(program: &str, package: &str) {
    let present = std::process::Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    assert!(
        present,
        "this test needs `{program}`: install it with `apt-get install {package}` (.ci/run does)"
    );
}

/// Headless Debian `chromium` with a fresh profile in `profile`, quiet and offline.
pub fn headless_chromium(profile: &std::path::Path) -> std::process::Command {
    require("chromium", "chromium");
    let mut cmd = std::process::Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-sync",
    ])
    .args(["--disable-background-networking", "--disable-component-update"])
    .arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

/// A TCP connection to `addr` from the loopback address `source` (127.0.0.2, ...): per-address
/// limits see a separate client.
#[allow(dead_code)]
pub fn from(addr: std::net::SocketAddr, source: &str) -> std::net::TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&format!("{source}:0").parse::<std::net::SocketAddr>().unwrap().into())
        .unwrap();
    s.connect(&addr.into()).unwrap();
    let s: std::net::TcpStream = s.into();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s
}
