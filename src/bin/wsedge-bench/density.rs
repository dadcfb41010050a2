//! `density`: open N connections, complete the handshake (with a JWT for the protocol server),
//! send one message on each and read its reply, idle, and report the server's RSS growth per
//! connection from /proc/PID/status.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::proc_stats::{cpu_us, memory, open_files};
use crate::wire::{connect_from, parse_url, read_data, send_text, source, upgrade};

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
    /// Client threads opening connections.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Seconds to stay idle before the final reading.
    #[arg(long, default_value_t = 2.0)]
    idle_secs: f64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<(), String> {
    let (addr, target) = parse_url(&a.url)?;
    let protocol = a.secret.is_some();
    let tokens: Vec<String> = match &a.secret {
        Some(secret) => (0..a.conns.div_ceil(a.per_user.max(1)))
            .map(|u| {
                wsedge::auth::mint_hs256(secret.as_bytes(), &format!("bench-{u}"), None, 3600)
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    let (rss_before, _) = memory(a.pid)?;
    let cpu_before = cpu_us(Some(a.pid));
    let fds_before = open_files(a.pid);

    // Ramp: open and upgrade every connection.
    let ramp_start = Instant::now();
    let threads = a.threads.clamp(1, 64);
    let mut conns: Vec<TcpStream> = Vec::with_capacity(a.conns);
    let results: Vec<Result<Vec<TcpStream>, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (tokens, target) = (&tokens, &target);
                let (sources, per_user) = (a.sources, a.per_user.max(1));
                scope.spawn(move || -> Result<Vec<TcpStream>, String> {
                    let mut mine = Vec::new();
                    for i in (t..a.conns).step_by(threads) {
                        let mut s = connect_from(source(i, sources), addr).map_err(|e| format!("connect #{i}: {e}"))?;
                        s.set_read_timeout(Some(Duration::from_secs(10)))
                            .map_err(|e| e.to_string())?;
                        let path = if protocol {
                            let sep = if target.contains('?') { '&' } else { '?' };
                            format!("{target}{sep}token={}", tokens[i / per_user])
                        } else {
                            target.clone()
                        };
                        upgrade(&mut s, addr, &path).map_err(|e| format!("connection #{i}: {e}"))?;
                        if protocol {
                            read_data(&mut s)
                                .map_err(|e| format!("connection #{i}: no connection.established: {e}"))?;
                        }
                        mine.push(s);
                    }
                    Ok(mine)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
            .collect()
    });
    for r in results {
        conns.extend(r?);
    }
    let ramp = ramp_start.elapsed();
    let (rss_handshaken, _) = memory(a.pid)?;

    // One message and its reply on each.
    let msg_start = Instant::now();
    for (i, s) in conns.iter_mut().enumerate() {
        let text = if protocol {
            format!(r#"{{"type":"ping","data":{{"pingId":{i}}}}}"#)
        } else {
            format!("hello {i}")
        };
        send_text(s, &text).map_err(|e| format!("send #{i}: {e}"))?;
        read_data(s).map_err(|e| format!("reply #{i}: {e}"))?;
    }
    let msgs = msg_start.elapsed();
    let (rss_messaged, _) = memory(a.pid)?;
    let idle_cpu_before = cpu_us(Some(a.pid));
    let idle_start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(a.idle_secs));
    let idle_cpu_percent =
        (cpu_us(Some(a.pid)) - idle_cpu_before) as f64 / idle_start.elapsed().as_micros() as f64 * 100.0;
    let (rss_idle, hwm) = memory(a.pid)?;
    let server_cpu_us = cpu_us(Some(a.pid)) - cpu_before;
    let fds = open_files(a.pid);

    let n = conns.len() as f64;
    let per_conn = |rss: u64| (rss as f64 - rss_before as f64) / n;
    let report = serde_json::json!({
        "scenario": "density",
        "connections": conns.len(),
        "server_fds": fds - fds_before,
        "rss_before_bytes": rss_before,
        "rss_after_handshakes_bytes": rss_handshaken,
        "rss_after_messages_bytes": rss_messaged,
        "rss_idle_bytes": rss_idle,
        "vm_hwm_bytes": hwm,
        "bytes_per_connection_after_handshakes": per_conn(rss_handshaken).round(),
        "bytes_per_connection_after_messages": per_conn(rss_messaged).round(),
        "bytes_per_connection_idle": per_conn(rss_idle).round(),
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
            conns.len(),
            a.url,
            a.sources
        );
        for (k, v) in report.as_object().into_iter().flatten() {
            println!("  {k:<40} {v}");
        }
    }
    Ok(())
}
