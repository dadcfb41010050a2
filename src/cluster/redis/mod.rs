//! The Redis engine: nodes joined by Redis pub/sub, driven from mio without blocking.
//!
//! Owns: per reactor, one command connection (PUBLISH, the per-user limit script, liveness);
//! on reactor 0 also the node's one subscription connection, the count of interest per channel
//! over every reactor, the subscription probe and the liveness heartbeat. Does not touch:
//! connections or deliveries (what arrives is handed to the reactor with `r.received`).
//!
//! Every node subscribes to `{prefix}:all`, `{prefix}:nodes` and its own `{prefix}:node:{id}`,
//! and to a user's, room's or event's channel only while it has a member of it. One message is
//! one PUBLISH, whatever the number of recipients or nodes; its reply (the number of
//! subscribers that received it) is the number of nodes reached, since each node has one
//! subscription connection. Subscription changes made in one loop turn go out as one
//! `SUBSCRIBE`/`UNSUBSCRIBE` of many channels.
//!
//! Failures: a lost connection fails what it had in flight (publishes answer
//! `cluster unavailable`) and is made again with jittered exponential backoff (100 ms doubling
//! to 5 s); the subscription connection then subscribes to every channel of interest again. A
//! subscription that silently stops delivering is caught by a probe: reactor 0 publishes a
//! message to its own node channel every second and reconnects the subscription if one has
//! not come back within 3 s of Redis publishing it (the PUBLISH reply: a command connection
//! busy with other work does not count against the subscription).

use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis_protocol::resp2::types::BytesFrame;

use super::resp::{Conn, bytes_of};
use super::{Admission, Channels, Engine, EngineError, EngineOp, ReactorEngine, wire};
use crate::config::{Config, RedisUrl};
use crate::embed::{SourceId, TimerId};
use crate::metrics::ClusterMetrics;
use crate::reactor::reactor_ctx::ReactorCtx;

const CMD: SourceId = 1;
const SUB: SourceId = 2;
const RECONNECT_CMD: TimerId = 1;
const RECONNECT_SUB: TimerId = 2;
/// Reactor 0's once-a-second work: liveness, probe.
const TICK: TimerId = 3;
/// Admissions held while this reactor's own connection is being made again give up then.
const ADMIT_WAIT: TimerId = 4;
const ADMIT_WAIT_FOR: Duration = Duration::from_secs(1);
const TICK_EVERY: Duration = Duration::from_secs(1);
const PROBE_DEADLINE: Duration = Duration::from_secs(3);
/// Channels per SUBSCRIBE / UNSUBSCRIBE command.
const SUBSCRIBE_BATCH: usize = 1000;

mod history_ops;
mod limit;

use limit::USER_KEY_TTL_MS;

/// The scripts each command connection loads (`Script` indexes them).
const SCRIPTS: [&str; 4] = [
    limit::ADMIT_SCRIPT,
    super::history::PUBLISH_SCRIPT,
    super::history::RANGE_SCRIPT,
    super::history::CLEAR_SCRIPT,
];

#[derive(Clone, Copy)]
enum Script {
    Admit = 0,
    Publish = 1,
    Range = 2,
    Clear = 3,
}

/// The Redis engine of `--redis`.
pub struct RedisEngine {
    shared: Arc<Shared>,
}

struct Shared {
    url: RedisUrl,
    addr: SocketAddr,
    node: String,
    channels: Channels,
    node_ttl: Duration,
    /// This process, as the value of its liveness key.
    instance: String,
    metrics: Arc<ClusterMetrics>,
    /// Reactor 0's subscription connection is subscribed to the control channels.
    sub_up: AtomicBool,
    /// Messages kept per history channel, and for how long after its last one (0: no history).
    history_size: usize,
    history_ttl_ms: u64,
}

impl RedisEngine {
    /// Resolves the Redis address once (startup may block on DNS; the reactors never do).
    pub(crate) fn new(config: &Config, url: &RedisUrl, metrics: Arc<ClusterMetrics>) -> std::io::Result<Self> {
        let addr = (url.host.as_str(), url.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::other(format!("redis host {:?} has no address", url.host)))?;
        Ok(RedisEngine {
            shared: Arc::new(Shared {
                url: url.clone(),
                addr,
                node: config.node_id.clone(),
                channels: Channels::new(&config.redis_prefix, &config.node_id),
                node_ttl: config.node_ttl,
                instance: format!("{}:{}", std::process::id(), uuid::Uuid::new_v4().simple()),
                metrics,
                sub_up: AtomicBool::new(false),
                history_size: config.history_size,
                history_ttl_ms: config.history_ttl.as_millis() as u64,
            }),
        })
    }
}

impl Engine for RedisEngine {
    fn keeps_history(&self) -> bool {
        true
    }

    fn reactor_half(&self, reactor: usize) -> Box<dyn ReactorEngine> {
        Box::new(Half {
            reactor,
            shared: self.shared.clone(),
            cmd: Link::new(CMD),
            expect: VecDeque::new(),
            script_sha: Default::default(),
            sub: (reactor == 0).then(|| Sub {
                link: Link::new(SUB),
                channels: HashMap::new(),
                changed: Vec::new(),
            }),
            probe: None,
            probe_nonce: 0,
            held_admissions: Vec::new(),
            last_heartbeat: None,
            frames: Vec::new(),
            parked: Vec::new(),
        })
    }
}

/// A connection with its reconnect state.
struct Link {
    conn: Conn,
    /// Failed attempts since the last success (sets the backoff).
    attempts: u32,
    /// A reconnect timer is set.
    retrying: bool,
    /// It has been up before (a new connection counts as a reconnect).
    was_up: bool,
}

impl Link {
    fn new(source: SourceId) -> Self {
        Link {
            conn: Conn::new(source),
            attempts: 0,
            retrying: false,
            was_up: false,
        }
    }
}

/// What a reply on the command connection answers, in order.
enum Expect {
    Ignore,
    /// The liveness SET ... GET: the value it replaced.
    Heartbeat,
    Publish(u64),
    Admit(u64),
    /// The probe's PUBLISH (its nonce).
    Probe(u64),
    ScriptLoad(Script),
    History(history_ops::Pending),
}

/// Reactor 0's subscriptions.
struct Sub {
    link: Link,
    /// Per channel: reactors with interest, and whether it is subscribed on the current
    /// connection (one entry per channel: with a channel per user, this is the node's largest
    /// cluster structure).
    channels: HashMap<Box<[u8]>, Interest>,
    /// Channels whose interest changed since the last flush.
    changed: Vec<Box<[u8]>>,
}

#[derive(Default)]
struct Interest {
    reactors: u32,
    subscribed: bool,
    /// SUBSCRIBE / UNSUBSCRIBE commands for the channel not yet confirmed: while any is, the
    /// node cannot tell whether Redis has it subscribed.
    unconfirmed: u16,
}

impl Interest {
    /// Redis confirmed the subscription: every later publish on the channel reaches the node.
    fn confirmed(&self) -> bool {
        self.subscribed && self.unconfirmed == 0
    }
}

struct Half {
    reactor: usize,
    shared: Arc<Shared>,
    cmd: Link,
    expect: VecDeque<Expect>,
    script_sha: [Option<bytes::Bytes>; SCRIPTS.len()],
    sub: Option<Sub>,
    /// The probe in flight: its nonce and when Redis published it (`None` until the PUBLISH
    /// reply: a busy command connection is not a silent subscription).
    probe: Option<(u64, Option<Instant>)>,
    probe_nonce: u64,
    last_heartbeat: Option<Instant>,
    frames: Vec<BytesFrame>,
    /// Admissions waiting for this reactor's command connection while the node still reaches
    /// Redis (reconnects are per reactor, each with its own backoff).
    held_admissions: Vec<HeldAdmission>,
    /// History ops that wait until the node is subscribed to their channel (reactor 0).
    parked: Vec<(Box<[u8]>, EngineOp)>,
}

struct HeldAdmission {
    id: u64,
    user: Box<str>,
    connection: uuid::Uuid,
    limit: usize,
    evict: bool,
}

fn backoff(attempts: u32) -> Duration {
    let cap = 100u64.saturating_mul(1 << attempts.min(6)).min(5000);
    // Full jitter over the upper half: nodes restarted together do not reconnect together.
    let jitter = (uuid::Uuid::new_v4().as_u128() as u64) % (cap / 2 + 1);
    Duration::from_millis(cap / 2 + jitter)
}

impl Half {
    fn is_up(&self) -> bool {
        self.cmd.conn.is_connected() && self.shared.sub_up.load(Ordering::Acquire)
    }

    fn connect(&mut self, r: &mut ReactorCtx<'_>, which: SourceId) {
        let addr = self.shared.addr;
        let link = match which {
            CMD => &mut self.cmd,
            _ => match self.sub.as_mut() {
                Some(s) => &mut s.link,
                None => return,
            },
        };
        link.retrying = false;
        if let Err(e) = link.conn.connect(r, addr) {
            self.log_failure(which, &format!("connecting to redis at {addr}: {e}"));
            self.lost(r, which);
            return;
        }
        // AUTH and SELECT go first; their replies are checked like any other.
        let url = &self.shared.url;
        let mut setup: Vec<Vec<&[u8]>> = Vec::new();
        if let Some(p) = &url.password {
            match &url.username {
                Some(u) => setup.push(vec![b"AUTH", u.as_bytes(), p.as_bytes()]),
                None => setup.push(vec![b"AUTH", p.as_bytes()]),
            }
        }
        let db = url.db.to_string();
        if url.db != 0 {
            setup.push(vec![b"SELECT", db.as_bytes()]);
        }
        if which == CMD {
            for c in &setup {
                self.cmd.conn.command(c);
                self.expect.push_back(Expect::Ignore);
            }
            for (i, script) in SCRIPTS.iter().enumerate() {
                self.cmd.conn.command(&[b"SCRIPT", b"LOAD", script.as_bytes()]);
                let which = [Script::Admit, Script::Publish, Script::Range, Script::Clear][i];
                self.expect.push_back(Expect::ScriptLoad(which));
            }
            // Every reactor marks the node alive as it (re)connects, before the connections it
            // registers again could be judged dead; reactor 0 keeps it fresh.
            self.heartbeat();
        } else if let Some(sub) = self.sub.as_mut() {
            for c in &setup {
                sub.link.conn.command(c);
            }
            let ch = &self.shared.channels;
            sub.link
                .conn
                .command(&[b"SUBSCRIBE", &ch.nodes(), &ch.this_node(), &ch.all()]);
            sub.channels.retain(|_, i| i.reactors > 0);
            for i in sub.channels.values_mut() {
                i.subscribed = false;
                i.unconfirmed = 0;
            }
            sub.changed = sub.channels.keys().cloned().collect();
        }
    }

    /// The first failure after a success is a warning; retries that fail again are debug
    /// lines (a Redis that stays away must not flood the log).
    fn log_failure(&self, which: SourceId, what: &str) {
        let attempts = match which {
            CMD => self.cmd.attempts,
            _ => self.sub.as_ref().map_or(0, |s| s.link.attempts),
        };
        let conn = if which == CMD { "command" } else { "subscription" };
        if attempts == 0 {
            log::warn!("reactor {} ({conn}): {what}; retrying with backoff", self.reactor);
        } else {
            log::debug!("reactor {} ({conn}): {what}", self.reactor);
        }
    }

    /// A connection broke (or could not be made): fail what it had in flight, retry later.
    fn lost(&mut self, r: &mut ReactorCtx<'_>, which: SourceId) {
        let m = &self.shared.metrics;
        let link = if which == CMD {
            for e in std::mem::take(&mut self.expect) {
                match e {
                    Expect::Publish(id) => {
                        m.publish_failures.inc();
                        r.published(id, Err(EngineError::Unavailable));
                    }
                    Expect::Admit(id) => r.admitted(id, Admission::Local),
                    Expect::History(p) => r.history(p.id(), Err(EngineError::Unavailable)),
                    Expect::Ignore | Expect::ScriptLoad(_) | Expect::Heartbeat | Expect::Probe(_) => {}
                }
            }
            self.script_sha = Default::default();
            // Its PUBLISH was lost with the connection: the next tick sends another.
            self.probe = None;
            &mut self.cmd
        } else {
            let Some(sub) = self.sub.as_mut() else { return };
            if self.shared.sub_up.swap(false, Ordering::AcqRel) {
                log::warn!("cluster: subscription to redis lost; reconnecting");
            }
            self.probe = None;
            m.subscriptions.set(0);
            for (_, op) in std::mem::take(&mut self.parked) {
                history_ops::fail(r, op);
            }
            r.subscription_lost();
            &mut sub.link
        };
        link.conn.close(r);
        if !link.retrying {
            link.retrying = true;
            let delay = backoff(link.attempts);
            link.attempts = link.attempts.saturating_add(1);
            r.set_timer(if which == CMD { RECONNECT_CMD } else { RECONNECT_SUB }, delay);
        }
        self.update_up();
    }

    fn update_up(&self) {
        if self.reactor == 0 {
            let up = self.is_up();
            if self.shared.metrics.up.swap(up, Ordering::AcqRel) != up {
                log::info!("cluster: node {} {}", self.shared.node, if up { "up" } else { "down" });
            }
        }
    }

    fn connected(&mut self, which: SourceId) {
        let link = if which == CMD {
            &mut self.cmd
        } else {
            match self.sub.as_mut() {
                Some(s) => &mut s.link,
                None => return,
            }
        };
        link.attempts = 0;
        if link.was_up {
            self.shared.metrics.reconnects.inc();
        }
        link.was_up = true;
    }

    /// Refreshes this node's liveness key. Its value names this process, so a second live
    /// node started with the same id is noticed (and logged) at the next refresh.
    fn heartbeat(&mut self) {
        let key = format!("{}{}", self.shared.channels.alive_prefix(), self.shared.node);
        let ttl = self.shared.node_ttl.as_millis().to_string();
        let first = self.last_heartbeat.is_none();
        self.cmd.conn.command(&[
            b"SET",
            key.as_bytes(),
            self.shared.instance.as_bytes(),
            b"PX",
            ttl.as_bytes(),
            b"GET",
        ]);
        self.expect
            .push_back(if first { Expect::Ignore } else { Expect::Heartbeat });
        self.last_heartbeat = Some(Instant::now());
    }

    fn on_cmd_replies(&mut self, r: &mut ReactorCtx<'_>) {
        for f in std::mem::take(&mut self.frames) {
            let Some(e) = self.expect.pop_front() else {
                log::warn!("cluster: a redis reply nobody asked for: {f:?}");
                continue;
            };
            match (e, f) {
                (Expect::Publish(id), BytesFrame::Integer(n)) => r.published(id, Ok(n.max(0) as usize)),
                (Expect::Publish(id), other) => {
                    log::warn!("cluster: PUBLISH failed: {other:?}");
                    self.shared.metrics.publish_failures.inc();
                    r.published(id, Err(EngineError::Unavailable));
                }
                (Expect::Admit(id), BytesFrame::Integer(n)) => r.admitted(
                    id,
                    if n == 1 {
                        Admission::Admitted
                    } else {
                        Admission::Refused
                    },
                ),
                (Expect::Admit(id), other) => {
                    log::warn!("cluster: per-user limit script failed: {other:?}");
                    r.admitted(id, Admission::Local);
                }
                (Expect::ScriptLoad(which), f) => self.script_sha[which as usize] = bytes_of(&f).cloned(),
                (Expect::History(p), f) => self.history_reply(r, p, f),
                (Expect::Heartbeat, BytesFrame::BulkString(old)) if old.as_ref() != self.shared.instance.as_bytes() => {
                    log::error!(
                        "cluster: another live node uses node id {:?}; node ids must be unique (messages between \
                         the two are lost)",
                        self.shared.node
                    );
                }
                (Expect::Heartbeat, _) => {}
                (Expect::Probe(nonce), _) => {
                    if let Some((n, at @ None)) = &mut self.probe
                        && *n == nonce
                    {
                        *at = Some(Instant::now());
                    }
                }
                (Expect::Ignore, BytesFrame::Error(e)) => log::warn!("cluster: redis said: {e}"),
                (Expect::Ignore, _) => {}
            }
        }
    }

    fn on_sub_frames(&mut self, r: &mut ReactorCtx<'_>) {
        let frames = std::mem::take(&mut self.frames);
        for f in frames {
            let BytesFrame::Array(parts) = f else {
                if let BytesFrame::Error(e) = f {
                    log::warn!("cluster: redis said on the subscription: {e}");
                }
                continue;
            };
            let kind = parts.first().and_then(bytes_of).map(|b| b.as_ref());
            match (kind, parts.get(1).and_then(bytes_of), parts.get(2)) {
                (Some(b"message"), Some(channel), Some(BytesFrame::BulkString(payload))) => {
                    self.shared.metrics.received.inc();
                    if let Some(wire::Wire::Probe { origin, nonce }) = wire::parse(payload) {
                        if origin == self.shared.node.as_bytes() && self.probe.is_some_and(|(n, _)| n == nonce) {
                            self.probe = None;
                        }
                        continue;
                    }
                    r.received(channel, payload.clone());
                }
                (Some(b"subscribe"), Some(channel), Some(BytesFrame::Integer(n))) => {
                    self.shared.metrics.subscriptions.set(*n as u64);
                    if **channel == *self.shared.channels.all() {
                        // The control channels were asked for together, before anything else.
                        self.shared.sub_up.store(true, Ordering::Release);
                        self.update_up();
                    }
                    self.confirmation(r, channel);
                }
                (Some(b"unsubscribe"), Some(channel), Some(BytesFrame::Integer(n))) => {
                    self.shared.metrics.subscriptions.set(*n as u64);
                    self.confirmation(r, channel);
                }
                _ => {}
            }
        }
    }

    /// Redis confirmed a SUBSCRIBE or UNSUBSCRIBE of `channel`: once none is outstanding, the
    /// reactor hears whether the node is subscribed to it.
    fn confirmation(&mut self, r: &mut ReactorCtx<'_>, channel: &[u8]) {
        let Some(sub) = self.sub.as_mut() else { return };
        let Some(i) = sub.channels.get_mut(channel) else { return };
        i.unconfirmed = i.unconfirmed.saturating_sub(1);
        if i.unconfirmed > 0 {
            return;
        }
        let subscribed = i.subscribed;
        if !subscribed && i.reactors == 0 {
            sub.channels.remove(channel);
        }
        r.subscription(channel, subscribed);
        if subscribed && !self.parked.is_empty() {
            self.unpark(r, channel);
        }
    }

    fn apply_interest(&mut self, channel: Box<[u8]>, on: bool) {
        let Some(sub) = self.sub.as_mut() else { return };
        let i = sub.channels.entry(channel.clone()).or_default();
        if on {
            i.reactors += 1;
        } else {
            i.reactors = i.reactors.saturating_sub(1);
        }
        sub.changed.push(channel);
    }

    /// Sends the subscription changes of this turn as few commands.
    fn reconcile(&mut self) {
        let Some(sub) = self.sub.as_mut() else { return };
        if sub.changed.is_empty() || !sub.link.conn.is_open() {
            return;
        }
        let mut add: Vec<Box<[u8]>> = Vec::new();
        let mut drop: Vec<Box<[u8]>> = Vec::new();
        for ch in std::mem::take(&mut sub.changed) {
            let Some(i) = sub.channels.get_mut(&ch) else { continue };
            let wanted = i.reactors > 0;
            if wanted != i.subscribed {
                i.subscribed = wanted;
                i.unconfirmed = i.unconfirmed.saturating_add(1);
                if wanted {
                    add.push(ch.clone());
                } else {
                    drop.push(ch.clone());
                }
            }
            if !wanted && i.unconfirmed == 0 {
                sub.channels.remove(&ch);
            }
        }
        for (verb, list) in [(&b"SUBSCRIBE"[..], add), (&b"UNSUBSCRIBE"[..], drop)] {
            for batch in list.chunks(SUBSCRIBE_BATCH) {
                let mut args: Vec<&[u8]> = Vec::with_capacity(batch.len() + 1);
                args.push(verb);
                args.extend(batch.iter().map(|c| &c[..]));
                sub.link.conn.command(&args);
            }
        }
    }

    fn tick(&mut self, r: &mut ReactorCtx<'_>) {
        r.set_timer(TICK, TICK_EVERY);
        if !self.cmd.conn.is_connected() {
            return;
        }
        if self
            .last_heartbeat
            .is_none_or(|t| t.elapsed() >= self.shared.node_ttl / 3)
        {
            self.heartbeat();
        }
        if !self.shared.sub_up.load(Ordering::Acquire) {
            return;
        }
        match self.probe {
            Some((_, Some(published))) if published.elapsed() >= PROBE_DEADLINE => {
                log::warn!("cluster: the subscription stopped delivering (probe lost); reconnecting it");
                self.shared.metrics.probe_failures.inc();
                self.lost(r, SUB);
            }
            Some(_) => {}
            None => {
                self.probe_nonce += 1;
                let payload = wire::probe(&self.shared.node, self.probe_nonce);
                let channel = self.shared.channels.this_node();
                self.cmd.conn.command(&[b"PUBLISH", &channel, &payload]);
                self.expect.push_back(Expect::Probe(self.probe_nonce));
                self.shared.metrics.probes.inc();
                self.probe = Some((self.probe_nonce, None));
            }
        }
    }
}

impl ReactorEngine for Half {
    fn on_start(&mut self, r: &mut ReactorCtx<'_>) {
        self.connect(r, CMD);
        if self.sub.is_some() {
            self.connect(r, SUB);
            r.set_timer(TICK, TICK_EVERY);
        }
    }

    fn on_source(&mut self, r: &mut ReactorCtx<'_>, source: SourceId, event: &mio::event::Event) {
        let mut frames = std::mem::take(&mut self.frames);
        let result = match source {
            CMD => self.cmd.conn.on_event(event, &mut frames),
            SUB => match self.sub.as_mut() {
                Some(s) => s.link.conn.on_event(event, &mut frames),
                None => return,
            },
            _ => return,
        };
        self.frames = frames;
        match result {
            Ok(just_connected) => {
                if just_connected {
                    self.connected(source);
                    if source == CMD {
                        // Redis may have restarted empty: count this reactor's connections again.
                        r.register_connections();
                    }
                }
                if source == CMD {
                    self.on_cmd_replies(r);
                } else {
                    self.on_sub_frames(r);
                }
                self.update_up();
            }
            Err(e) => {
                // Replies that arrived before the break are still good.
                if source == CMD {
                    self.on_cmd_replies(r);
                } else {
                    self.on_sub_frames(r);
                }
                self.log_failure(source, &format!("redis connection lost: {e}"));
                self.lost(r, source);
            }
        }
    }

    fn on_timer(&mut self, r: &mut ReactorCtx<'_>, timer: TimerId) {
        match timer {
            ADMIT_WAIT => {
                for a in std::mem::take(&mut self.held_admissions) {
                    r.admitted(a.id, Admission::Local);
                }
            }
            RECONNECT_CMD => self.connect(r, CMD),
            RECONNECT_SUB => self.connect(r, SUB),
            TICK => self.tick(r),
            _ => {}
        }
    }

    fn apply(&mut self, r: &mut ReactorCtx<'_>, op: EngineOp) {
        let m = &self.shared.metrics;
        match op {
            EngineOp::Publish { id, channel, payload } => {
                if !self.is_up() {
                    m.publish_failures.inc();
                    r.published(id, Err(EngineError::Unavailable));
                    return;
                }
                m.publishes.inc();
                self.cmd.conn.command(&[b"PUBLISH", &channel, &payload]);
                self.expect.push_back(Expect::Publish(id));
            }
            EngineOp::Send { channel, payload } => {
                if self.is_up() {
                    m.publishes.inc();
                    self.cmd.conn.command(&[b"PUBLISH", &channel, &payload]);
                    self.expect.push_back(Expect::Ignore);
                }
            }
            EngineOp::Interest { channel, on } => self.apply_interest(channel, on),
            EngineOp::Admit {
                id,
                user,
                connection,
                limit,
                evict,
            } => self.admit(r, id, &user, connection, limit, evict),
            EngineOp::Register {
                user,
                connection,
                since,
            } => {
                if self.cmd.conn.is_connected() {
                    let key = self.shared.channels.user_connections(&user);
                    let member = format!("{}|{}", self.shared.node, connection);
                    let since = since.to_string();
                    self.cmd
                        .conn
                        .command(&[b"ZADD", &key, since.as_bytes(), member.as_bytes()]);
                    self.cmd.conn.command(&[b"PEXPIRE", &key, USER_KEY_TTL_MS.as_bytes()]);
                    self.expect.push_back(Expect::Ignore);
                    self.expect.push_back(Expect::Ignore);
                }
            }
            op @ (EngineOp::PublishHistory { .. } | EngineOp::HistoryRange { .. } | EngineOp::HistoryClear { .. }) => {
                self.apply_history(r, op)
            }
            EngineOp::Release { user, connection } => {
                if self.is_up() {
                    let key = self.shared.channels.user_connections(&user);
                    let member = format!("{}|{}", self.shared.node, connection);
                    self.cmd.conn.command(&[b"ZREM", &key, member.as_bytes()]);
                    self.expect.push_back(Expect::Ignore);
                }
            }
        }
    }

    fn flush(&mut self, r: &mut ReactorCtx<'_>) {
        if !self.held_admissions.is_empty() && self.is_up() {
            // After this turn's registrations went out, so they count.
            for a in std::mem::take(&mut self.held_admissions) {
                self.admit(r, a.id, &a.user, a.connection, a.limit, a.evict);
            }
        }
        self.reconcile();
        if self.cmd.conn.is_connected()
            && let Err(e) = self.cmd.conn.flush()
        {
            self.log_failure(CMD, &format!("redis connection lost: {e}"));
            self.lost(r, CMD);
        }
        if let Some(sub) = self.sub.as_mut()
            && sub.link.conn.is_connected()
            && let Err(e) = sub.link.conn.flush()
        {
            self.log_failure(SUB, &format!("redis subscription lost: {e}"));
            self.lost(r, SUB);
        }
    }
}
