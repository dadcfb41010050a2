//! `wsedge client URL`: a command-line WebSocket client (part of the `wsedge` binary, not the
//! library), like wscat or websocat.
//!
//! Owns: reading stdin lines into messages, printing what arrives, reconnecting when asked.
//! Everything WebSocket is `wsedge::client`.

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Args;
use wsedge::client::{
    Backoff, Client, ClientConfig, ClientError, Message, Roots, Session, SessionConfig, SessionEvent, TokenSource,
    should_reconnect,
};

/// A status line on stderr (connected, closed, reconnecting); a stderr that is gone is
/// ignored (eprintln! would panic and end the client mid-session).
macro_rules! status {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

#[derive(Args)]
pub struct ClientArgs {
    /// ws:// or wss:// URL, e.g. ws://127.0.0.1:8080/ws
    url: String,
    /// Token, added to the URL as `?token=` (or `&token=`).
    #[arg(long, env = "WS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Extra request header `Name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Offered subprotocol (repeatable, in order).
    #[arg(long = "subprotocol")]
    subprotocols: Vec<String>,
    /// Print JSON messages pretty (others as they are).
    #[arg(long)]
    json: bool,
    /// Reconnect with backoff (full jitter; WS_RECONNECT_* settings) when the connection ends,
    /// except after a close code that means "don't" (1002, 1003, 1007, 1008, 1009, 1010).
    /// With --token against a wsedge server this is a protocol session: subscribe/join lines
    /// are remembered and made again after every reconnect, with recovery of what was missed
    /// (the user's channel too); lines typed while disconnected wait and go out in order.
    #[arg(long)]
    reconnect: bool,
    /// Trust only the certificates in this PEM file for wss:// (a private CA or a self-signed
    /// server); default: the system's authorities.
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
    /// After stdin ends, keep printing messages this many seconds, then close.
    #[arg(long, default_value_t = 1.0)]
    linger: f64,
}

/// Runs until stdin ends (and `--linger` passes), or the connection ends for good.
pub fn run(a: ClientArgs) -> Result<(), String> {
    let mut config = ClientConfig::from_env();
    for h in &a.headers {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| format!("--header {h:?}: expected 'Name: value'"))?;
        config.headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    config.subprotocols = a.subprotocols.clone();
    if let Some(path) = &a.ca {
        config.roots = Roots::Pem(std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?);
    }
    let url = match &a.token {
        Some(t) => format!("{}{}token={t}", a.url, if a.url.contains('?') { '&' } else { '?' }),
        None => a.url.clone(),
    };
    let lines = stdin_lines();
    // Lines (and the end of stdin) a protocol session read before it found no wsedge server.
    let mut early: VecDeque<String> = VecDeque::new();
    let mut stdin_done: Option<Instant> = None;
    if let (true, Some(token)) = (a.reconnect, &a.token) {
        match protocol_session(&a, token, config.clone(), &lines)? {
            Outcome::Done => return Ok(()),
            // Not a wsedge server (no connection.established): plain reconnects below.
            Outcome::NotProtocol { waiting, stdin_ended } => {
                early = waiting;
                stdin_done = stdin_ended;
            }
        }
    }
    // WS_RECONNECT_BACKOFF_BASE / _MAX / WS_RECONNECT_MAX_ATTEMPTS, as the library reads them.
    let mut backoff = Backoff::new(SessionConfig::from_env().backoff, Backoff::random_seed());
    loop {
        let mut client = match Client::connect(&url, config.clone()) {
            Ok(c) => c,
            Err(e) if a.reconnect && retry(&e) => {
                wait(&mut backoff, &e)?;
                continue;
            }
            Err(e) => return Err(e.to_string()),
        };
        backoff.connected(Instant::now());
        status!(
            "connected to {}{}",
            a.url,
            client.subprotocol().map(|p| format!(" ({p})")).unwrap_or_default()
        );
        while let Some(line) = early.pop_front() {
            if let Err(e) = client.send_text(line.clone()) {
                early.push_front(line);
                status!("{e}");
                break;
            }
        }
        let ended = session(&mut client, &lines, &mut stdin_done, a.json, a.linger);
        backoff.disconnected(Instant::now());
        match ended {
            Ok(()) => {
                let code = client.close(1000, "").unwrap_or(1006);
                status!("closed ({code})");
                return Ok(());
            }
            Err(e) => {
                status!("{e}");
                let code = e.close_code().unwrap_or(1006);
                let reason = match &e {
                    ClientError::Closed { reason, .. } => reason.clone(),
                    other => other.to_string(),
                };
                if !a.reconnect || !should_reconnect(code, &reason, false) || stdin_done.is_some() {
                    return Err(format!("connection ended: {e}"));
                }
                wait(&mut backoff, &e)?;
            }
        }
    }
}

enum Outcome {
    Done,
    /// With the lines read meanwhile and whether stdin had ended.
    NotProtocol {
        waiting: VecDeque<String>,
        stdin_ended: Option<Instant>,
    },
}

/// `--reconnect --token` against a wsedge server: a [`Session`] that restores what the typed
/// lines subscribed to and joined, and recovers what was missed.
fn protocol_session(
    a: &ClientArgs,
    token: &str,
    client: ClientConfig,
    lines: &mpsc::Receiver<Option<String>>,
) -> Result<Outcome, String> {
    let config = SessionConfig {
        client,
        ..SessionConfig::from_env()
    };
    let mut session = Session::new(&a.url, TokenSource::Fixed(token.to_string()), config);
    let linger = Duration::try_from_secs_f64(a.linger).unwrap_or_default();
    let mut waiting: VecDeque<String> = VecDeque::new();
    let mut stdin_done: Option<Instant> = None;
    let mut greeted = false;
    loop {
        while let Ok(line) = lines.try_recv() {
            match line {
                Some(l) => waiting.push_back(l),
                None => {
                    stdin_done.get_or_insert_with(Instant::now);
                }
            }
        }
        while session.is_connected()
            && let Some(l) = waiting.pop_front()
        {
            if typed(&mut session, &l).is_err() {
                // The connection broke under the write: the line waits for the next one (the
                // session notices the break on its next read and reconnects).
                waiting.push_front(l);
                break;
            }
        }
        if waiting.is_empty() && stdin_done.is_some_and(|t| t.elapsed() >= linger) {
            session.close();
            status!("closed (1000)");
            return Ok(Outcome::Done);
        }
        let event = match session.next_event_within(Duration::from_millis(20)) {
            Ok(e) => e,
            Err(ClientError::Protocol(p)) if !greeted && p.contains("connection.established") => {
                return Ok(Outcome::NotProtocol {
                    waiting,
                    stdin_ended: stdin_done,
                });
            }
            Err(e) => return Err(format!("connection ended: {e}")),
        };
        match event {
            Some(SessionEvent::Connected { data, reconnected }) => {
                greeted = true;
                status!("{} to {}", if reconnected { "reconnected" } else { "connected" }, a.url);
                let hello = serde_json::json!({"type": "connection.established", "data": data});
                print(&Message::text(hello.to_string()), a.json);
            }
            Some(SessionEvent::Recovered { channel, exact }) => {
                let how = if exact { "exactly" } else { "not exactly: reload it" };
                status!("recovered {channel} {how}");
            }
            Some(SessionEvent::Message(v)) => print(&Message::text(v.to_string()), a.json),
            Some(SessionEvent::Disconnected { code, reason, retry_in }) => {
                status!(
                    "closed ({code} {reason}); reconnecting in {:.1} s",
                    retry_in.as_secs_f64()
                );
            }
            None => {}
        }
    }
}

/// A typed line in a session: membership changes go through the session (kept across
/// reconnects), other JSON is sent as is, anything else as text.
fn typed(session: &mut Session, line: &str) -> Result<(), ClientError> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        return session.send_text(line);
    };
    let names = |key: &str| -> Option<Vec<String>> {
        v["data"][key]
            .as_array()?
            .iter()
            .map(|n| n.as_str().map(str::to_string))
            .collect()
    };
    fn list(n: &[String]) -> Vec<&str> {
        n.iter().map(String::as_str).collect()
    }
    match (v["type"].as_str(), names("events"), names("rooms")) {
        (Some("subscribe"), Some(e), _) => session.subscribe(&list(&e)),
        (Some("unsubscribe"), Some(e), _) => session.unsubscribe(&list(&e)),
        (Some("join"), _, Some(r)) => session.join(&list(&r)),
        (Some("leave"), _, Some(r)) => session.leave(&list(&r)),
        _ => session.send(v),
    }
}

fn retry(e: &ClientError) -> bool {
    match e {
        ClientError::Rejected { status, .. } => matches!(status, 429 | 500..=599),
        ClientError::ConnectionFailed(_) | ClientError::Timeout(_) | ClientError::Closed { .. } => true,
        _ => false,
    }
}

fn wait(backoff: &mut Backoff, e: &ClientError) -> Result<(), String> {
    let d = backoff
        .next_delay()
        .ok_or_else(|| format!("giving up after {} attempts: {e}", backoff.attempt()))?;
    status!("reconnecting in {:.1} s", d.as_secs_f64());
    std::thread::sleep(d);
    Ok(())
}

/// Stdin lines from a thread; `None` once stdin ends.
fn stdin_lines() -> mpsc::Receiver<Option<String>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(l) => {
                    if tx.send(Some(l)).is_err() {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = tx.send(None);
    });
    rx
}

/// Sends stdin lines and prints messages; `Ok` when stdin ended and the linger passed.
fn session(
    client: &mut Client,
    lines: &mpsc::Receiver<Option<String>>,
    stdin_done: &mut Option<Instant>,
    pretty: bool,
    linger: f64,
) -> Result<(), ClientError> {
    let linger = Duration::try_from_secs_f64(linger).unwrap_or_default();
    loop {
        loop {
            match lines.try_recv() {
                Ok(Some(line)) => client.send_text(line)?,
                Ok(None) | Err(mpsc::TryRecvError::Disconnected) => {
                    stdin_done.get_or_insert_with(Instant::now);
                    break;
                }
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }
        if stdin_done.is_some_and(|t| t.elapsed() >= linger) {
            return Ok(());
        }
        // Stdin is looked at every 20 ms while no message arrives.
        if let Some(m) = client.recv_timeout(Some(Duration::from_millis(20)))? {
            print(&m, pretty);
        }
    }
}

fn print(m: &Message, pretty: bool) {
    let mut out = std::io::stdout().lock();
    let _ = match m {
        Message::Text(t) if pretty => match serde_json::from_str::<serde_json::Value>(t) {
            Ok(v) => writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&v).unwrap_or_else(|_| t.to_string())
            ),
            Err(_) => writeln!(out, "{t}"),
        },
        Message::Text(t) => writeln!(out, "{t}"),
        Message::Binary(b) => {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            writeln!(out, "[binary {} bytes] {hex}", b.len())
        }
        _ => Ok(()),
    };
    let _ = out.flush();
}
