//! The wsedge protocol over a [`Client`]: a session that outlives its connections.
//!
//! Owns: the token (fixed, or a provider asked again before it expires and after a `token
//! expired` close), the events and rooms the application asked for, the last position seen per
//! channel, whether each channel's last recovery was exact, the rate-limit pause, and the ping
//! round trip. Does not touch: sockets (the [`Client`] does) or the meaning of messages.
//!
//! After every reconnect it asks for its own channel's missed messages in the upgrade request,
//! subscribes and joins again with `recover` from the positions it holds, and reports per
//! channel whether the recovery was exact.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::backoff::{Backoff, BackoffPolicy, should_reconnect};
use super::connection::{Client, ClientConfig, env_secs};
use super::error::ClientError;
use tungstenite::Message;

/// Where the session's tokens come from.
pub enum TokenSource {
    /// One token for the session's life (a `token expired` close ends the session).
    Fixed(String),
    /// Called for a token before connecting when the current one expires within
    /// [`SessionConfig::refresh_before`], and before that moment on an open connection (sent as
    /// `token.refresh`). An `Err` ends the session.
    Provider(Box<dyn FnMut() -> Result<String, String> + Send>),
}

/// How a session behaves. [`SessionConfig::from_env`] reads the `WS_*` variables.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub client: ClientConfig,
    /// Reconnect after a connection ends (`WS_RECONNECT_ENABLED`, default true).
    pub reconnect: bool,
    pub backoff: BackoffPolicy,
    /// Ask for a new token this long before the current one expires (default 30 s).
    pub refresh_before: Duration,
    /// Seed of the backoff's random delays (default: from the clock and process).
    pub seed: Option<u64>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            client: ClientConfig::default(),
            reconnect: true,
            backoff: BackoffPolicy::default(),
            refresh_before: Duration::from_secs(30),
            seed: None,
        }
    }
}

impl SessionConfig {
    /// [`ClientConfig::from_env`], plus `WS_RECONNECT_ENABLED`, `WS_RECONNECT_MAX_ATTEMPTS`,
    /// `WS_RECONNECT_BACKOFF_BASE` and `WS_RECONNECT_BACKOFF_MAX` (seconds).
    pub fn from_env() -> Self {
        let mut c = SessionConfig {
            client: ClientConfig::from_env(),
            ..SessionConfig::default()
        };
        if let Ok(v) = std::env::var("WS_RECONNECT_ENABLED") {
            c.reconnect = !matches!(v.as_str(), "false" | "0" | "no" | "off");
        }
        if let Some(n) = std::env::var("WS_RECONNECT_MAX_ATTEMPTS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            c.backoff.max_attempts = n;
        }
        if let Some(d) = env_secs("WS_RECONNECT_BACKOFF_BASE") {
            c.backoff.base = d;
        }
        if let Some(d) = env_secs("WS_RECONNECT_BACKOFF_MAX") {
            c.backoff.cap = d;
        }
        c
    }
}

/// What [`Session::next_event`] reports.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    /// A connection is open; `data` is the server's `connection.established` data.
    Connected { data: Value, reconnected: bool },
    /// A recovery's outcome for a channel (`user:<id>`, `event:<type>`, `room:<name>`): `exact`
    /// means every missed message follows; otherwise reload that channel's state.
    Recovered { channel: String, exact: bool },
    /// Any other message from the server.
    Message(Value),
    /// The connection ended; the session waits `retry_in` and connects again.
    Disconnected {
        code: u16,
        reason: String,
        retry_in: Duration,
    },
}

/// A position in a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Position {
    offset: u64,
    epoch: String,
}

/// A protocol session (see the module comment).
pub struct Session {
    url: String,
    token: TokenSource,
    current_token: String,
    config: SessionConfig,
    client: Option<Client>,
    backoff: Backoff,
    events: BTreeSet<String>,
    rooms: BTreeSet<String>,
    positions: BTreeMap<String, Position>,
    exact: BTreeMap<String, bool>,
    user_channel: Option<String>,
    paused_until: Option<Instant>,
    pings: u64,
    ping_sent: Option<(String, Instant)>,
    rtt: Option<Duration>,
    queued: std::collections::VecDeque<SessionEvent>,
    connections: u32,
    retry_delay: Option<Duration>,
    ended: Option<ClientError>,
    /// Messages sent while no connection was open: sent, in order, after the next connect's
    /// restored subscriptions and rooms.
    outbox: std::collections::VecDeque<Value>,
}

/// Messages [`Session::send`] keeps while disconnected, at most; past that it refuses.
pub const MAX_QUEUED: usize = 1000;

impl Session {
    /// A session for `url` (e.g. `wss://edge.example.com/ws`); nothing connects before the
    /// first [`Session::next_event`] or [`Session::connect`].
    pub fn new(url: &str, token: TokenSource, config: SessionConfig) -> Session {
        let seed = config.seed.unwrap_or_else(Backoff::random_seed);
        Session {
            url: url.to_string(),
            token,
            current_token: String::new(),
            backoff: Backoff::new(config.backoff.clone(), seed),
            config,
            client: None,
            events: BTreeSet::new(),
            rooms: BTreeSet::new(),
            positions: BTreeMap::new(),
            exact: BTreeMap::new(),
            user_channel: None,
            paused_until: None,
            pings: 0,
            ping_sent: None,
            rtt: None,
            queued: Default::default(),
            connections: 0,
            retry_delay: None,
            ended: None,
            outbox: std::collections::VecDeque::new(),
        }
    }

    /// Connects now (the first time, or again after a failure); errors are returned, not retried.
    pub fn connect(&mut self) -> Result<(), ClientError> {
        let token = self.token_for_connect()?;
        let mut url = format!(
            "{}{}token={}",
            self.url,
            if self.url.contains('?') { '&' } else { '?' },
            token
        );
        if let Some(p) = self.user_channel.as_ref().and_then(|c| self.positions.get(c)) {
            url.push_str(&format!("&recover_offset={}&recover_epoch={}", p.offset, p.epoch));
        }
        let mut client = Client::connect(&url, self.config.client.clone())?;
        // The greeting counts toward the open timeout: a server (or a proxy) that upgrades and
        // then says nothing is a failed attempt, not a hung session.
        let hello = match client.recv_timeout(Some(self.config.client.open_timeout))? {
            Some(Message::Text(t)) => serde_json::from_str::<Value>(&t)?,
            Some(_) => {
                return Err(ClientError::Protocol(
                    "expected connection.established, got binary".into(),
                ));
            }
            None => return Err(ClientError::Timeout("waiting for connection.established")),
        };
        if hello["type"] != "connection.established" {
            return Err(ClientError::Protocol(format!(
                "expected connection.established, got {hello}"
            )));
        }
        let data = hello["data"].clone();
        if let Some(p) = data.get("position") {
            let channel = p["channel"].as_str().unwrap_or_default().to_string();
            if let Some(r) = data.get("recovery") {
                let exact = r["recovered"] == true;
                self.exact.insert(channel.clone(), exact);
                self.queued.push_back(SessionEvent::Recovered {
                    channel: channel.clone(),
                    exact,
                });
                if !exact {
                    self.positions.remove(&channel);
                }
            }
            if data.get("recovery").is_none_or(|r| r["recovered"] != true) {
                // Not recovering (or failed): start from here. Recovered messages follow and
                // move the position themselves.
                self.note_position(&channel, p);
            }
            self.user_channel = Some(channel);
        }
        self.client = Some(client);
        self.backoff.connected(Instant::now());
        self.connections += 1;
        let reconnected = self.connections > 1;
        self.queued.push_front(SessionEvent::Connected { data, reconnected });
        self.restore()?;
        Ok(())
    }

    /// Subscribes to events (kept across reconnects).
    pub fn subscribe(&mut self, events: &[&str]) -> Result<(), ClientError> {
        self.events.extend(events.iter().map(|e| e.to_string()));
        self.send_membership(
            "subscribe",
            "events",
            events.iter().map(|e| e.to_string()).collect(),
            "event:",
        )
    }

    pub fn unsubscribe(&mut self, events: &[&str]) -> Result<(), ClientError> {
        for e in events {
            self.events.remove(*e);
        }
        self.send_if_open(json!({"type": "unsubscribe", "data": {"events": events}}))
    }

    /// Joins rooms (kept across reconnects; the token's `rooms` claim must allow them).
    pub fn join(&mut self, rooms: &[&str]) -> Result<(), ClientError> {
        self.rooms.extend(rooms.iter().map(|r| r.to_string()));
        self.send_membership("join", "rooms", rooms.iter().map(|r| r.to_string()).collect(), "room:")
    }

    pub fn leave(&mut self, rooms: &[&str]) -> Result<(), ClientError> {
        for r in rooms {
            self.rooms.remove(*r);
        }
        self.send_if_open(json!({"type": "leave", "data": {"rooms": rooms}}))
    }

    /// Sends a protocol ping with a `pingId`; the round trip is in [`Session::rtt`] once the pong
    /// is read.
    pub fn ping(&mut self) -> Result<(), ClientError> {
        self.pings += 1;
        let id = format!("p{}", self.pings);
        self.ping_sent = Some((id.clone(), Instant::now()));
        self.send(json!({"type": "ping", "data": {"pingId": id}}))
    }

    /// The last protocol ping's round trip.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// Whether the last recovery of `channel` was exact (`None`: never recovered).
    pub fn recovered_exactly(&self, channel: &str) -> Option<bool> {
        self.exact.get(channel).copied()
    }

    /// The last position seen in `channel` (offset, epoch).
    pub fn position(&self, channel: &str) -> Option<(u64, &str)> {
        self.positions.get(channel).map(|p| (p.offset, p.epoch.as_str()))
    }

    /// Sends a message. After a `RATE_LIMIT_EXCEEDED` it first waits out `retry_after`. While
    /// no connection is open the message waits, in order, and goes out after the next
    /// connect's restored subscriptions; at most `MAX_QUEUED` (1,000) wait, and past that this
    /// returns an error (`Protocol`): nothing is dropped silently. [`Session::close`] discards
    /// what waits.
    pub fn send(&mut self, message: Value) -> Result<(), ClientError> {
        if let Some(until) = self.paused_until.take() {
            std::thread::sleep(until.saturating_duration_since(Instant::now()));
        }
        if self.client.is_none() {
            if self.outbox.len() >= MAX_QUEUED {
                return Err(ClientError::Protocol(format!(
                    "{MAX_QUEUED} messages already wait for a connection"
                )));
            }
            self.outbox.push_back(message);
            return Ok(());
        }
        self.send_if_open(message)
    }

    /// The next thing that happened: blocks, reconnecting as needed (after each failed
    /// attempt it reports `Disconnected` with the delay it is about to wait). An error means
    /// the session is over: a close code that means "don't", attempts exhausted, reconnect
    /// off, or a token provider that failed.
    pub fn next_event(&mut self) -> Result<SessionEvent, ClientError> {
        loop {
            if let Some(e) = self.next_event_until(None)? {
                return Ok(e);
            }
        }
    }

    /// Like [`Session::next_event`], but returns `Ok(None)` once `max` passed without an event
    /// (a caller with other input to watch, like a command-line client reading stdin). A
    /// backoff in progress is waited out whole.
    pub fn next_event_within(&mut self, max: Duration) -> Result<Option<SessionEvent>, ClientError> {
        self.next_event_until(Some(Instant::now() + max))
    }

    /// Whether a connection is open now.
    pub fn is_connected(&self) -> bool {
        self.client.is_some()
    }

    /// Sends a text frame as it is (a typed line that is not JSON); nothing when not connected
    /// (see [`Session::is_connected`]).
    pub fn send_text(&mut self, text: &str) -> Result<(), ClientError> {
        match self.client.as_mut() {
            Some(c) => c.send_text(text.to_string()),
            None => Ok(()),
        }
    }

    fn next_event_until(&mut self, deadline: Option<Instant>) -> Result<Option<SessionEvent>, ClientError> {
        loop {
            if let Some(e) = self.queued.pop_front() {
                return Ok(Some(e));
            }
            if let Some(e) = self.ended.take() {
                return Err(e);
            }
            if self.client.is_none() {
                if let Some(d) = self.retry_delay.take() {
                    std::thread::sleep(d);
                }
                if let Err(e) = self.connect() {
                    self.client = None;
                    return self.after_failure(e).map(Some);
                }
                continue;
            }
            self.refresh_token_if_due()?;
            let now = Instant::now();
            if deadline.is_some_and(|d| d <= now) {
                return Ok(None);
            }
            let wait = [self.token_deadline(), deadline]
                .into_iter()
                .flatten()
                .min()
                .map(|d| d.saturating_duration_since(now));
            let Some(client) = self.client.as_mut() else { continue };
            match client.recv_timeout(wait) {
                Ok(None) => {}
                Ok(Some(m)) => {
                    if let Some(event) = self.on_message(m) {
                        return Ok(Some(event));
                    }
                }
                Err(e) => {
                    self.client = None;
                    self.backoff.disconnected(Instant::now());
                    return self.after_failure(e).map(Some);
                }
            }
        }
    }

    /// Closes the connection (1000) and ends the session.
    pub fn close(&mut self) {
        self.outbox.clear();
        if let Some(mut c) = self.client.take() {
            let _ = c.close(1000, "");
        }
        self.ended = Some(ClientError::Closed {
            code: 1000,
            reason: "closed by the client".into(),
        });
    }

    fn has_provider(&self) -> bool {
        matches!(self.token, TokenSource::Provider(_))
    }

    /// A connection failed or ended: `Disconnected` and a delay before the next attempt, or
    /// the error if the session is over.
    fn after_failure(&mut self, e: ClientError) -> Result<SessionEvent, ClientError> {
        let (code, reason) = match &e {
            ClientError::Closed { code, reason } => (*code, reason.clone()),
            ClientError::AuthenticationFailed(r) => (1008, format!("authentication failed: {r}")),
            ClientError::MessageTooLarge(r) => (1009, r.clone()),
            // The server refused the upgrade: retry only what says "later".
            ClientError::Rejected { status, .. } if !matches!(status, 429 | 500..=599) => return Err(e),
            ClientError::Url(_) | ClientError::Protocol(_) | ClientError::Json(_) => return Err(e),
            other => (1006, other.to_string()),
        };
        if !self.config.reconnect || !should_reconnect(code, &reason, self.has_provider()) {
            return Err(e);
        }
        if code == 1008 {
            // token expired: the provider is asked before the next connect.
            self.current_token.clear();
        }
        let Some(retry_in) = self.backoff.next_delay() else {
            return Err(e);
        };
        self.retry_delay = Some(retry_in);
        Ok(SessionEvent::Disconnected { code, reason, retry_in })
    }

    fn token_for_connect(&mut self) -> Result<String, ClientError> {
        match &mut self.token {
            TokenSource::Fixed(t) => Ok(t.clone()),
            TokenSource::Provider(get) => {
                let due = self.current_token.is_empty()
                    || token_expiry(&self.current_token)
                        .is_some_and(|exp| exp <= unix_now() + self.config.refresh_before.as_secs());
                if due {
                    self.current_token =
                        get().map_err(|e| ClientError::AuthenticationFailed(format!("token provider: {e}")))?;
                }
                Ok(self.current_token.clone())
            }
        }
    }

    /// When the current token must be replaced on the open connection (providers only).
    fn token_deadline(&self) -> Option<Instant> {
        if !self.has_provider() {
            return None;
        }
        let exp = token_expiry(&self.current_token)?;
        let at = exp.saturating_sub(self.config.refresh_before.as_secs());
        Some(Instant::now() + Duration::from_secs(at.saturating_sub(unix_now())))
    }

    fn refresh_token_if_due(&mut self) -> Result<(), ClientError> {
        if self.token_deadline().is_none_or(|d| d > Instant::now()) {
            return Ok(());
        }
        let TokenSource::Provider(get) = &mut self.token else {
            return Ok(());
        };
        let fresh = get().map_err(|e| ClientError::AuthenticationFailed(format!("token provider: {e}")))?;
        if fresh == self.current_token {
            return Err(ClientError::AuthenticationFailed(
                "token provider returned the expiring token".into(),
            ));
        }
        self.current_token = fresh.clone();
        self.send_if_open(json!({"type": "token.refresh", "data": {"token": fresh}}))
    }

    /// After a connect: subscribe and join again, asking for what was missed.
    fn restore(&mut self) -> Result<(), ClientError> {
        if !self.events.is_empty() {
            let events = self.events.iter().cloned().collect();
            self.send_membership("subscribe", "events", events, "event:")?;
        }
        if !self.rooms.is_empty() {
            let rooms = self.rooms.iter().cloned().collect();
            self.send_membership("join", "rooms", rooms, "room:")?;
        }
        while let Some(m) = self.outbox.pop_front() {
            if let Err(e) = self.send_if_open(m.clone()) {
                self.outbox.push_front(m);
                return Err(e);
            }
        }
        Ok(())
    }

    fn send_membership(&mut self, kind: &str, key: &str, names: Vec<String>, prefix: &str) -> Result<(), ClientError> {
        let mut recover = serde_json::Map::new();
        for n in &names {
            if let Some(p) = self.positions.get(&format!("{prefix}{n}")) {
                recover.insert(n.clone(), json!({"offset": p.offset, "epoch": p.epoch}));
            }
        }
        let mut data = json!({ key: names });
        if !recover.is_empty() {
            data["recover"] = Value::Object(recover);
        }
        self.send_if_open(json!({"type": kind, "data": data}))
    }

    fn send_if_open(&mut self, message: Value) -> Result<(), ClientError> {
        match self.client.as_mut() {
            Some(c) => c.send_json(&message),
            // Kept in the session's state; sent by `restore` on the next connect.
            None => Ok(()),
        }
    }

    fn on_message(&mut self, m: Message) -> Option<SessionEvent> {
        let v: Value = match &m {
            Message::Text(t) => serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.to_string())),
            Message::Binary(b) => {
                return Some(SessionEvent::Message(Value::String(
                    String::from_utf8_lossy(b).into_owned(),
                )));
            }
            _ => return None,
        };
        match v["type"].as_str() {
            Some("pong") => {
                if let Some((id, sent)) = &self.ping_sent
                    && v["data"]["pingId"].as_str() == Some(id)
                {
                    self.rtt = Some(sent.elapsed());
                    self.ping_sent = None;
                }
            }
            Some("error") if v["data"]["code"] == "RATE_LIMIT_EXCEEDED" => {
                let secs = v["data"]["retry_after"].as_u64().unwrap_or(1);
                self.paused_until = Some(Instant::now() + Duration::from_secs(secs));
            }
            Some("subscription.acknowledged" | "room.joined") => {
                if let Some(positions) = v["data"]["positions"].as_object() {
                    for p in positions.values() {
                        let channel = p["channel"].as_str().unwrap_or_default().to_string();
                        match p.get("recovered").and_then(Value::as_bool) {
                            // The missed messages follow and move the position themselves.
                            Some(true) => {}
                            Some(false) => {
                                self.positions.remove(&channel);
                                self.note_position(&channel, p);
                            }
                            None => self.note_position(&channel, p),
                        }
                        if let Some(exact) = p.get("recovered").and_then(Value::as_bool) {
                            self.exact.insert(channel.clone(), exact);
                            self.queued.push_back(SessionEvent::Recovered { channel, exact });
                        }
                    }
                }
            }
            _ => {}
        }
        if let Some(channel) = v["channel"].as_str() {
            let epoch = v["epoch"].as_str().unwrap_or_default();
            if self.positions.get(channel).is_some_and(|p| p.epoch != epoch) {
                // The channel's history was lost in between: as a failed recovery.
                self.exact.insert(channel.to_string(), false);
                self.queued.push_back(SessionEvent::Recovered {
                    channel: channel.to_string(),
                    exact: false,
                });
                self.positions.remove(channel);
            }
            let channel = channel.to_string();
            self.note_position(&channel, &v);
        }
        self.queued.push_back(SessionEvent::Message(v));
        self.queued.pop_front()
    }

    fn note_position(&mut self, channel: &str, v: &Value) {
        let (Some(offset), Some(epoch)) = (v["offset"].as_u64(), v["epoch"].as_str()) else {
            return;
        };
        if channel.is_empty() {
            return;
        }
        let newer = self
            .positions
            .get(channel)
            .is_none_or(|p| p.epoch != epoch || offset > p.offset);
        if newer {
            self.positions.insert(
                channel.to_string(),
                Position {
                    offset,
                    epoch: epoch.to_string(),
                },
            );
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A JWT's `exp`, read without verifying (the server verifies; the client only plans).
fn token_expiry(token: &str) -> Option<u64> {
    let claims: Value = jsonwebtoken::dangerous::insecure_decode_claims(token).ok()?;
    claims["exp"].as_u64()
}
