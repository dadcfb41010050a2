//! `restart-stream`: holds N connections and makes handshakes at a steady rate for S seconds,
//! through whatever restart the caller does meanwhile (`scripts/restart.sh`): reports the
//! handshakes made, the ones that failed (refused, reset, or closed before the upgrade), and
//! how and when the held connections ended.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::engine::{Driver, Engine, Target};

#[derive(clap::Args)]
pub struct Args {
    /// Server URL, e.g. ws://127.0.0.1:8080/ws.
    #[arg(long)]
    url: String,
    /// HS256 secret (tokens).
    #[arg(long, env = "WS_JWT_SECRET", hide_env_values = true)]
    secret: String,
    /// Connections held open from the start.
    #[arg(long, default_value_t = 1000)]
    hold: usize,
    /// Handshakes per second.
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// Seconds of handshakes.
    #[arg(long, default_value_t = 15)]
    secs: u64,
    #[arg(long, default_value_t = 4)]
    sources: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

struct Stream {
    hold: usize,
    rate: f64,
    secs: f64,
    started: usize,
    held_open: usize,
    held_failed: usize,
    /// Close codes of the held connections (0: ended without a close frame), and when the
    /// first and last of them ended (seconds after the stream began).
    held_ended: BTreeMap<u16, usize>,
    first_end: Option<f64>,
    last_end: Option<f64>,
    stream_started: Option<Instant>,
    opened: usize,
    ok: usize,
    failed: usize,
}

impl Driver for Stream {
    fn on_open(&mut self, e: &mut Engine, id: usize) {
        if e.clients[id].tag < self.hold {
            self.held_open += 1;
        } else {
            self.ok += 1;
            e.close(id);
        }
    }
    fn on_message(&mut self, _: &mut Engine, _: usize, _: u8, _: &[u8]) {}
    fn on_closed(&mut self, e: &mut Engine, _: usize, tag: usize) {
        if tag >= self.hold {
            self.failed += 1;
            return;
        }
        if self.stream_started.is_none() {
            self.held_failed += 1;
            return;
        }
        *self.held_ended.entry(e.last_close.unwrap_or(0)).or_default() += 1;
        let at = self.stream_started.map_or(0.0, |t| t.elapsed().as_secs_f64());
        self.first_end.get_or_insert(at);
        self.last_end = Some(at);
    }
    fn tick(&mut self, e: &mut Engine) -> bool {
        if self.stream_started.is_none() {
            self.held_failed += e.ramp(&mut self.started, self.held_open + self.held_failed, self.hold, 200);
            if self.held_open + self.held_failed < self.hold {
                return true;
            }
            self.stream_started = Some(Instant::now());
        }
        let elapsed = self.stream_started.map_or(0.0, |t| t.elapsed().as_secs_f64());
        let due = ((elapsed.min(self.secs) * self.rate) as usize).min((self.secs * self.rate) as usize);
        while self.opened < due {
            if e.open(self.hold + self.opened).is_err() {
                self.failed += 1;
            }
            self.opened += 1;
        }
        let settled = self.ok + self.failed >= self.opened;
        let held_done: usize = self.held_ended.values().sum();
        !(elapsed >= self.secs && settled && held_done + self.held_failed >= self.hold) && elapsed < self.secs + 60.0
    }
}

pub fn run(a: Args) -> Result<(), String> {
    // A user per held connection, and more for the stream: no per-user limit is reached.
    let tokens = (0..a.hold + 2000)
        .map(|u| wsedge::auth::mint_hs256(a.secret.as_bytes(), &format!("restart-{u}"), None, 3600))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let mut e = Engine::new(Target::at(&a.url, Some(tokens), 1, a.sources)?).map_err(|err| err.to_string())?;
    let mut d = Stream {
        hold: a.hold,
        rate: a.rate,
        secs: a.secs as f64,
        started: 0,
        held_open: 0,
        held_failed: 0,
        held_ended: BTreeMap::new(),
        first_end: None,
        last_end: None,
        stream_started: None,
        opened: 0,
        ok: 0,
        failed: 0,
    };
    e.run(&mut d, Duration::from_secs(a.secs + 120));
    let report = json!({
        "scenario": "restart-stream",
        "held": d.held_open,
        "held_failed_to_open": d.held_failed,
        "held_closes_by_code": d.held_ended.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "held_first_closed_s": d.first_end,
        "held_last_closed_s": d.last_end,
        "handshakes": d.opened,
        "handshakes_ok": d.ok,
        "handshakes_failed": d.failed,
        "handshakes_unanswered": d.opened.saturating_sub(d.ok + d.failed),
        "rate": a.rate,
    });
    if a.json {
        println!("{report}");
    } else {
        for (k, v) in report.as_object().into_iter().flatten() {
            println!("  {k:<28} {v}");
        }
    }
    Ok(())
}
