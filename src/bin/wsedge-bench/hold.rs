//! `hold`: open N authenticated connections and hold them idle (one of the many generator
//! processes of `scripts/million.sh`), say so in a file once they are all open, then wait until
//! every connection has received one message of a given type and report when the first and the
//! last arrived (Unix nanoseconds, comparable across processes).

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::engine::{Driver, Engine, Target};

#[derive(clap::Args)]
pub struct Args {
    /// Server URL, e.g. ws://127.0.0.1:8080/ws.
    #[arg(long)]
    url: String,
    /// Connections to open (a process here may hold at most 20,000 files).
    #[arg(long, default_value_t = 19_000)]
    conns: usize,
    /// HS256 secret to mint the tokens.
    #[arg(long, env = "WS_JWT_SECRET", hide_env_values = true)]
    secret: String,
    /// Connections per user.
    #[arg(long, default_value_t = 3)]
    per_user: usize,
    /// Users are `bench-{offset + i}`, so processes can hold different users.
    #[arg(long, default_value_t = 0)]
    user_offset: usize,
    /// Source addresses to spread over, from 127.0.0.(2 + source-base).
    #[arg(long, default_value_t = 1)]
    sources: usize,
    #[arg(long, default_value_t = 0)]
    source_base: usize,
    /// Handshakes in flight during the ramp.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Written (with the counts) once every connection is open or has failed.
    #[arg(long)]
    ready_file: PathBuf,
    /// The message type every connection waits for (`"type": T`).
    #[arg(long, default_value = "million")]
    await_type: String,
    /// After reporting, keep the connections open until this file exists (so closing them is
    /// not counted in what the caller measures).
    #[arg(long)]
    linger_file: Option<PathBuf>,
    /// Give up waiting after this many seconds in all.
    #[arg(long, default_value_t = 600)]
    deadline_secs: u64,
}

struct Hold {
    conns: usize,
    concurrency: usize,
    started: usize,
    open: usize,
    failed: usize,
    ramped: bool,
    needle: Vec<u8>,
    got: Vec<bool>,
    received: usize,
    first_ns: u64,
    last_ns: u64,
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Driver for Hold {
    fn on_open(&mut self, _: &mut Engine, _: usize) {
        self.open += 1;
    }
    fn on_message(&mut self, e: &mut Engine, id: usize, _: u8, payload: &[u8]) {
        if !self.ramped || !payload.windows(self.needle.len()).any(|w| w == self.needle) {
            return;
        }
        let tag = e.clients.get(id).map_or(usize::MAX, |c| c.tag);
        if let Some(seen) = self.got.get_mut(tag).filter(|s| !**s) {
            *seen = true;
            self.received += 1;
            let now = unix_ns();
            if self.first_ns == 0 {
                self.first_ns = now;
            }
            self.last_ns = now;
        }
    }
    fn on_closed(&mut self, _: &mut Engine, _: usize, _: usize) {
        self.failed += 1;
    }
    fn tick(&mut self, e: &mut Engine) -> bool {
        if !self.ramped {
            self.failed += e.ramp(&mut self.started, self.open + self.failed, self.conns, self.concurrency);
            if self.open + self.failed >= self.conns {
                self.ramped = true;
                return false;
            }
            return true;
        }
        self.received < self.open
    }
}

pub fn run(a: Args) -> Result<(), String> {
    let per_user = a.per_user.max(1);
    let tokens = (0..a.conns.div_ceil(per_user))
        .map(|u| {
            wsedge::auth::mint_hs256(a.secret.as_bytes(), &format!("bench-{}", a.user_offset + u), None, 3600)
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let target = Target {
        source_base: a.source_base,
        ..Target::at(&a.url, Some(tokens), per_user, a.sources)?
    };
    let mut e = Engine::new(target).map_err(|err| err.to_string())?;
    let mut d = Hold {
        conns: a.conns,
        concurrency: a.concurrency.max(1),
        started: 0,
        open: 0,
        failed: 0,
        ramped: false,
        needle: format!("\"type\":\"{}\"", a.await_type).into_bytes(),
        got: vec![false; a.conns],
        received: 0,
        first_ns: 0,
        last_ns: 0,
    };
    let t0 = Instant::now();
    let deadline = Duration::from_secs(a.deadline_secs);
    e.run(&mut d, deadline);
    let ramp_secs = t0.elapsed().as_secs_f64();
    std::fs::write(&a.ready_file, format!("{} {}\n", d.open, d.failed)).map_err(|err| err.to_string())?;
    e.run(&mut d, deadline.saturating_sub(t0.elapsed()));
    println!(
        "{}",
        json!({
            "scenario": "hold",
            "connections": d.open,
            "failed": d.failed,
            "ramp_secs": ramp_secs,
            "received": d.received,
            "first_receipt_unix_ns": d.first_ns,
            "last_receipt_unix_ns": d.last_ns,
        })
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    if let Some(f) = &a.linger_file {
        while !f.exists() && t0.elapsed() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    if d.received < d.open {
        return Err(format!(
            "only {} of {} connections received the message",
            d.received, d.open
        ));
    }
    Ok(())
}
