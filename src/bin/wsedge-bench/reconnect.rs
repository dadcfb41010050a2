//! `reconnect-storm`: N clients connected to one server reconnect, each with its own
//! `wsedge::client::Backoff` (full jitter), when the server goes away; the script restarts
//! the server. Reports every connection attempt's time since the first close as a histogram:
//! the attempts should spread over the backoff window, with no second spike.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;
use wsedge::client::{Backoff, BackoffPolicy};

use crate::engine::{Driver, Engine, Target};

#[derive(clap::Args)]
pub struct Args {
    /// Server URL, e.g. ws://127.0.0.1:8080/ws (the protocol server).
    #[arg(long)]
    url: String,
    /// HS256 secret (one token per client).
    #[arg(long, env = "WS_JWT_SECRET", hide_env_values = true)]
    secret: String,
    /// Clients.
    #[arg(long, default_value_t = 5_000)]
    conns: usize,
    /// Source addresses to spread over (127.0.0.2, ...).
    #[arg(long, default_value_t = 4)]
    sources: usize,
    /// Written with the number of open connections once all are open (the script then
    /// restarts the server).
    #[arg(long)]
    ready_file: std::path::PathBuf,
    /// Histogram bucket, milliseconds.
    #[arg(long, default_value_t = 250)]
    bucket_ms: u64,
    /// Backoff base and cap, seconds (the client library's defaults).
    #[arg(long, default_value_t = 0.5)]
    base: f64,
    #[arg(long, default_value_t = 20.0)]
    cap: f64,
    /// Seed of the clients' random delays (client i uses seed + i).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    deadline_secs: u64,
}

struct Storm {
    conns: usize,
    started: usize,
    open: usize,
    ramp_failed: usize,
    ramped: bool,
    backoffs: Vec<Backoff>,
    /// (when, client) of the reconnects waiting for their delay.
    due: BTreeMap<(Instant, usize), ()>,
    first_close: Option<Instant>,
    /// Every reconnect attempt, as time since the first close.
    attempts: Vec<Duration>,
    reopened: usize,
    failed_for_good: usize,
    last_open: Option<Instant>,
}

impl Driver for Storm {
    /// After `connection.established`.
    fn on_open(&mut self, e: &mut Engine, id: usize) {
        let tag = e.clients.get(id).map_or(usize::MAX, |c| c.tag);
        if let Some(b) = self.backoffs.get_mut(tag) {
            b.connected(Instant::now());
        }
        self.open += 1;
        if self.first_close.is_some() {
            self.reopened += 1;
            self.last_open = Some(Instant::now());
        }
    }

    fn on_message(&mut self, _e: &mut Engine, _id: usize, _opcode: u8, _payload: &[u8]) {}

    fn on_closed(&mut self, _e: &mut Engine, _id: usize, tag: usize) {
        let now = Instant::now();
        if !self.ramped {
            self.ramp_failed += 1;
            return;
        }
        self.first_close.get_or_insert(now);
        let Some(b) = self.backoffs.get_mut(tag) else { return };
        b.disconnected(now);
        match b.next_delay() {
            Some(d) => {
                self.due.insert((now + d, tag), ());
            }
            None => self.failed_for_good += 1,
        }
    }

    fn tick(&mut self, e: &mut Engine) -> bool {
        if !self.ramped {
            let settled = self.open + self.ramp_failed;
            self.ramp_failed += e.ramp(&mut self.started, settled, self.conns, 200);
            return self.open + self.ramp_failed < self.conns;
        }
        let now = Instant::now();
        while let Some((&(at, tag), _)) = self.due.iter().next() {
            if at > now {
                break;
            }
            self.due.remove(&(at, tag));
            if let Some(first) = self.first_close {
                self.attempts.push(now.duration_since(first));
            }
            if e.open(tag).is_err() {
                // Could not even start (no port): counts as a failed attempt.
                self.on_closed(e, usize::MAX, tag);
            }
        }
        self.reopened + self.failed_for_good < self.conns
    }
}

pub fn run(a: Args) -> Result<(), String> {
    let tokens = (0..a.conns)
        .map(|u| {
            wsedge::auth::mint_hs256(a.secret.as_bytes(), &format!("storm-{u}"), None, 3600).map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let target = Target::at(&a.url, Some(tokens), 1, a.sources)?;
    let policy = BackoffPolicy {
        base: Duration::try_from_secs_f64(a.base).map_err(|e| e.to_string())?,
        cap: Duration::try_from_secs_f64(a.cap).map_err(|e| e.to_string())?,
        ..BackoffPolicy::default()
    };
    let mut e = Engine::new(target).map_err(|err| err.to_string())?;
    let mut d = Storm {
        conns: a.conns,
        started: 0,
        open: 0,
        ramp_failed: 0,
        ramped: false,
        backoffs: (0..a.conns)
            .map(|i| Backoff::new(policy.clone(), a.seed + i as u64))
            .collect(),
        due: BTreeMap::new(),
        first_close: None,
        attempts: Vec::new(),
        reopened: 0,
        failed_for_good: 0,
        last_open: None,
    };
    let deadline = Duration::from_secs(a.deadline_secs);
    let t0 = Instant::now();
    e.run(&mut d, deadline);
    if d.open < a.conns {
        return Err(format!("only {} of {} connections opened", d.open, a.conns));
    }
    d.ramped = true;
    std::fs::write(&a.ready_file, format!("{}\n", d.open)).map_err(|err| err.to_string())?;
    e.run(&mut d, deadline.saturating_sub(t0.elapsed()));
    let bucket = Duration::from_millis(a.bucket_ms.max(1));
    let mut histogram: BTreeMap<u64, usize> = BTreeMap::new();
    for t in &d.attempts {
        *histogram
            .entry((t.as_millis() / bucket.as_millis()) as u64)
            .or_default() += 1;
    }
    let top = histogram.values().copied().max().unwrap_or(1);
    let buckets = histogram.keys().last().map_or(0, |k| k + 1);
    eprintln!("attempts per {} ms since the server went away:", a.bucket_ms);
    for i in 0..buckets {
        let n = histogram.get(&i).copied().unwrap_or(0);
        let bar = "#".repeat(n * 60 / top.max(1));
        eprintln!("{:>7.2} s {:>6} {bar}", (i * a.bucket_ms) as f64 / 1000.0, n);
    }
    let counts: Vec<usize> = (0..buckets).map(|i| histogram.get(&i).copied().unwrap_or(0)).collect();
    println!(
        "{}",
        json!({
            "scenario": "reconnect-storm",
            "clients": a.conns,
            "reconnected": d.reopened,
            "gave_up": d.failed_for_good,
            "attempts": d.attempts.len(),
            "bucket_ms": a.bucket_ms,
            "histogram": counts,
            "busiest_bucket": top,
            "all_back_after_secs": d.last_open.zip(d.first_close).map(|(l, f)| l.duration_since(f).as_secs_f64()),
        })
    );
    Ok(())
}
