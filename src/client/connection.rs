//! One WebSocket connection of a client: its settings ([`ClientConfig`], from code or the
//! `WS_*` variables), the upgrade, keepalive pings with the measured round trip, and close.
//!
//! Owns: the [`Client`]. Does not touch: reconnecting (`backoff`, `session`) or the bytes
//! under TLS (`stream`).

use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::{Bytes, Message};

use super::error::ClientError;
use super::stream::{ClientStream, Roots};

/// How a client connects. [`ClientConfig::from_env`] reads the `WS_*` variables.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Extra request headers (e.g. `Authorization`).
    pub headers: Vec<(String, String)>,
    /// Offered in `Sec-WebSocket-Protocol`, in order; [`Client::subprotocol`] says which one the
    /// server chose.
    pub subprotocols: Vec<String>,
    /// TCP connect, TLS and upgrade together (`WS_OPEN_TIMEOUT`, default 10 s).
    pub open_timeout: Duration,
    /// A ping this long after the last one while receiving (`WS_PING_INTERVAL`, default 20 s;
    /// `None`: no pings).
    pub ping_interval: Option<Duration>,
    /// No pong this long after a ping: the connection is dead (`WS_PING_TIMEOUT`, default 20 s).
    pub pong_timeout: Duration,
    /// Largest message accepted or sent (`WS_MAX_MESSAGE_SIZE`, default 1 MiB).
    pub max_message_size: usize,
    /// Trusted authorities for `wss://`.
    pub roots: Roots,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            headers: Vec::new(),
            subprotocols: Vec::new(),
            open_timeout: Duration::from_secs(10),
            ping_interval: Some(Duration::from_secs(20)),
            pong_timeout: Duration::from_secs(20),
            max_message_size: 1 << 20,
            roots: Roots::System,
        }
    }
}

impl ClientConfig {
    /// Defaults, overridden by `WS_OPEN_TIMEOUT`, `WS_PING_INTERVAL` (seconds, or `none`),
    /// `WS_PING_TIMEOUT`, `WS_MAX_MESSAGE_SIZE` when set and valid.
    pub fn from_env() -> Self {
        let mut c = ClientConfig::default();
        if let Some(d) = env_secs("WS_OPEN_TIMEOUT") {
            c.open_timeout = d;
        }
        match std::env::var("WS_PING_INTERVAL").ok().as_deref() {
            Some("none" | "None" | "0") => c.ping_interval = None,
            _ => {
                if let Some(d) = env_secs("WS_PING_INTERVAL") {
                    c.ping_interval = Some(d);
                }
            }
        }
        if let Some(d) = env_secs("WS_PING_TIMEOUT") {
            c.pong_timeout = d;
        }
        if let Some(n) = std::env::var("WS_MAX_MESSAGE_SIZE").ok().and_then(|v| v.parse().ok()) {
            c.max_message_size = n;
        }
        c
    }
}

pub(crate) fn env_secs(name: &str) -> Option<Duration> {
    let v: f64 = std::env::var(name).ok()?.parse().ok()?;
    Duration::try_from_secs_f64(v).ok()
}

/// An open WebSocket connection.
pub struct Client {
    ws: tungstenite::WebSocket<ClientStream>,
    config: ClientConfig,
    subprotocol: Option<String>,
    last_ping: Instant,
    awaiting_pong: Option<(Instant, u64)>,
    pings: u64,
    latency: Option<Duration>,
    closed: Option<(u16, String)>,
}

impl Client {
    /// Connects to `url` (`ws://` or `wss://`), TLS and upgrade included, within
    /// `open_timeout`.
    pub fn connect(url: &str, config: ClientConfig) -> Result<Client, ClientError> {
        let deadline = Instant::now() + config.open_timeout;
        let mut request = url.into_client_request().map_err(|e| ClientError::Url(e.to_string()))?;
        let uri = request.uri().clone();
        let tls = match uri.scheme_str() {
            Some("wss") => true,
            Some("ws") => false,
            other => return Err(ClientError::Url(format!("scheme {other:?}: expected ws or wss"))),
        };
        let host = uri
            .host()
            .ok_or_else(|| ClientError::Url("no host".into()))?
            .to_string();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        for (k, v) in &config.headers {
            let name = tungstenite::http::HeaderName::try_from(k.as_str())
                .map_err(|e| ClientError::Url(format!("header {k}: {e}")))?;
            let value = HeaderValue::from_str(v).map_err(|e| ClientError::Url(format!("header {k}: {e}")))?;
            request.headers_mut().append(name, value);
        }
        if !config.subprotocols.is_empty() {
            let value = HeaderValue::from_str(&config.subprotocols.join(", "))
                .map_err(|e| ClientError::Url(format!("subprotocols: {e}")))?;
            request.headers_mut().insert("Sec-WebSocket-Protocol", value);
        }
        let tcp = connect_tcp(host.trim_start_matches('[').trim_end_matches(']'), port, deadline)?;
        let stream = if tls {
            ClientStream::tls(tcp, &host, &config.roots)?
        } else {
            ClientStream::Plain(tcp)
        };
        stream.set_timeout(Some(remaining(deadline)?));
        let ws_config = tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(config.max_message_size))
            .max_frame_size(Some(config.max_message_size));
        let (ws, response) = match tungstenite::client::client_with_config(request, stream, Some(ws_config)) {
            Ok(ok) => ok,
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
                let body = resp
                    .body()
                    .as_deref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                return Err(ClientError::Rejected {
                    status: resp.status().as_u16(),
                    body,
                });
            }
            Err(tungstenite::HandshakeError::Interrupted(_)) => {
                return Err(ClientError::Timeout("opening the connection"));
            }
            Err(tungstenite::HandshakeError::Failure(e)) => {
                return Err(match map_error(e, "upgrade") {
                    // TLS failures (an unknown certificate, ...) and resets come as I/O errors.
                    ClientError::Closed { reason, .. } => ClientError::ConnectionFailed(reason),
                    other => other,
                });
            }
        };
        let subprotocol = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(Client {
            ws,
            config,
            subprotocol,
            last_ping: Instant::now(),
            awaiting_pong: None,
            pings: 0,
            latency: None,
            closed: None,
        })
    }

    /// The subprotocol the server selected, if any.
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// The last measured ping round trip (WebSocket ping to pong).
    pub fn latency(&self) -> Option<Duration> {
        self.latency
    }

    pub fn send_text(&mut self, text: impl Into<String>) -> Result<(), ClientError> {
        let text: String = text.into();
        self.send(Message::text(text))
    }

    pub fn send_binary(&mut self, data: impl Into<Bytes>) -> Result<(), ClientError> {
        self.send(Message::Binary(data.into()))
    }

    pub fn send_json<T: serde::Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ClientError> {
        self.send_text(serde_json::to_string(value)?)
    }

    /// Sends a message (text, binary, ping, pong, close) and flushes it.
    pub fn send(&mut self, message: Message) -> Result<(), ClientError> {
        if message.len() > self.config.max_message_size {
            return Err(ClientError::MessageTooLarge(format!(
                "{} bytes, the limit is {}",
                message.len(),
                self.config.max_message_size
            )));
        }
        self.check_open()?;
        self.ws
            .get_mut()
            .set_timeout(Some(self.config.open_timeout.max(Duration::from_secs(1))));
        match self.ws.send(message) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail(e, "sending")),
        }
    }

    /// The next text or binary message. Pings are answered, our pings sent and timed, while it
    /// waits. Errors once the connection is closed (with the close frame's code and reason).
    pub fn recv(&mut self) -> Result<Message, ClientError> {
        loop {
            if let Some(m) = self.recv_timeout(None)? {
                return Ok(m);
            }
        }
    }

    /// As [`Client::recv`], but `Ok(None)` once `timeout` (if any) has passed with no message.
    pub fn recv_timeout(&mut self, timeout: Option<Duration>) -> Result<Option<Message>, ClientError> {
        let until = timeout.map(|t| Instant::now() + t);
        loop {
            if until.is_some_and(|u| Instant::now() >= u) {
                return Ok(None);
            }
            self.check_open()?;
            let now = Instant::now();
            if let Some((sent, _)) = self.awaiting_pong
                && now >= sent + self.config.pong_timeout
            {
                self.closed = Some((1006, "no pong".into()));
                return Err(ClientError::Timeout("no pong within the pong timeout"));
            }
            if let Some(every) = self.config.ping_interval
                && self.awaiting_pong.is_none()
                && now >= self.last_ping + every
            {
                self.pings += 1;
                self.last_ping = now;
                self.awaiting_pong = Some((now, self.pings));
                let payload = Bytes::copy_from_slice(&self.pings.to_be_bytes());
                if let Err(e) = self.ws.send(Message::Ping(payload)) {
                    return Err(self.fail(e, "pinging"));
                }
            }
            let wait = match (self.next_wakeup(now), until) {
                (Some(a), Some(u)) => Some(a.min(u.saturating_duration_since(now).max(Duration::from_millis(1)))),
                (a, None) => a,
                (None, Some(u)) => Some(u.saturating_duration_since(now).max(Duration::from_millis(1))),
            };
            self.ws.get_mut().set_timeout(wait);
            match self.ws.read() {
                Ok(m @ (Message::Text(_) | Message::Binary(_))) => return Ok(Some(m)),
                Ok(Message::Pong(p)) => {
                    if let Some((sent, n)) = self.awaiting_pong
                        && p.as_ref() == n.to_be_bytes()
                    {
                        self.latency = Some(sent.elapsed());
                        self.awaiting_pong = None;
                    }
                }
                Ok(Message::Ping(_)) => {
                    // tungstenite queued the pong; it leaves with this flush.
                    let _ = self.ws.flush();
                }
                Ok(Message::Close(frame)) => {
                    let (code, reason) =
                        frame.map_or((1005, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
                    let _ = self.ws.flush();
                    self.closed = Some((code, reason.clone()));
                    return Err(ClientError::from_close(code, reason));
                }
                Ok(Message::Frame(_)) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(self.fail(e, "receiving")),
            }
        }
    }

    /// The next message parsed as JSON (a binary message must hold JSON too).
    pub fn recv_json(&mut self) -> Result<serde_json::Value, ClientError> {
        match self.recv()? {
            Message::Text(t) => Ok(serde_json::from_str(&t)?),
            Message::Binary(b) => Ok(serde_json::from_slice(&b)?),
            _ => unreachable!("recv returns only data messages"),
        }
    }

    /// Messages until the connection closes; the last item is the error that ended it.
    pub fn messages(&mut self) -> impl Iterator<Item = Result<Message, ClientError>> + '_ {
        let mut done = false;
        std::iter::from_fn(move || {
            if done {
                return None;
            }
            let m = self.recv();
            done = m.is_err();
            Some(m)
        })
    }

    /// Closes with `code` and `reason`, waits (up to `open_timeout`) for the server's close
    /// frame, and returns the server's code.
    pub fn close(&mut self, code: u16, reason: &str) -> Result<u16, ClientError> {
        if let Some((code, _)) = &self.closed {
            return Ok(*code);
        }
        let frame = tungstenite::protocol::CloseFrame {
            code: code.into(),
            reason: reason.to_string().into(),
        };
        self.ws.get_mut().set_timeout(Some(self.config.open_timeout));
        if let Err(e) = self.ws.close(Some(frame)) {
            return Err(self.fail(e, "closing"));
        }
        let deadline = Instant::now() + self.config.open_timeout;
        loop {
            match self.ws.read() {
                Ok(Message::Close(f)) => {
                    let got = f.map_or(1005, |f| u16::from(f.code));
                    let _ = self.ws.flush();
                    self.closed = Some((got, String::new()));
                    return Ok(got);
                }
                Ok(_) => {}
                Err(tungstenite::Error::ConnectionClosed) => return Ok(code),
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
                {
                    if Instant::now() >= deadline {
                        return Err(ClientError::Timeout("waiting for the close frame"));
                    }
                }
                Err(e) => return Err(self.fail(e, "closing")),
            }
        }
    }

    fn check_open(&self) -> Result<(), ClientError> {
        match &self.closed {
            Some((code, reason)) => Err(ClientError::from_close(*code, reason.clone())),
            None => Ok(()),
        }
    }

    /// How long `recv` may block before a ping or the pong deadline needs it.
    fn next_wakeup(&self, now: Instant) -> Option<Duration> {
        let due = match (self.awaiting_pong, self.config.ping_interval) {
            (Some((sent, _)), _) => Some(sent + self.config.pong_timeout),
            (None, Some(every)) => Some(self.last_ping + every),
            (None, None) => None,
        };
        due.map(|d| d.saturating_duration_since(now).max(Duration::from_millis(1)))
    }

    fn fail(&mut self, e: tungstenite::Error, during: &'static str) -> ClientError {
        let err = map_error(e, during);
        if self.closed.is_none() {
            let (code, reason) = match &err {
                ClientError::Closed { code, reason } => (*code, reason.clone()),
                other => (1006, other.to_string()),
            };
            self.closed = Some((code, reason));
        }
        err
    }
}

fn map_error(e: tungstenite::Error, during: &'static str) -> ClientError {
    match e {
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => ClientError::Closed {
            code: 1006,
            reason: "connection closed".into(),
        },
        tungstenite::Error::Capacity(c) => ClientError::MessageTooLarge(c.to_string()),
        tungstenite::Error::Io(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
            ClientError::Timeout(during)
        }
        tungstenite::Error::Io(e) => ClientError::Closed {
            code: 1006,
            reason: e.to_string(),
        },
        tungstenite::Error::Url(e) => ClientError::Url(e.to_string()),
        other => ClientError::Protocol(other.to_string()),
    }
}

fn remaining(deadline: Instant) -> Result<Duration, ClientError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(ClientError::Timeout("opening the connection"));
    }
    Ok(left)
}

fn connect_tcp(host: &str, port: u16, deadline: Instant) -> Result<TcpStream, ClientError> {
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| ClientError::ConnectionFailed(format!("{host}: {e}")))?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, remaining(deadline)?) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(ClientError::ConnectionFailed(match last {
        Some(e) => format!("{host}:{port}: {e}"),
        None => format!("{host}: no address"),
    }))
}
