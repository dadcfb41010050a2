//! `recover-storm`: N clients that were away come back at once and each recovers the last M
//! messages of one event channel (`subscribe` with `recover`): the time from their subscribe
//! requests until every client has its M messages, exactly once and in order, and the server's
//! memory peak. The messages are published first through the admin API.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::engine::{Driver, Engine, Target};
use crate::proc_stats::{cpu_us, memory};
use crate::wire::parse_url;

#[derive(clap::Args)]
pub struct Args {
    /// Server URL, e.g. ws://127.0.0.1:8080/ws (the protocol server).
    #[arg(long)]
    url: String,
    /// The server's PID (memory peak, CPU).
    #[arg(long)]
    pid: u32,
    /// HS256 secret (tokens for the clients and the admin publisher).
    #[arg(long, env = "WS_JWT_SECRET", hide_env_values = true)]
    secret: String,
    /// Clients.
    #[arg(long, default_value_t = 10_000)]
    conns: usize,
    /// Messages each client recovers.
    #[arg(long, default_value_t = 100)]
    missed: u64,
    /// The event type.
    #[arg(long, default_value = "system.notification")]
    event: String,
    #[arg(long, default_value_t = 4)]
    sources: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

struct Storm {
    conns: usize,
    started: usize,
    open: usize,
    failed: usize,
    ramped: bool,
    /// Per client: the next offset it expects (0: not subscribed yet).
    next: Vec<u64>,
    first: u64,
    last: u64,
    complete: usize,
    wrong: usize,
    done_at: Option<Instant>,
}

/// `"offset":N` in a delivered message.
fn offset_of(p: &[u8]) -> Option<u64> {
    let key = b"\"offset\":";
    let at = p.windows(key.len()).position(|w| w == key)? + key.len();
    let digits: Vec<u8> = p[at..].iter().copied().take_while(u8::is_ascii_digit).collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

impl Driver for Storm {
    fn on_open(&mut self, _: &mut Engine, _: usize) {
        self.open += 1;
    }
    fn on_message(&mut self, e: &mut Engine, id: usize, _: u8, p: &[u8]) {
        let Some(tag) = e.clients.get(id).map(|c| c.tag) else {
            return;
        };
        if self.next[tag] == 0 {
            return;
        }
        if p.windows(10).any(|w| w == b"\"recovered") || !p.windows(9).any(|w| w == b"\"channel\"") {
            return; // the acknowledgement, or something else
        }
        match offset_of(p) {
            Some(o) if o == self.next[tag] => {
                self.next[tag] += 1;
                if o == self.last {
                    self.complete += 1;
                    if self.complete == self.open {
                        self.done_at = Some(Instant::now());
                    }
                }
            }
            _ => self.wrong += 1,
        }
    }
    fn on_closed(&mut self, _: &mut Engine, _: usize, _: usize) {
        self.failed += 1;
    }
    fn tick(&mut self, e: &mut Engine) -> bool {
        if !self.ramped {
            self.failed += e.ramp(&mut self.started, self.open + self.failed, self.conns, 200);
            if self.open + self.failed >= self.conns {
                self.ramped = true;
                return false;
            }
            return true;
        }
        self.done_at.is_none() && self.failed == 0
    }
}

fn admin_post(addr: std::net::SocketAddr, token: &str, path: &str, body: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

pub fn run(a: Args) -> Result<(), String> {
    let (addr, _) = parse_url(&a.url)?;
    let admin =
        wsedge::auth::mint_hs256(a.secret.as_bytes(), "bench-admin", Some("admin"), 3600).map_err(|e| e.to_string())?;
    // The messages the clients missed, and where the channel stands.
    for i in 0..a.missed {
        admin_post(
            addr,
            &admin,
            &format!("/ws/events/{}", a.event),
            &format!(r#"{{"data":{{"i":{i}}}}}"#),
        )?;
    }
    let tokens = (0..a.conns)
        .map(|u| {
            wsedge::auth::mint_hs256(a.secret.as_bytes(), &format!("storm-{u}"), None, 3600).map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut e = Engine::new(Target::at(&a.url, Some(tokens), 1, a.sources)?).map_err(|err| err.to_string())?;
    let mut d = Storm {
        conns: a.conns,
        started: 0,
        open: 0,
        failed: 0,
        ramped: false,
        next: vec![0; a.conns],
        first: 0,
        last: 0,
        complete: 0,
        wrong: 0,
        done_at: None,
    };
    e.run(&mut d, Duration::from_secs(300));
    if d.failed > 0 {
        return Err(format!("{} of {} connections failed", d.failed, a.conns));
    }
    // Ask the history where the channel stands (any client's position would do).
    let reply = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
        let req = format!(
            "GET /ws/history/event:{}?limit=1 HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {admin}\r\nConnection: close\r\n\r\n",
            a.event
        );
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        let mut out = String::new();
        s.read_to_string(&mut out).map_err(|e| e.to_string())?;
        out
    };
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| format!("history answer: {e}: {body}"))?;
    let top = v["data"]["offset"].as_u64().ok_or("no offset in the history answer")?;
    let epoch = v["data"]["epoch"].as_str().ok_or("no epoch")?.to_string();
    d.first = top + 1 - a.missed;
    d.last = top;
    let (_, hwm_before) = memory(a.pid)?;
    let cpu_before = cpu_us(Some(a.pid));
    let ids: Vec<(usize, usize)> = e.clients.iter().map(|(id, c)| (id, c.tag)).collect();
    let t0 = Instant::now();
    for (id, tag) in ids {
        d.next[tag] = d.first;
        let msg = json!({"type": "subscribe", "data": {"events": [a.event], "recover": {a.event.clone(): {"offset": d.first - 1, "epoch": epoch}}}});
        e.send_text(id, msg.to_string().as_bytes());
    }
    e.run(&mut d, Duration::from_secs(300));
    let took = d.done_at.map_or(t0.elapsed(), |t| t - t0);
    let (rss, hwm_after) = memory(a.pid)?;
    let server_cpu = cpu_us(Some(a.pid)) - cpu_before;
    let report = json!({
        "scenario": "recover-storm",
        "clients": d.open,
        "messages_each": a.missed,
        "complete": d.complete,
        "out_of_order_or_duplicate": d.wrong,
        "seconds_until_all_recovered": took.as_secs_f64(),
        "replayed_messages_per_second": (d.complete as f64 * a.missed as f64 / took.as_secs_f64()).round(),
        "server_cpu_secs": server_cpu as f64 / 1e6,
        "server_rss_bytes": rss,
        "server_peak_rss_growth_bytes": hwm_after.saturating_sub(hwm_before),
        "server_peak_rss_bytes": hwm_after,
    });
    if a.json {
        println!("{report}");
    } else {
        for (k, v) in report.as_object().into_iter().flatten() {
            println!("  {k:<36} {v}");
        }
    }
    if d.complete < d.open || d.wrong > 0 {
        return Err(format!(
            "{} of {} clients recovered everything; {} messages out of order or doubled",
            d.complete, d.open, d.wrong
        ));
    }
    Ok(())
}
