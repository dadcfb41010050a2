//! The mio-driven scenarios: handshake, echo, fanout, churn. Each prints a table or, with
//! `--json`, one JSON object, including the server's CPU cost per unit of work (from
//! /proc/PID/stat) and the load generator's own CPU use.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::engine::{Driver, Engine, Target};
use crate::proc_stats::{cpu_us, memory, open_files};

/// Options every mio scenario shares.
#[derive(clap::Args, Clone)]
pub struct Common {
    /// ws://IP:PORT/path of the server.
    #[arg(long)]
    pub url: String,
    /// Server PID, for its CPU time, RSS and open files.
    #[arg(long)]
    pub pid: Option<u32>,
    /// More server processes (other cluster nodes, Redis) whose CPU time counts as the
    /// server's (repeatable).
    #[arg(long)]
    pub also_pid: Vec<u32>,
    /// HS256 secret: mint tokens (the protocol server). Without it: the echo protocol.
    #[arg(long, env = "WS_JWT_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Source addresses to spread over (127.0.0.2, ...).
    #[arg(long, default_value_t = 4)]
    pub sources: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Offer permessage-deflate (and inflate what comes compressed).
    #[arg(long)]
    pub deflate: bool,
    /// Over wss://, let connections resume TLS sessions from tickets the server gave earlier
    /// ones (off: every handshake is a full one).
    #[arg(long)]
    pub tls_resume: bool,
    /// Over wss://, the key exchange groups offered, in order, comma-separated (x25519, p256,
    /// p384): a key share goes for the first. `p384,x25519` is what a client following rustls
    /// 0.23.48's ring default offers.
    #[arg(long, default_value = "x25519,p256,p384")]
    pub tls_groups: String,
}

impl Common {
    pub(crate) fn target(&self, users: usize, per_user: usize) -> Result<Target, String> {
        let tokens = match &self.secret {
            Some(s) => Some(
                (0..users.max(1))
                    .map(|u| {
                        wsedge::auth::mint_hs256(s.as_bytes(), &format!("bench-{u}"), None, 3600)
                            .map_err(|e| e.to_string())
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            None => None,
        };
        Ok(Target {
            deflate: self.deflate,
            tls_resume: self.tls_resume,
            tls_groups: crate::tls::groups(&self.tls_groups)?,
            ..Target::at(&self.url, tokens, per_user, self.sources)?
        })
    }
}

/// Server and client CPU over a measured interval.
pub(crate) struct Cpu {
    pid: Option<u32>,
    also: Vec<u32>,
    server0: u64,
    client0: u64,
}

impl Cpu {
    fn start(pid: Option<u32>) -> Self {
        Self::start_all(pid, Vec::new())
    }

    pub(crate) fn start_all(pid: Option<u32>, also: Vec<u32>) -> Self {
        let mut c = Cpu {
            pid,
            also,
            server0: 0,
            client0: cpu_us(None),
        };
        c.server0 = c.server_now();
        c
    }

    fn server_now(&self) -> u64 {
        self.pid.map_or(0, |p| cpu_us(Some(p))) + self.also.iter().map(|&p| cpu_us(Some(p))).sum::<u64>()
    }

    /// (server CPU µs, client CPU µs) since start.
    pub(crate) fn stop(&self) -> (Option<u64>, u64) {
        (
            self.pid.map(|_| self.server_now() - self.server0),
            cpu_us(None) - self.client0,
        )
    }
}

/// Wraps a driver; CPU accounting starts on the first turn where `ready` holds (after the
/// connections are set up, which is not what is being measured).
struct Measured<'a, D> {
    inner: &'a mut D,
    ready: fn(&D) -> bool,
    pid: Option<u32>,
    also: Vec<u32>,
    cpu: Option<Cpu>,
}

impl<D: Driver> Driver for Measured<'_, D> {
    fn on_open(&mut self, e: &mut Engine, id: usize) {
        self.inner.on_open(e, id)
    }
    fn on_message(&mut self, e: &mut Engine, id: usize, op: u8, p: &[u8]) {
        self.inner.on_message(e, id, op, p)
    }
    fn on_closed(&mut self, e: &mut Engine, id: usize, tag: usize) {
        self.inner.on_closed(e, id, tag)
    }
    fn tick(&mut self, e: &mut Engine) -> bool {
        let go = self.inner.tick(e);
        if self.cpu.is_none() && (self.ready)(self.inner) {
            self.cpu = Some(Cpu::start_all(self.pid, self.also.clone()));
        }
        go
    }
}

pub(crate) fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

pub(crate) fn us(h: &Histogram<u64>, q: f64) -> u64 {
    if h.is_empty() { 0 } else { h.value_at_quantile(q) }
}

pub(crate) fn print(report: Value, json_out: bool) {
    if json_out {
        println!("{report}");
        return;
    }
    println!("{}", report["scenario"].as_str().unwrap_or("scenario"));
    for (k, v) in report.as_object().into_iter().flatten() {
        if k != "scenario" {
            println!("  {k:<36} {v}");
        }
    }
}

pub(crate) fn per_unit(cpu: Option<u64>, units: u64) -> Value {
    match cpu {
        Some(c) if units > 0 => json!((c as f64 / units as f64 * 100.0).round() / 100.0),
        _ => Value::Null,
    }
}

// ---------------------------------------------------------------- handshake

#[derive(clap::Args)]
pub struct HandshakeArgs {
    #[command(flatten)]
    common: Common,
    /// Handshakes in total.
    #[arg(long, default_value_t = 20_000)]
    total: usize,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
}

struct Handshakes {
    total: usize,
    concurrency: usize,
    started: usize,
    done: usize,
    failed: usize,
    hist: Histogram<u64>,
}

impl Driver for Handshakes {
    fn on_open(&mut self, e: &mut Engine, id: usize) {
        let took = e.clients[id].started.elapsed().as_micros() as u64;
        let _ = self.hist.record(took.max(1));
        self.done += 1;
        e.close(id);
    }
    fn on_message(&mut self, _: &mut Engine, _: usize, _: u8, _: &[u8]) {}
    fn on_closed(&mut self, _: &mut Engine, _: usize, _: usize) {
        self.failed += 1;
    }
    fn tick(&mut self, e: &mut Engine) -> bool {
        while self.started < self.total && e.clients.len() < self.concurrency {
            match e.open(self.started) {
                Ok(_) => self.started += 1,
                Err(_) => {
                    self.failed += 1;
                    self.started += 1;
                }
            }
        }
        self.done + self.failed < self.total
    }
}

pub fn handshake(a: HandshakeArgs) -> Result<(), String> {
    let target = a.common.target(a.total.div_ceil(3), 1)?;
    let mut e = Engine::new(target).map_err(|err| err.to_string())?;
    let mut d = Handshakes {
        total: a.total,
        concurrency: a.concurrency.max(1),
        started: 0,
        done: 0,
        failed: 0,
        hist: hist(),
    };
    let cpu = Cpu::start(a.common.pid);
    let t0 = Instant::now();
    e.run(&mut d, Duration::from_secs(300));
    let secs = t0.elapsed().as_secs_f64();
    let (server_cpu, client_cpu) = cpu.stop();
    print(
        json!({
            "scenario": "handshake",
            "handshakes": d.done,
            "failed": d.failed,
            "handshakes_per_second": (d.done as f64 / secs).round(),
            "latency_p50_us": us(&d.hist, 0.5),
            "latency_p99_us": us(&d.hist, 0.99),
            "server_cpu_us_per_handshake": per_unit(server_cpu, d.done as u64),
            "client_cpu_percent": (client_cpu as f64 / 1e4 / secs).round(),
            "seconds": secs,
        }),
        a.common.json,
    );
    Ok(())
}

// ---------------------------------------------------------------- echo

#[derive(clap::Args)]
pub struct EchoArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, default_value_t = 100)]
    conns: usize,
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    /// Message size in bytes.
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
}

struct Echo {
    conns: usize,
    pipeline: usize,
    message: Vec<u8>,
    inflight: Vec<VecDeque<Instant>>,
    open: usize,
    started: Option<Instant>,
    secs: f64,
    replies: u64,
    hist: Histogram<u64>,
    stopping: bool,
}

impl Echo {
    fn send(&mut self, e: &mut Engine, id: usize) {
        let tag = e.clients[id].tag;
        self.inflight[tag].push_back(Instant::now());
        e.send_text(id, &self.message);
    }
}

impl Driver for Echo {
    fn on_open(&mut self, e: &mut Engine, id: usize) {
        self.open += 1;
        for _ in 0..self.pipeline {
            self.send(e, id);
        }
    }
    fn on_message(&mut self, e: &mut Engine, id: usize, _: u8, _: &[u8]) {
        let tag = e.clients[id].tag;
        let Some(sent) = self.inflight[tag].pop_front() else {
            return;
        };
        if self.started.is_some() && !self.stopping {
            self.replies += 1;
            let _ = self.hist.record((sent.elapsed().as_micros() as u64).max(1));
        }
        if !self.stopping {
            self.send(e, id);
        }
    }
    fn tick(&mut self, e: &mut Engine) -> bool {
        while e.clients.len() < self.conns && self.inflight.len() < self.conns {
            let tag = self.inflight.len();
            self.inflight.push(VecDeque::new());
            if e.open(tag).is_err() {
                return false;
            }
        }
        if self.started.is_none() && self.open == self.conns {
            self.started = Some(Instant::now());
        }
        match self.started {
            Some(t) if t.elapsed().as_secs_f64() >= self.secs => {
                self.stopping = true;
                false
            }
            _ => true,
        }
    }
}

pub fn echo(a: EchoArgs) -> Result<(), String> {
    let target = a.common.target(a.conns, 1)?;
    let protocol = target.protocol();
    let message = if protocol {
        let pad = a.size.saturating_sub(40);
        format!(r#"{{"type":"ping","data":{{"pingId":"{}"}}}}"#, "p".repeat(pad)).into_bytes()
    } else {
        vec![b'e'; a.size.max(1)]
    };
    let mut e = Engine::new(target).map_err(|err| err.to_string())?;
    let mut d = Echo {
        conns: a.conns,
        pipeline: a.pipeline.max(1),
        message,
        inflight: Vec::new(),
        open: 0,
        started: None,
        secs: a.secs,
        replies: 0,
        hist: hist(),
        stopping: false,
    };
    // Open everything first (not measured), then measure.
    let limit = Duration::from_secs_f64(a.secs + 60.0);
    let mut m = Measured {
        inner: &mut d,
        ready: |d: &Echo| d.started.is_some(),
        pid: a.common.pid,
        also: a.common.also_pid.clone(),
        cpu: None,
    };
    e.run(&mut m, limit);
    let cpu = m.cpu;
    let measured_from = d.started;
    let secs = measured_from.map_or(0.0, |t| t.elapsed().as_secs_f64()).max(1e-9);
    let (server_cpu, client_cpu) = cpu.as_ref().map_or((None, 0), Cpu::stop);
    print(
        json!({
            "scenario": "echo",
            "connections": a.conns,
            "size": a.size,
            "pipeline": a.pipeline,
            "messages": d.replies,
            "messages_per_second": (d.replies as f64 / secs).round(),
            "latency_p50_us": us(&d.hist, 0.5),
            "latency_p99_us": us(&d.hist, 0.99),
            "latency_p999_us": us(&d.hist, 0.999),
            "server_cpu_us_per_message": per_unit(server_cpu, d.replies),
            "client_cpu_percent": (client_cpu as f64 / 1e4 / secs).round(),
            "errors": e.errors,
        }),
        a.common.json,
    );
    Ok(())
}

// ---------------------------------------------------------------- fanout

#[derive(clap::Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    common: Common,
    /// Subscribers.
    #[arg(long, default_value_t = 1000)]
    conns: usize,
    /// Messages to publish.
    #[arg(long, default_value_t = 100)]
    msgs: usize,
    /// Messages per second (0: as fast as deliveries complete, one at a time).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Event type to subscribe to and publish (protocol server).
    #[arg(long, default_value = "system.notification")]
    event: String,
    /// How publishes reach the admin API (protocol server).
    #[arg(long, value_enum, default_value = "keepalive")]
    admin_mode: crate::publisher::Mode,
    /// Publishes per `POST /ws/batch` request (`--admin-mode batch`).
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Seconds to wait for deliveries after the last publish.
    #[arg(long, default_value_t = 30)]
    grace_secs: u64,
    /// Publish through the admin API at this address (another node, `--admin-listen`)
    /// instead of the subscribers' server.
    #[arg(long)]
    admin_addr: Option<std::net::SocketAddr>,
    /// Bytes of realistic JSON filler added to each published message (protocol server).
    #[arg(long, default_value_t = 0)]
    pad: usize,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

struct Fanout {
    subscribers: usize,
    msgs: usize,
    protocol: bool,
    event: String,
    ready: usize,
    publisher: Option<usize>,
    opened: usize,
    /// Received `[sub][msg]` bits.
    received: Vec<Vec<u64>>,
    deliveries: u64,
    duplicates: u64,
    per_message_last: Vec<u64>,
    per_message_count: Vec<usize>,
    sent_at: Vec<u64>,
    hist: Histogram<u64>,
    published: usize,
    rate: f64,
    publish_started: Option<Instant>,
    /// The generator's `wire_bytes` when publishing started.
    wire_start: u64,
    admin: Option<crate::publisher::AdminPublisher>,
    done_at: Option<Instant>,
    grace: Duration,
}

impl Fanout {
    fn publish(&mut self, e: &mut Engine) {
        let seq = self.published;
        let t = now_ns();
        self.sent_at[seq] = t;
        self.published += 1;
        match (&mut self.admin, self.publisher) {
            (Some(admin), _) => admin.publish(seq, t),
            (None, Some(p)) => e.send_text(p, format!("broadcast {seq} {t}").as_bytes()),
            _ => {}
        }
    }

    fn parse(&self, payload: &[u8]) -> Option<(usize, u64)> {
        if self.protocol {
            // `"seq":N,"t":M` picked out of the bytes without a JSON tree or UTF-8 check: at
            // millions of deliveries a second the generator, not the server, would otherwise be
            // what is measured.
            let at = payload.windows(6).position(|w| w == b"\"seq\":")? + 6;
            let (seq, rest) = digits(&payload[at..])?;
            let (t, _) = digits(rest.strip_prefix(b",\"t\":")?)?;
            Some((seq as usize, t))
        } else {
            let text = std::str::from_utf8(payload).ok()?;
            let mut it = text.split(' ').skip(1);
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        }
    }
}

/// The decimal number at the start of `b`, and what follows it.
fn digits(b: &[u8]) -> Option<(u64, &[u8])> {
    let end = b.iter().position(|c| !c.is_ascii_digit()).unwrap_or(b.len());
    if end == 0 || end > 19 {
        return None;
    }
    let n = b[..end].iter().fold(0u64, |n, c| n * 10 + u64::from(c - b'0'));
    Some((n, &b[end..]))
}

impl Driver for Fanout {
    fn on_open(&mut self, e: &mut Engine, id: usize) {
        if e.clients[id].tag == usize::MAX {
            self.publisher = Some(id);
            return;
        }
        if self.protocol {
            let sub = format!(r#"{{"type":"subscribe","data":{{"events":["{}"]}}}}"#, self.event);
            e.send_text(id, sub.as_bytes());
        } else {
            self.ready += 1;
        }
    }
    fn on_message(&mut self, e: &mut Engine, id: usize, _: u8, payload: &[u8]) {
        let tag = e.clients[id].tag;
        if tag == usize::MAX {
            return;
        }
        if self.protocol
            && self.ready < self.subscribers
            && payload.starts_with(b"{\"type\":\"subscription.acknowledged\"")
        {
            self.ready += 1;
            return;
        }
        let Some((seq, t)) = self.parse(payload) else { return };
        if seq >= self.msgs {
            return;
        }
        let (word, bit) = (seq / 64, 1u64 << (seq % 64));
        if self.received[tag][word] & bit != 0 {
            self.duplicates += 1;
            return;
        }
        self.received[tag][word] |= bit;
        self.deliveries += 1;
        let now = now_ns();
        let _ = self.hist.record((now.saturating_sub(t) / 1000).max(1));
        self.per_message_last[seq] = self.per_message_last[seq].max(now);
        self.per_message_count[seq] += 1;
    }
    fn tick(&mut self, e: &mut Engine) -> bool {
        let publisher_needed = self.admin.is_none();
        // Connect at most 500 at a time (as density and hold do): 10,000 simultaneous connects
        // overflow the kernel's queues on a cold machine and turn setup into retransmissions.
        if self.opened < self.subscribers {
            let settled = self.ready.min(self.opened);
            if e.ramp(&mut self.opened, settled, self.subscribers, 500) > 0 {
                return false;
            }
        }
        if publisher_needed && self.opened == self.subscribers {
            let _ = e.open(usize::MAX);
            self.opened += 1;
        }
        let all_ready = self.ready == self.subscribers && (!publisher_needed || self.publisher.is_some());
        if !all_ready {
            return true;
        }
        if self.publish_started.is_none() {
            // What the subscriptions cost on the wire is not what is measured.
            self.wire_start = e.wire_bytes;
        }
        let started = *self.publish_started.get_or_insert_with(Instant::now);
        while self.published < self.msgs {
            let due = if self.rate > 0.0 {
                (started.elapsed().as_secs_f64() * self.rate) as usize + 1
            } else {
                // One at a time: the next once the previous reached everyone.
                let prev_done = self.published == 0 || self.per_message_count[self.published - 1] >= self.subscribers;
                self.published + usize::from(prev_done)
            };
            if self.published >= due {
                break;
            }
            self.publish(e);
        }
        if let Some(admin) = &mut self.admin {
            admin.flush();
        }
        if self.published == self.msgs && self.deliveries as usize == self.subscribers * self.msgs {
            return false;
        }
        // After the last publish, give stragglers a grace period.
        if self.published == self.msgs {
            let done = *self.done_at.get_or_insert_with(Instant::now);
            return done.elapsed() < self.grace;
        }
        true
    }
}

pub fn fanout(a: FanoutArgs) -> Result<(), String> {
    let target = a.common.target(a.conns, 1)?;
    let protocol = target.protocol();
    let admin = match &a.common.secret {
        Some(s) => Some(crate::publisher::AdminPublisher::new(
            a.admin_addr.unwrap_or(target.addr),
            wsedge::auth::mint_hs256(s.as_bytes(), "bench-admin", Some("admin"), 3600).map_err(|e| e.to_string())?,
            a.event.clone(),
            a.admin_mode,
            a.batch_size,
        ))
        .map(|mut p| {
            p.pad = a.pad;
            p
        }),
        None => None,
    };
    let mut e = Engine::new(target).map_err(|err| err.to_string())?;
    let words = a.msgs.div_ceil(64);
    let mut d = Fanout {
        subscribers: a.conns,
        msgs: a.msgs,
        protocol,
        event: a.event.clone(),
        ready: 0,
        publisher: None,
        opened: 0,
        received: vec![vec![0; words]; a.conns],
        deliveries: 0,
        duplicates: 0,
        per_message_last: vec![0; a.msgs],
        per_message_count: vec![0; a.msgs],
        sent_at: vec![0; a.msgs],
        hist: hist(),
        published: 0,
        rate: a.rate,
        publish_started: None,
        wire_start: 0,
        admin,
        done_at: None,
        grace: Duration::from_secs(a.grace_secs),
    };
    let ready = |d: &Fanout| d.ready == d.subscribers;
    let mut m = Measured {
        inner: &mut d,
        ready,
        pid: a.common.pid,
        also: a.common.also_pid.clone(),
        cpu: None,
    };
    e.run(&mut m, Duration::from_secs(600));
    let cpu = m.cpu;
    let secs = d.publish_started.map_or(0.0, |t| t.elapsed().as_secs_f64()).max(1e-9);
    let (server_cpu, client_cpu) = cpu.as_ref().map_or((None, 0), Cpu::stop);
    let mut last = hist();
    for (i, &l) in d.per_message_last.iter().enumerate() {
        if l > 0 {
            let _ = last.record((l.saturating_sub(d.sent_at[i]) / 1000).max(1));
        }
    }
    let expected = (a.conns * a.msgs) as u64;
    print(
        json!({
            "scenario": "fanout",
            "subscribers": a.conns,
            "messages": a.msgs,
            "deliveries": d.deliveries,
            "lost": expected - d.deliveries,
            "duplicated": d.duplicates,
            "deliveries_per_second": (d.deliveries as f64 / secs).round(),
            "wire_bytes_per_delivery": ((e.wire_bytes - d.wire_start) as f64 / d.deliveries.max(1) as f64).round(),
            "delivery_latency_p50_us": us(&d.hist, 0.5),
            "delivery_latency_p99_us": us(&d.hist, 0.99),
            "last_subscriber_latency_p50_us": us(&last, 0.5),
            "last_subscriber_latency_p99_us": us(&last, 0.99),
            "server_cpu_us_per_delivery": per_unit(server_cpu, d.deliveries),
            "client_cpu_percent": (client_cpu as f64 / 1e4 / secs).round(),
            "errors": e.errors,
            "admin_mode": d.admin.as_ref().map(|_| format!("{:?}", a.admin_mode).to_lowercase()),
            // Published all at once rather than one after another.
            "burst": a.rate >= a.msgs as f64 * 100.0,
            "admin_failures": d.admin.as_ref().map_or(0, |p| p.failures.load(std::sync::atomic::Ordering::Relaxed)),
        }),
        a.common.json,
    );
    if d.deliveries != expected || d.duplicates > 0 {
        return Err(format!(
            "fanout lost {} and duplicated {} deliveries",
            expected - d.deliveries,
            d.duplicates
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------- churn

#[derive(clap::Args)]
pub struct ChurnArgs {
    #[command(flatten)]
    common: Common,
    /// Connections open at any time.
    #[arg(long, default_value_t = 200)]
    conns: usize,
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
}

struct Churn {
    conns: usize,
    cycles: u64,
    started: Instant,
    secs: f64,
    next_tag: usize,
}

impl Driver for Churn {
    fn on_open(&mut self, e: &mut Engine, id: usize) {
        self.cycles += 1;
        e.close(id);
    }
    fn on_message(&mut self, _: &mut Engine, _: usize, _: u8, _: &[u8]) {}
    fn tick(&mut self, e: &mut Engine) -> bool {
        let running = self.started.elapsed().as_secs_f64() < self.secs;
        while running && e.clients.len() < self.conns {
            self.next_tag += 1;
            if e.open(self.next_tag).is_err() {
                break;
            }
        }
        running || !e.clients.is_empty()
    }
}

pub fn churn(a: ChurnArgs) -> Result<(), String> {
    let pid = a.common.pid.ok_or("churn needs --pid to compare RSS and open files")?;
    let target = a.common.target(a.conns * 4, 1)?;
    let (rss0, _) = memory(pid)?;
    let fds0 = open_files(pid);
    let cpu = Cpu::start(Some(pid));
    let mut e = Engine::new(target).map_err(|err| err.to_string())?;
    let mut d = Churn {
        conns: a.conns,
        cycles: 0,
        started: Instant::now(),
        secs: a.secs,
        next_tag: 0,
    };
    e.run(&mut d, Duration::from_secs_f64(a.secs + 30.0));
    let (server_cpu, _) = cpu.stop();
    let errors = e.errors;
    drop(e);
    // Let the server see the last closes.
    let settle = Instant::now();
    while open_files(pid) > fds0 && settle.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (rss1, hwm) = memory(pid)?;
    let fds1 = open_files(pid);
    print(
        json!({
            "scenario": "churn",
            "cycles": d.cycles,
            "cycles_per_second": (d.cycles as f64 / a.secs).round(),
            "rss_before_bytes": rss0,
            "rss_after_bytes": rss1,
            "rss_growth_bytes": rss1 as i64 - rss0 as i64,
            "vm_hwm_bytes": hwm,
            "open_files_before": fds0,
            "open_files_after": fds1,
            "server_cpu_us_per_cycle": per_unit(server_cpu, d.cycles),
            "errors": errors,
        }),
        a.common.json,
    );
    if fds1 > fds0 {
        return Err(format!("server holds {} more files than before", fds1 - fds0));
    }
    Ok(())
}
