//! The Redis engine: nodes joined by Redis pub/sub, driven from mio without blocking.
//!
//! Owns: per reactor, one command connection (PUBLISH, the per-user limit scripts, liveness);
//! on reactor 0 also the node's one subscription connection (`subscription`), the subscription
//! probe and the liveness heartbeat. Does not touch: connections or deliveries (what arrives is
//! handed to the reactor with `r.received`).
//!
//! Every node subscribes to `{prefix}:all`, `{prefix}:nodes` and its own `{prefix}:node:{id}`,
//! and to a user's, room's or event's channel only while it has a member of it. One message is
//! one PUBLISH, whatever the number of recipients or nodes; its reply (the number of
//! subscribers that received it) is the number of nodes reached, since each node has one
//! subscription connection.
//!
//! Failures, and what each one promises:
//! - A command with no reply within `--redis-timeout` of being sent means Redis is stalled:
//!   the connection is dropped. Whatever it had in flight is answered by what is known: a
//!   command never written whole was never run (`Unavailable`: delivered nowhere); one written
//!   may have run (`Unknown`), never reported as a success or a plain failure.
//! - The subscription is checked by a probe: reactor 0 publishes to its own node channel every
//!   half second, and a probe not back within `--redis-timeout` of being sent drops the
//!   subscription (Redis stalled, or the connection went silent).
//! - Lost connections are made again with jittered exponential backoff (100 ms doubling to
//!   5 s); when one of the node's connections reaches Redis, the others try at once.
//! - Wrong credentials are retried like any other failure, logged once per change of reason,
//!   and shown in `/ready` and `/metrics`.
//! - Liveness is per process: a node's entries in users' connection sets carry its
//!   incarnation (a nonce per start), and count only while the node's liveness key holds that
//!   incarnation. Releases made while Redis was away are sent when it is back; connections are
//!   registered again (applying the per-user policy to any excess) whenever Redis may have
//!   forgotten them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use crate::callback::{SourceId, TimerId};
use crate::cluster::broker::EngineHost;
use crate::cluster::broker::{Admission, Engine, EngineError, EngineOp, ReactorEngine};
use crate::cluster::channels::Channels;
use crate::cluster::wire;
use crate::config::{Config, RedisUrl};
use crate::metrics::ClusterMetrics;

mod address;
mod history_ops;
mod limit;
mod link;
mod replies;
mod sentinel;
mod state;
mod subscription;

use link::Link;
use state::*;

/// The scripts each command connection loads (`Script` indexes them).
const SCRIPTS: [&str; 6] = [
    limit::ADMIT_SCRIPT,
    super::history::PUBLISH_SCRIPT,
    super::history::RANGE_SCRIPT,
    super::history::CLEAR_SCRIPT,
    limit::REGISTER_SCRIPT,
    super::history::DEDUPE_PUBLISH_SCRIPT,
];

/// The Redis engine of `--redis`.
pub struct RedisEngine {
    shared: Arc<Shared>,
}

impl RedisEngine {
    /// Resolves the Redis address (startup may block on DNS; the reactors never do). A name
    /// that does not resolve does not stop the start: like a Redis that does not answer, the
    /// node starts on its own and joins once it can, a thread resolving the name again every
    /// second meanwhile (a DNS record may come after the node, as in a cluster starting up).
    pub(crate) fn new(config: &Config, url: &RedisUrl, metrics: Arc<ClusterMetrics>) -> std::io::Result<Self> {
        let (master, sentinels) = match &url.sentinels {
            None => (address::resolve(&url.host, url.port).ok(), Vec::new()),
            Some(s) => {
                let all = s
                    .hosts
                    .iter()
                    .map(|(h, p)| address::resolve(h, *p))
                    .collect::<Result<Vec<_>, _>>()?;
                (None, all)
            }
        };
        let tls = match url.tls {
            false => None,
            true => Some(address::tls_of(config, url)?),
        };
        let unresolved = master.is_none() && url.sentinels.is_none();
        let engine = RedisEngine {
            shared: Arc::new(Shared {
                url: url.clone(),
                master: std::sync::Mutex::new(master),
                master_moves: AtomicU64::new(0),
                sentinels,
                tls,
                node: config.node_id.clone(),
                channels: Channels::new(&config.redis_prefix, &config.node_id),
                node_ttl: config.node_ttl,
                timeout: config.redis_timeout,
                instance: uuid::Uuid::new_v4().simple().to_string(),
                metrics,
                sub_up: AtomicBool::new(false),
                cmd_up: (0..config.workers).map(|_| AtomicBool::new(false)).collect(),
                reached: AtomicU64::new(0),
                reregister: AtomicU64::new(0),
                history_size: config.history_size,
                history_ttl_ms: config.history_ttl.as_millis() as u64,
                dedupe_window_ms: config.idempotency_window.as_millis().to_string(),
            }),
        };
        if unresolved {
            let shared = engine.shared.clone();
            std::thread::Builder::new()
                .name("wsedge-redis-resolve".into())
                .spawn(move || address::resolve_until_found(&shared))?;
        }
        Ok(engine)
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
            sub: (reactor == 0).then(|| Sub::new(Link::new(SUB))),
            watch: (reactor == 0 && !self.shared.sentinels.is_empty()).then(Watch::new),
            seen_moves: 0,
            probe: None,
            probe_nonce: 0,
            last_probe: None,
            held_admissions: Vec::new(),
            last_heartbeat: None,
            heartbeats: 0,
            seen_reached: 0,
            cmd_ready: false,
            seen_reregister: 0,
            unsent_releases: VecDeque::new(),
            counted_alone: false,
            heartbeat_refused: false,
            last_cmd_ping: None,
            frames: Vec::new(),
            parked: Vec::new(),
        })
    }
}

impl Half {
    fn is_up(&self) -> bool {
        self.cmd_ready && self.shared.sub_up.load(Ordering::Acquire)
    }

    /// Sends one command on the command connection; its reply answers `what`.
    fn send(&mut self, args: &[&[u8]], what: Expect) {
        let end = self.cmd.conn.command(args);
        self.expect.push_back(Awaited {
            what,
            end,
            at: Instant::now(),
        });
    }

    /// Runs script `which` with `keys` and `args` (by its SHA once loaded).
    fn run_script(&mut self, which: Script, what: Expect, keys: &[&[u8]], args: &[&[u8]]) {
        let n = keys.len().to_string();
        let mut cmd: Vec<&[u8]> = Vec::with_capacity(keys.len() + args.len() + 3);
        let sha = self.script_sha[which as usize].clone();
        match &sha {
            Some(sha) => cmd.extend([&b"EVALSHA"[..], sha]),
            None => cmd.extend([&b"EVAL"[..], SCRIPTS[which as usize].as_bytes()]),
        }
        cmd.push(n.as_bytes());
        cmd.extend(keys);
        cmd.extend(args);
        self.send(&cmd, what);
    }

    fn connect(&mut self, r: &mut dyn EngineHost, which: SourceId) {
        let addr = *self.shared.master.lock().unwrap_or_else(|e| e.into_inner());
        let shared = self.shared.clone();
        if which == CMD {
            self.cmd_ready = false;
        }
        let link = match which {
            CMD => &mut self.cmd,
            _ => match self.sub.as_mut() {
                Some(s) => &mut s.link,
                None => return,
            },
        };
        link.retrying = false;
        link.since = Some(Instant::now());
        let what = if which == CMD { "command" } else { "subscription" };
        let Some(addr) = addr else {
            let why = if shared.sentinels.is_empty() {
                format!("redis host {:?} does not resolve yet", shared.url.host)
            } else {
                "no master yet: waiting for the sentinels".into()
            };
            link.failed(self.reactor, what, why);
            return self.lost(r, which);
        };
        link.addr = Some(addr);
        if let Err(e) = link.conn.connect(r, addr, shared.tls.as_ref()) {
            link.failed(self.reactor, what, format!("connecting to redis at {addr}: {e}"));
            return self.lost(r, which);
        }
        let db = shared.url.db.to_string();
        let mut setup = link::setup_commands(&shared.url, &db);
        if !shared.sentinels.is_empty() {
            // Only a master will do: a demoted one (or a replica the sentinels named in a
            // race) is refused on its ROLE.
            setup.push(vec![b"ROLE"]);
        }
        if which == CMD {
            for c in &setup {
                let what = if c[0] == b"ROLE" { Expect::Role } else { Expect::Setup };
                self.send(c, what);
            }
            for (script, text) in ALL_SCRIPTS.iter().zip(SCRIPTS) {
                self.send(&[b"SCRIPT", b"LOAD", text.as_bytes()], Expect::ScriptLoad(*script));
            }
            // Every reactor marks the node alive as it (re)connects, before the connections it
            // registers again could be judged dead; reactor 0 keeps it fresh.
            self.heartbeat();
            // Releases made while Redis was away (sent once the connection is made).
            for (user, connection) in std::mem::take(&mut self.unsent_releases) {
                self.release(&user, connection);
            }
        } else if let Some(sub) = self.sub.as_mut() {
            let ch = &shared.channels;
            sub.start(&setup, [&ch.nodes(), &ch.this_node(), &ch.all()]);
        }
    }

    /// A connection broke, stalled or could not be made: answer what it had in flight by what
    /// is known, and retry later.
    fn lost(&mut self, r: &mut dyn EngineHost, which: SourceId) {
        if which != CMD {
            return self.sub_lost(r);
        }
        let m = self.shared.metrics.clone();
        for a in std::mem::take(&mut self.expect) {
            // A command written whole may have run; one that was not, did not.
            let ran = self.cmd.conn.reached_redis(a.end);
            match a.what {
                Expect::Publish(id) => {
                    let why = if ran {
                        m.outcome_unknown.inc();
                        EngineError::Unknown
                    } else {
                        m.publish_failures.inc();
                        EngineError::Unavailable
                    };
                    r.published(id, Err(why));
                }
                Expect::Append(id) => {
                    r.appended(
                        id,
                        Err(if ran {
                            EngineError::Unknown
                        } else {
                            EngineError::Unavailable
                        }),
                    );
                }
                Expect::Admit(id) => {
                    self.counted_alone = true;
                    r.admitted(id, Admission::Local);
                }
                Expect::Register => self.counted_alone = true,
                Expect::History(p) => {
                    let why = if ran && p.is_publish() {
                        m.outcome_unknown.inc();
                        EngineError::Unknown
                    } else {
                        if p.is_publish() {
                            m.publish_failures.inc();
                        }
                        EngineError::Unavailable
                    };
                    r.history(p.id(), Err(why));
                }
                Expect::Release { user, connection } => self.keep_release(user, connection),
                Expect::Ignore
                | Expect::Setup
                | Expect::Role
                | Expect::ScriptLoad(_)
                | Expect::Heartbeat
                | Expect::Probe(_) => {}
            }
        }
        self.script_sha = Default::default();
        self.cmd_ready = false;
        // Its PUBLISH was lost with the connection: the next tick sends another.
        self.probe = None;
        self.cmd.conn.close(r);
        if !self.cmd.retrying {
            let delay = self.cmd.retry_later();
            r.set_timer(RECONNECT_CMD, delay);
        }
        self.update_up();
    }

    /// Publishes this reactor's state and the node's: up while the subscription and every
    /// reactor's command connection are.
    fn update_up(&self) {
        let s = &self.shared;
        if let Some(mine) = s.cmd_up.get(self.reactor) {
            mine.store(self.cmd_ready, Ordering::Release);
        }
        let up = s.sub_up.load(Ordering::Acquire) && s.cmd_up.iter().all(|c| c.load(Ordering::Acquire));
        if s.metrics.up.swap(up, Ordering::AcqRel) != up {
            log::info!("cluster: node {} {}", s.node, if up { "up" } else { "down" });
        }
    }

    /// A connection finished connecting.
    fn connected(&mut self, which: SourceId) {
        let link = if which == CMD {
            &mut self.cmd
        } else {
            match self.sub.as_mut() {
                Some(s) => &mut s.link,
                None => return,
            }
        };
        if link.was_up {
            self.shared.metrics.reconnects.inc();
        }
        link.was_up = true;
    }

    /// Drops a command connection whose oldest reply is overdue, and a subscription that did
    /// not come up, or whose probe did not come back, within the timeout.
    fn check_deadlines(&mut self, r: &mut dyn EngineHost) {
        let timeout = self.shared.timeout;
        if self.expect.front().is_some_and(|a| a.at.elapsed() >= timeout) {
            self.shared.metrics.timeouts.inc();
            self.cmd.failed(
                self.reactor,
                "command",
                format!("redis did not answer within {timeout:?}"),
            );
            self.lost(r, CMD);
        }
        let Some(sub) = self.sub.as_mut() else { return };
        let stalled = if self.shared.sub_up.load(Ordering::Acquire) {
            if self.probe.is_some_and(|(_, sent)| sent.elapsed() >= timeout) {
                Some("the subscription probe did not come back")
            } else if sub.oldest_unanswered().is_some_and(|t| t.elapsed() >= timeout) {
                Some("redis did not answer on the subscription")
            } else {
                None
            }
        } else {
            (sub.link.conn.is_open() && sub.link.since.is_some_and(|t| t.elapsed() >= timeout))
                .then_some("the subscription was not confirmed")
        };
        if let Some(why) = stalled {
            self.shared.metrics.probe_failures.inc();
            sub.link
                .failed(self.reactor, "subscription", format!("{why} within {timeout:?}"));
            self.sub_lost(r);
        }
    }

    /// A reconnect timer fired: connect if the backoff is over, wait out what is left of it if
    /// not, nothing if the link was made again meanwhile (a timer of an earlier backoff).
    fn reconnect_when_due(&mut self, r: &mut dyn EngineHost, which: SourceId) {
        let (link, timer) = match which {
            CMD => (Some(&self.cmd), RECONNECT_CMD),
            _ => (self.sub.as_ref().map(|s| &s.link), RECONNECT_SUB),
        };
        match link.and_then(|l| l.retry_left()) {
            Some(left) if left.is_zero() => self.connect(r, which),
            Some(left) => r.set_timer(timer, left),
            None => {}
        }
    }

    fn tick(&mut self, r: &mut dyn EngineHost) {
        r.set_timer(TICK, TICK_EVERY);
        // Backstop: a link whose backoff is over reconnects even if its timer was missed.
        if self.cmd.retry_due() {
            self.connect(r, CMD);
        }
        if self.sub.as_ref().is_some_and(|s| s.link.retry_due()) {
            self.connect(r, SUB);
        }
        self.check_deadlines(r);
        self.watch_tick(r);
        self.follow_master(r);
        // Another connection of this node reached Redis: stop waiting out the backoff.
        let reached = self.shared.reached.load(Ordering::Acquire);
        if reached != self.seen_reached {
            self.seen_reached = reached;
            if self.cmd.retrying {
                self.connect(r, CMD);
            }
            if self.sub.as_ref().is_some_and(|s| s.link.retrying) {
                self.connect(r, SUB);
            }
        }
        if let Some(sub) = self.sub.as_mut()
            && self.shared.sub_up.load(Ordering::Acquire)
            && sub.awaiting.is_empty()
            && sub.last_ping.is_none_or(|t| t.elapsed() >= PROBE_EVERY)
        {
            // The probe needs the command connection; this checks the subscription alone.
            sub.ping();
        }
        if !self.cmd.conn.is_connected() {
            return;
        }
        let reregister = self.shared.reregister.load(Ordering::Acquire);
        if reregister != self.seen_reregister {
            self.seen_reregister = reregister;
            r.register_connections();
        }
        if self.cmd_ready && self.expect.is_empty() && self.last_cmd_ping.is_none_or(|t| t.elapsed() >= PROBE_EVERY) {
            // An idle connection is checked too: a half-open one is found before a publish is.
            self.send(&[b"PING"], Expect::Ignore);
            self.last_cmd_ping = Some(Instant::now());
        }
        if self.reactor != 0 {
            return;
        }
        if self
            .last_heartbeat
            .is_none_or(|t| t.elapsed() >= self.shared.node_ttl / 3)
        {
            self.heartbeat();
        }
        if self.probe.is_none()
            && self.shared.sub_up.load(Ordering::Acquire)
            && self.last_probe.is_none_or(|t| t.elapsed() >= PROBE_EVERY)
        {
            self.probe_nonce += 1;
            let payload = wire::probe(&self.shared.node, self.probe_nonce);
            let channel = self.shared.channels.this_node();
            self.send(&[b"PUBLISH", &channel, &payload], Expect::Probe(self.probe_nonce));
            self.shared.metrics.probes.inc();
            let now = Instant::now();
            self.probe = Some((self.probe_nonce, now));
            self.last_probe = Some(now);
        }
    }
}

impl ReactorEngine for Half {
    fn on_start(&mut self, r: &mut dyn EngineHost) {
        self.watch_tick(r);
        self.connect(r, CMD);
        if self.sub.is_some() {
            self.connect(r, SUB);
        }
        r.set_timer(TICK, TICK_EVERY);
    }

    fn on_source(&mut self, r: &mut dyn EngineHost, source: SourceId, event: &mio::event::Event) {
        let mut frames = std::mem::take(&mut self.frames);
        if source == WATCH {
            let Some(w) = self.watch.as_mut() else { return };
            let result = w.link.conn.on_event(event, &mut frames);
            self.frames = frames;
            let broken = result.err().map(|e| format!("sentinel connection lost: {e}"));
            return self.on_watch_frames(r, broken);
        }
        let result = match source {
            CMD => self.cmd.conn.on_event(event, &mut frames),
            SUB => match self.sub.as_mut() {
                Some(s) => s.link.conn.on_event(event, &mut frames),
                None => return,
            },
            _ => return,
        };
        self.frames = frames;
        if let Ok(true) = result {
            // Whether Redis forgot this node's connections (it restarted empty, or the node
            // was away past --node-ttl) is told by the heartbeat sent first on the connection:
            // only then are they all counted again (see `heartbeat_answered`).
            self.connected(source);
        }
        // Whether this connection ever got made (a refusal at connect is not a lost link).
        let (was_connected, addr) = match (source, self.sub.as_ref()) {
            (CMD, _) => (self.cmd.conn.is_connected(), self.cmd.addr),
            (_, Some(s)) => (s.link.conn.is_connected(), s.link.addr),
            _ => (false, None),
        };
        // Replies that arrived before a break are still good.
        let refused = if source == CMD {
            self.on_cmd_replies(r)
        } else {
            self.on_sub_frames(r)
        };
        let what = if source == CMD { "command" } else { "subscription" };
        let failure = match (result, refused) {
            (_, Some(why)) => Some(why),
            (Err(e), None) if was_connected => Some(format!("redis connection lost: {e}")),
            (Err(e), None) => Some(match addr {
                Some(a) => format!("cannot reach redis at {a}: {e}"),
                None => format!("cannot reach redis: {e}"),
            }),
            (Ok(_), None) => None,
        };
        match failure {
            Some(why) => {
                let link = if source == CMD {
                    &mut self.cmd
                } else {
                    match self.sub.as_mut() {
                        Some(s) => &mut s.link,
                        None => return,
                    }
                };
                link.failed(self.reactor, what, why);
                self.lost(r, source);
            }
            None => self.update_up(),
        }
    }

    fn on_timer(&mut self, r: &mut dyn EngineHost, timer: TimerId) {
        match timer {
            ADMIT_WAIT => {
                for a in std::mem::take(&mut self.held_admissions) {
                    self.counted_alone = true;
                    r.admitted(a.id, Admission::Local);
                }
            }
            RECONNECT_CMD => self.reconnect_when_due(r, CMD),
            RECONNECT_SUB => self.reconnect_when_due(r, SUB),
            RECONNECT_WATCH => self.watch_retry(r),
            TICK => self.tick(r),
            _ => {}
        }
    }

    fn apply(&mut self, r: &mut dyn EngineHost, op: EngineOp) {
        match op {
            EngineOp::Publish {
                id,
                channel,
                payload,
                dedupe,
            } => {
                if !self.is_up() {
                    self.shared.metrics.publish_failures.inc();
                    r.published(id, Err(EngineError::Unavailable));
                    return;
                }
                self.shared.metrics.publishes.inc();
                match dedupe {
                    None => self.send(&[b"PUBLISH", &channel, &payload], Expect::Publish(id)),
                    Some(key) => {
                        let key = self.shared.channels.idempotency(&key);
                        let window = self.shared.dedupe_window_ms.clone();
                        self.run_script(
                            Script::Dedupe,
                            Expect::Publish(id),
                            &[&key],
                            &[&channel, &payload, window.as_bytes()],
                        );
                    }
                }
            }
            EngineOp::Send { channel, payload } => {
                if self.is_up() {
                    self.shared.metrics.publishes.inc();
                    self.send(&[b"PUBLISH", &channel, &payload], Expect::Ignore);
                }
            }
            EngineOp::Interest { channel, on } => {
                if let Some(sub) = self.sub.as_mut() {
                    sub.apply_interest(channel, on);
                }
            }
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
                limit,
                evict,
            } => self.register(&user, connection, since, limit, evict),
            op @ (EngineOp::PublishHistory { .. } | EngineOp::HistoryRange { .. } | EngineOp::HistoryClear { .. }) => {
                self.apply_history(r, op)
            }
            EngineOp::Release { user, connection } => self.release(&user, connection),
            EngineOp::Append {
                id,
                stream,
                maxlen,
                item,
            } => {
                if !self.is_up() {
                    r.appended(id, Err(EngineError::Unavailable));
                    return;
                }
                let maxlen = maxlen.to_string();
                self.send(
                    &[
                        b"XADD",
                        &stream,
                        b"MAXLEN",
                        b"~",
                        maxlen.as_bytes(),
                        b"*",
                        b"item",
                        &item,
                    ],
                    Expect::Append(id),
                );
            }
        }
    }

    fn flush(&mut self, r: &mut dyn EngineHost) {
        if !self.held_admissions.is_empty() && self.is_up() {
            // After this turn's registrations went out, so they count.
            for a in std::mem::take(&mut self.held_admissions) {
                self.admit(r, a.id, &a.user, a.connection, a.limit, a.evict);
            }
        }
        if let Some(sub) = self.sub.as_mut() {
            sub.reconcile();
        }
        if self.cmd.conn.is_connected()
            && let Err(e) = self.cmd.conn.flush()
        {
            self.cmd
                .failed(self.reactor, "command", format!("redis connection lost: {e}"));
            self.lost(r, CMD);
        }
        if let Some(w) = self.watch.as_mut()
            && w.link.conn.is_connected()
            && let Err(e) = w.link.conn.flush()
        {
            self.on_watch_frames(r, Some(format!("sentinel connection lost: {e}")));
        }
        if let Some(sub) = self.sub.as_mut()
            && sub.link.conn.is_connected()
            && let Err(e) = sub.link.conn.flush()
        {
            sub.link
                .failed(self.reactor, "subscription", format!("redis subscription lost: {e}"));
            self.lost(r, SUB);
        }
    }
}
