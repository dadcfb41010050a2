//! `density`: open N connections, complete the handshake (with a JWT for the protocol server),
//! send one message on each and read its reply, idle, and report the server's RSS growth per
//! connection from /proc/PID/status. Driven by the mio engine like the other scenarios.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::engine::{Driver, Engine, Target};
use crate::proc_stats::{anon_memory, cpu_us, memory, open_files};

#[derive(clap::Args)]
pub struct Args {
    /// Server URL, e.g. ws://127.0.0.1:8080/ws (protocol server) or ws://127.0.0.1:9001/ (echo).
    #[arg(long)]
    url: String,
    /// Connections to open (a process here may hold at most 20,000 files).
    #[arg(long, default_value_t = 19_000)]
    conns: usize,
    /// The server's PID, for /proc/PID/status.
    #[arg(long)]
    pid: u32,
    /// HS256 secret: mint one token per user (protocol server). Without it: no token (echo).
    #[arg(long, env = "WS_JWT_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Connections per user when minting tokens (the server's per-user limit).
    #[arg(long, default_value_t = 3)]
    per_user: usize,
    /// Source addresses to spread over (127.0.0.2, 127.0.0.3, ...).
    #[arg(long, default_value_t = 4)]
    sources: usize,
    /// Handshakes in flight during the ramp.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Seconds to stay idle before the final reading.
    #[arg(long, default_value_t = 2.0)]
    idle_secs: f64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(PartialEq)]
enum Stage {
    Ramp,
    Messages,
    Done,
}

struct Density {
    conns: usize,
    concurrency: usize,
    protocol: bool,
    started: usize,
    open: usize,
    failed: usize,
    replies: usize,
    stage: Stage,
    ramp_done: Option<Instant>,
}

impl Driver for Density {
    fn on_open(&mut self, _: &mut Engine, _: usize) {
        self.open += 1;
    }
    fn on_message(&mut self, _: &mut Engine, _: usize, _: u8, _: &[u8]) {
        if self.stage == Stage::Messages {
            self.replies += 1;
        }
    }
    fn on_closed(&mut self, _: &mut Engine, _: usize, _: usize) {
        self.failed += 1;
    }
    fn tick(&mut self, e: &mut Engine) -> bool {
        match self.stage {
            Stage::Ramp => {
                self.failed += e.ramp(&mut self.started, self.open + self.failed, self.conns, self.concurrency);
                if self.open + self.failed >= self.conns {
                    self.ramp_done = Some(Instant::now());
                    self.stage = Stage::Messages;
                    return false; // measure RSS, then send the messages
                }
            }
            Stage::Messages => {
                if self.replies >= self.open {
                    self.stage = Stage::Done;
                    return false;
                }
            }
            Stage::Done => return false,
        }
        self.failed < self.conns
    }
}

impl Density {
    fn send_all(&self, e: &mut Engine) {
        let ids: Vec<usize> = e.clients.iter().map(|(id, _)| id).collect();
        for (i, id) in ids.into_iter().enumerate() {
            let text = if self.protocol {
                format!(r#"{{"type":"ping","data":{{"pingId":{i}}}}}"#)
            } else {
                format!("hello {i}")
            };
            e.send_text(id, text.as_bytes());
        }
    }
}

pub fn run(a: Args) -> Result<(), String> {
    let tokens = match &a.secret {
        Some(secret) => Some(
            (0..a.conns.div_ceil(a.per_user.max(1)))
                .map(|u| {
                    wsedge::auth::mint_hs256(secret.as_bytes(), &format!("bench-{u}"), None, 3600)
                        .map_err(|e| e.to_string())
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        None => None,
    };
    let protocol = tokens.is_some();
    let target = Target::at(&a.url, tokens, a.per_user.max(1), a.sources)?;
    let mut e = Engine::new(target).map_err(|err| err.to_string())?;
    let (rss_before, _) = memory(a.pid)?;
    let anon_before = anon_memory(a.pid)?;
    let cpu_before = cpu_us(Some(a.pid));
    let fds_before = open_files(a.pid);

    let mut d = Density {
        conns: a.conns,
        concurrency: a.concurrency.max(1),
        protocol,
        started: 0,
        open: 0,
        failed: 0,
        replies: 0,
        stage: Stage::Ramp,
        ramp_done: None,
    };
    let ramp_start = Instant::now();
    e.run(&mut d, Duration::from_secs(300));
    let ramp = d.ramp_done.map_or(ramp_start.elapsed(), |t| t - ramp_start);
    if d.failed > 0 {
        return Err(format!("{} of {} connections failed", d.failed, a.conns));
    }
    // Let the server finish writing the handshakes' replies before reading its memory.
    std::thread::sleep(Duration::from_millis(200));
    let (rss_handshaken, _) = memory(a.pid)?;

    let msg_start = Instant::now();
    d.send_all(&mut e);
    e.run(&mut d, Duration::from_secs(120));
    let msgs = msg_start.elapsed();
    if d.replies < d.open {
        return Err(format!("only {} of {} messages were answered", d.replies, d.open));
    }
    let (rss_messaged, _) = memory(a.pid)?;
    let idle_cpu_before = cpu_us(Some(a.pid));
    let idle_start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(a.idle_secs));
    let idle_cpu_percent =
        (cpu_us(Some(a.pid)) - idle_cpu_before) as f64 / idle_start.elapsed().as_micros() as f64 * 100.0;
    let (rss_idle, hwm) = memory(a.pid)?;
    let anon_idle = anon_memory(a.pid)?;
    let server_cpu_us = cpu_us(Some(a.pid)) - cpu_before;
    let fds = open_files(a.pid);

    let n = d.open as f64;
    let per_conn = |rss: u64| (rss as f64 - rss_before as f64) / n;
    let report = json!({
        "scenario": "density",
        "connections": d.open,
        "server_fds": fds.saturating_sub(fds_before),
        "rss_before_bytes": rss_before,
        "rss_after_handshakes_bytes": rss_handshaken,
        "rss_after_messages_bytes": rss_messaged,
        "rss_idle_bytes": rss_idle,
        "vm_hwm_bytes": hwm,
        "bytes_per_connection_after_handshakes": per_conn(rss_handshaken).round(),
        "bytes_per_connection_after_messages": per_conn(rss_messaged).round(),
        "bytes_per_connection_idle": per_conn(rss_idle).round(),
        // The same without the executable's pages that the first handshakes fault in.
        "anon_bytes_per_connection_idle": ((anon_idle as f64 - anon_before as f64) / n).round(),
        "connections_per_second": (n / ramp.as_secs_f64()).round(),
        "message_round_trip_secs": msgs.as_secs_f64(),
        "server_cpu_us_per_connection": (server_cpu_us as f64 / n).round(),
        "server_idle_cpu_percent": (idle_cpu_percent * 100.0).round() / 100.0,
        "client_cpu_secs": cpu_us(None) as f64 / 1e6,
    });
    if a.json {
        println!("{report}");
    } else {
        println!(
            "density: {} connections to {} ({} source addresses)",
            d.open, a.url, a.sources
        );
        for (k, v) in report.as_object().into_iter().flatten() {
            println!("  {k:<40} {v}");
        }
    }
    Ok(())
}
