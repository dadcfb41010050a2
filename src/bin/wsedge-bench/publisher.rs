//! Publishing through the admin HTTP API for the `fanout` scenario, in three ways a backend
//! might: a new connection per request (`close`), one keep-alive connection with requests
//! pipelined (`keepalive`), or `POST /ws/batch` with several publishes per request (`batch`).
//! Requests are written and answers read on threads of their own, so the scenario's event loop
//! keeps receiving deliveries while it publishes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use serde_json::json;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// One short-lived connection per publish (`Connection: close`).
    Close,
    /// One keep-alive connection, requests pipelined.
    Keepalive,
    /// One keep-alive connection, up to `--batch-size` publishes per `POST /ws/batch`.
    Batch,
}

pub struct AdminPublisher {
    /// Bytes of realistic filler (a list of records) added to each message's data.
    pub pad: usize,
    addr: SocketAddr,
    token: String,
    event: String,
    mode: Mode,
    batch_size: usize,
    /// Publishes due but not yet written: `(seq, t)`.
    due: Vec<(usize, u64)>,
    /// Requests for the keep-alive writer thread.
    writer: Option<mpsc::Sender<Vec<u8>>>,
    /// Answers that were not 200 (or requests that failed).
    pub failures: Arc<AtomicUsize>,
}

impl AdminPublisher {
    pub fn new(addr: SocketAddr, token: String, event: String, mode: Mode, batch_size: usize) -> Self {
        AdminPublisher {
            pad: 0,
            addr,
            token,
            event,
            mode,
            batch_size: batch_size.max(1),
            due: Vec::new(),
            writer: None,
            failures: Arc::default(),
        }
    }

    /// Queues one publish of `{"seq": seq, "t": t}`; [`flush`](Self::flush) sends it.
    pub fn publish(&mut self, seq: usize, t: u64) {
        self.due.push((seq, t));
    }

    /// Writes every queued publish (in one go: pipelined, or batched).
    pub fn flush(&mut self) {
        if self.due.is_empty() {
            return;
        }
        let due = std::mem::take(&mut self.due);
        match self.mode {
            Mode::Close => {
                for (seq, t) in due {
                    let req = self.request(&format!("/ws/events/{}", self.event), &data(seq, t, self.pad), true);
                    let failures = self.failures.clone();
                    let addr = self.addr;
                    std::thread::spawn(move || {
                        let ok = TcpStream::connect(addr).and_then(|mut s| {
                            s.write_all(&req)?;
                            let mut answer = Vec::new();
                            s.read_to_end(&mut answer)?;
                            Ok(answer.starts_with(b"HTTP/1.1 200"))
                        });
                        if !matches!(ok, Ok(true)) {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
            }
            Mode::Keepalive => {
                let mut out = Vec::new();
                for (seq, t) in due {
                    out.extend(self.request(&format!("/ws/events/{}", self.event), &data(seq, t, self.pad), false));
                }
                self.send(out);
            }
            Mode::Batch => {
                let mut out = Vec::new();
                for chunk in due.chunks(self.batch_size) {
                    let commands: Vec<_> = chunk
                        .iter()
                        .map(|&(seq, t)| {
                            json!({"method": "publish", "params": {"event": self.event, "data": fields(seq, t, self.pad)}})
                        })
                        .collect();
                    let body = json!({ "commands": commands }).to_string();
                    out.extend(self.request("/ws/batch", &body, false));
                }
                self.send(out);
            }
        }
    }

    fn request(&self, path: &str, body: &str, close: bool) -> Vec<u8> {
        format!(
            "POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n{body}",
            self.token,
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        )
        .into_bytes()
    }

    /// Hands bytes to the keep-alive connection's writer (opened on first use).
    fn send(&mut self, bytes: Vec<u8>) {
        if self.writer.is_none() {
            self.writer = self.open();
        }
        let sent = self.writer.as_ref().is_some_and(|w| w.send(bytes).is_ok());
        if !sent {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn open(&self) -> Option<mpsc::Sender<Vec<u8>>> {
        let stream = TcpStream::connect(self.addr).ok()?;
        let _ = stream.set_nodelay(true);
        let mut reader = stream.try_clone().ok()?;
        let mut writer = stream;
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        std::thread::spawn(move || {
            for bytes in rx {
                if writer.write_all(&bytes).is_err() {
                    return;
                }
            }
        });
        let failures = self.failures.clone();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 16384];
            loop {
                while let Some((status, len)) = next_response(&buf) {
                    if status != 200 {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                    buf.drain(..len);
                }
                match reader.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        });
        Some(tx)
    }
}

fn data(seq: usize, t: u64, pad: usize) -> String {
    json!({ "data": fields(seq, t, pad) }).to_string()
}

/// `{"seq", "t"}`, with `items` (records like an application's) making it about `pad` bytes
/// longer. Keys are sorted, so `"seq":N,"t":M` stays together for the subscribers' parser.
fn fields(seq: usize, t: u64, pad: usize) -> serde_json::Value {
    let mut items = Vec::new();
    let mut len = 0;
    let mut i = 0u64;
    while len < pad {
        let status = ["pending", "processing", "done"][(i % 3) as usize];
        let item = json!({
            "id": format!("{:08x}", i.wrapping_mul(2_654_435_761) as u32),
            "name": format!("file-{i}.pdf"),
            "status": status,
            "progress": (i * 37) % 101,
            "updated_by": format!("user-{}", i % 17),
        });
        len += item.to_string().len() + 1;
        items.push(item);
        i += 1;
    }
    if items.is_empty() {
        json!({"seq": seq, "t": t})
    } else {
        json!({"items": items, "seq": seq, "t": t})
    }
}

/// The status and total length of the first complete response in `buf`.
fn next_response(buf: &[u8]) -> Option<(u16, usize)> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let status = head.get(9..12)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    (buf.len() >= head_end + length).then_some((status, head_end + length))
}
