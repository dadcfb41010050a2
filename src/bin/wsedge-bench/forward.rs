//! `forward`: client messages forwarded by the server's backend bridge, measured at the
//! backend. C clients send `chat` messages carrying their send time; a sink in this process
//! stands for the backend (an HTTP server answering `200 {}`, or a reader of the Redis
//! stream) and records each item's arrival. Reports forwarded messages per second, requests
//! per second and items per request, and send-to-backend latency percentiles.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde_json::json;

use crate::engine::{Driver, Engine};
use crate::scenarios::{Common, Cpu, hist, per_unit, print, us};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    common: Common,
    #[arg(long, default_value_t = 1000)]
    conns: usize,
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    /// Messages per second over all clients (0: as fast as the backend takes them, with at
    /// most --window sent and not yet at the backend).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    #[arg(long, default_value_t = 5000)]
    window: u64,
    /// Messages each chosen client sends back to back in one write (1: one message per
    /// write, as independent clients send).
    #[arg(long, default_value_t = 1)]
    burst: usize,
    /// The sink is an HTTP backend listening here (the server's --backend-url points at it).
    #[arg(long)]
    sink: Option<std::net::SocketAddr>,
    /// The sink reads this Redis stream instead (`HOST:PORT/KEY`; the server's
    /// --backend-stream).
    #[arg(long)]
    stream: Option<String>,
}

/// What the sink saw.
#[derive(Default)]
struct Seen {
    items: AtomicU64,
    requests: AtomicU64,
    latency: Mutex<Option<Histogram<u64>>>,
    /// Record latencies from now on (after the warm-up).
    measuring: std::sync::atomic::AtomicBool,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Counts the items in `body` and records the latency of each `"t":<send time>`.
fn record(seen: &Seen, body: &[u8]) {
    let now = now_us();
    let mut n = 0;
    let mut local = Vec::new();
    let mut rest = body;
    while let Some(i) = rest.windows(4).position(|w| w == b"\"t\":") {
        rest = &rest[i + 4..];
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if let Some(t) = std::str::from_utf8(&rest[..digits])
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        {
            n += 1;
            local.push(now.saturating_sub(t).max(1));
        }
    }
    seen.items.fetch_add(n, Ordering::Relaxed);
    if seen.measuring.load(Ordering::Relaxed) {
        let mut h = seen.latency.lock().unwrap_or_else(|e| e.into_inner());
        let h = h.get_or_insert_with(hist);
        for l in local {
            let _ = h.record(l);
        }
    }
}

/// The HTTP sink: a thread per connection, keep-alive, `200 {}` to every request.
fn http_sink(listener: TcpListener, seen: Arc<Seen>) {
    for s in listener.incoming().flatten() {
        let seen = seen.clone();
        std::thread::spawn(move || serve(s, &seen));
    }
}

fn serve(mut s: TcpStream, seen: &Seen) {
    let _ = s.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        let (head, len) = match req.parse(&buf) {
            Ok(httparse::Status::Complete(n)) => {
                let len = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
                    .unwrap_or(0);
                (n, len)
            }
            Ok(httparse::Status::Partial) => (0, 0),
            Err(_) => return,
        };
        if head > 0 && buf.len() >= head + len {
            record(seen, &buf[head..head + len]);
            seen.requests.fetch_add(1, Ordering::Relaxed);
            buf.drain(..head + len);
            if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").is_err() {
                return;
            }
            continue;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The stream sink: `XREAD BLOCK` from the end of the stream, one reply at a time.
fn stream_sink(addr: String, key: String, seen: Arc<Seen>) {
    let Ok(mut s) = TcpStream::connect(&addr) else {
        eprintln!("wsedge-bench: cannot connect to redis at {addr}");
        return;
    };
    let mut last = "$".to_string();
    let mut buf = bytes::BytesMut::new();
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let args = ["XREAD", "COUNT", "5000", "BLOCK", "1000", "STREAMS", &key, &last];
        let mut cmd = format!("*{}\r\n", args.len());
        for a in args {
            cmd.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        if s.write_all(cmd.as_bytes()).is_err() {
            return;
        }
        let frame = loop {
            match redis_protocol::resp2::decode::decode_bytes_mut(&mut buf) {
                Ok(Some((f, _, _))) => break f,
                Ok(None) => match s.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                },
                Err(_) => return,
            }
        };
        seen.requests.fetch_add(1, Ordering::Relaxed);
        walk(&frame, &mut last, seen.as_ref());
    }
}

/// Entries in an XREAD reply: their ids (the last one kept) and items.
fn walk(f: &redis_protocol::resp2::types::BytesFrame, last: &mut String, seen: &Seen) {
    use redis_protocol::resp2::types::BytesFrame as F;
    if let F::Array(a) = f {
        // An entry is [id, [field, value]].
        if let [F::BulkString(id), F::Array(fields)] = a.as_slice()
            && let Some(F::BulkString(item)) = fields.get(1)
        {
            *last = String::from_utf8_lossy(id).into_owned();
            record(seen, item);
            return;
        }
        for x in a {
            walk(x, last, seen);
        }
    }
}

struct Forward {
    conns: usize,
    open: usize,
    rate: f64,
    window: u64,
    secs: f64,
    started: Option<Instant>,
    sent: u64,
    errors: u64,
    next: usize,
    burst: usize,
    seen: Arc<Seen>,
}

impl Driver for Forward {
    fn on_open(&mut self, _e: &mut Engine, _id: usize) {
        self.open += 1;
    }
    fn on_message(&mut self, _e: &mut Engine, _id: usize, _: u8, p: &[u8]) {
        if p.windows(17).any(|w| w == b"\"type\":\"error\"") || p.starts_with(b"{\"type\":\"error\"") {
            self.errors += 1;
        }
    }
    fn tick(&mut self, e: &mut Engine) -> bool {
        while e.clients.len() < self.conns {
            let tag = e.clients.len();
            if e.open(tag).is_err() {
                return false;
            }
        }
        if self.open < self.conns {
            return true;
        }
        let t0 = *self.started.get_or_insert_with(|| {
            self.seen.measuring.store(true, Ordering::Relaxed);
            Instant::now()
        });
        let elapsed = t0.elapsed().as_secs_f64();
        if elapsed >= self.secs {
            return false;
        }
        let due = if self.rate > 0.0 {
            ((elapsed * self.rate) as u64).saturating_sub(self.sent)
        } else {
            let at_backend = self.seen.items.load(Ordering::Relaxed);
            (self.window + at_backend).saturating_sub(self.sent).min(2000)
        };
        let ids: Vec<usize> = e.clients.iter().map(|(id, _)| id).collect();
        let mut left = due;
        while left > 0 {
            let id = ids[self.next % ids.len()];
            self.next += 1;
            let n = left.min(self.burst as u64);
            let msgs: Vec<String> = (0..n)
                .map(|_| format!(r#"{{"type":"chat","data":{{"t":{}}}}}"#, now_us()))
                .collect();
            e.send_texts(id, msgs.iter().map(|m| m.as_bytes()));
            self.sent += n;
            left -= n;
        }
        true
    }
}

pub fn run(a: Args) -> Result<(), String> {
    let seen = Arc::new(Seen::default());
    match (&a.sink, &a.stream) {
        (Some(addr), None) => {
            let l = TcpListener::bind(addr).map_err(|e| format!("sink {addr}: {e}"))?;
            let s = seen.clone();
            std::thread::spawn(move || http_sink(l, s));
        }
        (None, Some(spec)) => {
            let (addr, key) = spec.split_once('/').ok_or("--stream is HOST:PORT/KEY")?;
            let (addr, key, s) = (addr.to_string(), key.to_string(), seen.clone());
            std::thread::spawn(move || stream_sink(addr, key, s));
        }
        _ => return Err("give --sink ADDR or --stream HOST:PORT/KEY".into()),
    }
    let target = a.common.target(a.conns, 1)?;
    let mut e = Engine::new(target).map_err(|err| err.to_string())?;
    let mut d = Forward {
        conns: a.conns,
        open: 0,
        rate: a.rate,
        window: a.window.max(1),
        secs: a.secs,
        started: None,
        sent: 0,
        errors: 0,
        next: 0,
        burst: a.burst.max(1),
        seen: seen.clone(),
    };
    let mut cpu: Option<Cpu> = None;
    let pid = a.common.pid;
    struct WithCpu<'a> {
        d: &'a mut Forward,
        cpu: &'a mut Option<Cpu>,
        pid: Option<u32>,
    }
    impl Driver for WithCpu<'_> {
        fn on_open(&mut self, e: &mut Engine, id: usize) {
            self.d.on_open(e, id)
        }
        fn on_message(&mut self, e: &mut Engine, id: usize, op: u8, p: &[u8]) {
            self.d.on_message(e, id, op, p)
        }
        fn tick(&mut self, e: &mut Engine) -> bool {
            let go = self.d.tick(e);
            if self.cpu.is_none() && self.d.started.is_some() {
                *self.cpu = Some(Cpu::start_all(self.pid, Vec::new()));
            }
            go
        }
    }
    e.run(
        &mut WithCpu {
            d: &mut d,
            cpu: &mut cpu,
            pid,
        },
        Duration::from_secs_f64(a.secs + 60.0),
    );
    let secs = d.started.map_or(0.0, |t| t.elapsed().as_secs_f64()).max(1e-9);
    // Let the last in-flight items arrive.
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen.items.load(Ordering::Relaxed) < d.sent && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let items = seen.items.load(Ordering::Relaxed);
    let requests = seen.requests.load(Ordering::Relaxed).max(1);
    let (server_cpu, _) = cpu.as_ref().map_or((None, 0), Cpu::stop);
    let h = seen
        .latency
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .unwrap_or_else(hist);
    print(
        json!({
            "scenario": if a.stream.is_some() { "forward-stream" } else { "forward-http" },
            "connections": a.conns,
            "rate": a.rate,
            "burst": a.burst,
            "sent": d.sent,
            "at_backend": items,
            "forwarded_per_second": (items as f64 / secs).round(),
            "requests_per_second": (requests as f64 / secs).round(),
            "items_per_request": (items as f64 / requests as f64 * 10.0).round() / 10.0,
            "latency_p50_us": us(&h, 0.5),
            "latency_p99_us": us(&h, 0.99),
            "latency_p999_us": us(&h, 0.999),
            "server_cpu_us_per_message": per_unit(server_cpu, items),
            "client_errors": d.errors,
            "errors": e.errors,
        }),
        a.common.json,
    );
    Ok(())
}
