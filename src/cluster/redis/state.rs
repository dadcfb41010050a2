//! The Redis engine's records: a reactor's half (its links, replies awaited, admissions held),
//! what the halves share (addresses, scripts' hashes), the subscription's interest per
//! channel, the sentinels watched, history ops waiting, and the ids of the engine's sources
//! and timers.
//!
//! Owns: these records and their own bookkeeping. Does not touch: the engine's behaviour (the
//! sibling modules' `impl Half` blocks and the engine in `redis`), which sits above them.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, Instant};

use redis_protocol::resp2::types::BytesFrame;

use super::link::Link;
use crate::callback::{SourceId, TimerId};
use crate::cluster::broker::EngineOp;
use crate::cluster::channels::Channels;
use crate::cluster::resp::Tls;
use crate::config::RedisUrl;
use crate::metrics::ClusterMetrics;

pub(super) const CMD: SourceId = 1;

pub(super) const SUB: SourceId = 2;

/// Reactor 0's connection to a sentinel.
pub(super) const WATCH: SourceId = 3;

pub(super) const RECONNECT_CMD: TimerId = 1;

pub(super) const RECONNECT_SUB: TimerId = 2;

/// Every reactor's check of its deadlines; reactor 0 also keeps liveness and the probe.
pub(super) const TICK: TimerId = 3;

/// Admissions held while this reactor's own connection is being made again give up then.
pub(super) const ADMIT_WAIT: TimerId = 4;

pub(super) const ADMIT_WAIT_FOR: Duration = Duration::from_secs(1);

pub(super) const RECONNECT_WATCH: TimerId = 5;

pub(super) const TICK_EVERY: Duration = Duration::from_millis(250);

pub(super) const PROBE_EVERY: Duration = Duration::from_millis(500);

/// Releases kept while Redis is away, at most (beyond this, the oldest are dropped and
/// logged: their entries expire with the user's key).
pub(super) const MAX_UNSENT_RELEASES: usize = 1_000_000;

#[derive(Clone, Copy)]
pub(super) enum Script {
    Admit = 0,
    Publish = 1,
    Range = 2,
    Clear = 3,
    Register = 4,
    Dedupe = 5,
}

pub(super) const ALL_SCRIPTS: [Script; 6] = [
    Script::Admit,
    Script::Publish,
    Script::Range,
    Script::Clear,
    Script::Register,
    Script::Dedupe,
];

pub(super) struct Shared {
    pub(super) url: RedisUrl,
    /// The Redis of a plain URL; with sentinels, the master they named last (`None` until
    /// one answered).
    pub(super) master: std::sync::Mutex<Option<SocketAddr>>,
    /// Bumped when the sentinels name another master: links on the old one are dropped.
    pub(super) master_moves: AtomicU64,
    /// The sentinels' addresses (empty without sentinels).
    pub(super) sentinels: Vec<SocketAddr>,
    /// `rediss://`: the TLS client configuration and the name the certificate must carry.
    pub(super) tls: Option<Tls>,
    pub(super) node: String,
    pub(super) channels: Channels,
    pub(super) node_ttl: Duration,
    pub(super) timeout: Duration,
    /// This process's incarnation: the value of its liveness key, and part of every entry it
    /// makes in a user's connection set.
    pub(super) instance: String,
    pub(super) metrics: Arc<ClusterMetrics>,
    /// Reactor 0's subscription connection is subscribed to the control channels.
    pub(super) sub_up: AtomicBool,
    /// Per reactor: its command connection is connected (the node is up, and `/ready` 200,
    /// only while every reactor can publish: any of them may take a request).
    pub(super) cmd_up: Vec<AtomicBool>,
    /// Bumped whenever one of the node's connections gets an answer from Redis (not merely a
    /// TCP connection: a frozen Redis or a refused password accepts those): reactors waiting
    /// out a backoff try at once (so a node comes back whole, not one reactor at a time).
    pub(super) reached: AtomicU64,
    /// Bumped when Redis forgot this node (its liveness key was gone): every reactor counts
    /// its connections again.
    pub(super) reregister: AtomicU64,
    /// Messages kept per history channel, and for how long after its last one (0: no history).
    pub(super) history_size: usize,
    pub(super) history_ttl_ms: u64,
    /// How long an idempotency key is remembered (ms, as text for the scripts).
    pub(super) dedupe_window_ms: String,
}

/// What a reply on the command connection answers, in order.
pub(super) enum Expect {
    Ignore,
    /// AUTH or SELECT: an error means the node cannot work on this connection.
    Setup,
    /// ROLE (with sentinels): anything but a master means the sentinels moved on.
    Role,
    /// The liveness SET ... GET: the value it replaced.
    Heartbeat,
    Publish(u64),
    /// An XADD of a forwarded item.
    Append(u64),
    Admit(u64),
    /// A connection counted again: the reply lists this node's connections to close.
    Register,
    /// A release (sent again if its reply does not come).
    Release {
        user: Box<str>,
        connection: uuid::Uuid,
    },
    /// The probe's PUBLISH (its nonce).
    Probe(u64),
    ScriptLoad(Script),
    History(Pending),
}

/// A command waiting for its reply: what it answers, where it ends in the connection's byte
/// stream (was it written whole?) and when it was sent (is Redis late?).
pub(super) struct Awaited {
    pub(super) what: Expect,
    pub(super) end: u64,
    pub(super) at: Instant,
}

pub(super) struct Half {
    pub(super) reactor: usize,
    pub(super) shared: Arc<Shared>,
    pub(super) cmd: Link,
    pub(super) expect: VecDeque<Awaited>,
    pub(super) script_sha: [Option<bytes::Bytes>; ALL_SCRIPTS.len()],
    pub(super) sub: Option<Sub>,
    /// Reactor 0's sentinel connection (with `redis+sentinel://`).
    pub(super) watch: Option<Watch>,
    pub(super) seen_moves: u64,
    /// The probe in flight: its nonce and when it was sent.
    pub(super) probe: Option<(u64, Instant)>,
    pub(super) probe_nonce: u64,
    pub(super) last_probe: Option<Instant>,
    pub(super) last_heartbeat: Option<Instant>,
    /// Heartbeats answered since the process started (the first one finds no key of ours).
    pub(super) heartbeats: u64,
    pub(super) seen_reached: u64,
    /// Redis answered on the current command connection (its scripts are loaded): until then
    /// this reactor cannot publish, and the node is not up. Reset whenever the connection is
    /// closed or made again.
    pub(super) cmd_ready: bool,
    pub(super) seen_reregister: u64,
    /// Releases not yet taken by Redis (it was away): sent when it is back.
    pub(super) unsent_releases: VecDeque<(Box<str>, uuid::Uuid)>,
    /// This reactor admitted connections on its own count (or a recount of them failed):
    /// they are counted in Redis once its command connection is ready again.
    pub(super) counted_alone: bool,
    /// The liveness heartbeat was refused once (logged loudly once).
    pub(super) heartbeat_refused: bool,
    /// When this reactor last checked an idle command connection with PING.
    pub(super) last_cmd_ping: Option<Instant>,
    pub(super) frames: Vec<BytesFrame>,
    /// Admissions waiting for this reactor's command connection while the node still reaches
    /// Redis (reconnects are per reactor, each with its own backoff).
    pub(super) held_admissions: Vec<HeldAdmission>,
    /// History ops that wait until the node is subscribed to their channel (reactor 0).
    pub(super) parked: Vec<(Box<[u8]>, EngineOp)>,
}

pub(super) struct HeldAdmission {
    pub(super) id: u64,
    pub(super) user: Box<str>,
    pub(super) connection: uuid::Uuid,
    pub(super) limit: usize,
    pub(super) evict: bool,
}

/// Channels per SUBSCRIBE / UNSUBSCRIBE command.
pub(super) const SUBSCRIBE_BATCH: usize = 1000;

/// Reactor 0's subscriptions.
pub(super) struct Sub {
    pub(super) link: Link,
    /// Per channel: reactors with interest, and whether it is subscribed on the current
    /// connection (one entry per channel: with a channel per user, this is the node's largest
    /// cluster structure).
    pub(super) channels: HashMap<Box<[u8]>, Interest>,
    /// Channels whose interest changed since the last flush.
    pub(super) changed: Vec<Box<[u8]>>,
    /// The subscription was up and then lost: when it is back, the node's connections may
    /// have missed messages.
    pub(super) lost_since_up: bool,
    /// Commands sent on it whose replies have not all come: when each was sent and how many
    /// replies it still owes (a SUBSCRIBE of n channels is answered n times). One overdue
    /// means the subscription is stalled, even while the command connection is away.
    pub(super) awaiting: VecDeque<(Instant, usize)>,
    /// When the last PING went out (it checks the connection while nothing else is sent).
    pub(super) last_ping: Option<Instant>,
}

#[derive(Default)]
pub(super) struct Interest {
    pub(super) reactors: u32,
    pub(super) subscribed: bool,
    /// SUBSCRIBE / UNSUBSCRIBE commands for the channel not yet confirmed: while any is, the
    /// node cannot tell whether Redis has it subscribed.
    pub(super) unconfirmed: u16,
}

impl Interest {
    /// Redis confirmed the subscription: every later publish on the channel reaches the node.
    pub(super) fn confirmed(&self) -> bool {
        self.subscribed && self.unconfirmed == 0
    }
}

impl Sub {
    pub(super) fn new(link: Link) -> Self {
        Sub {
            link,
            channels: HashMap::new(),
            changed: Vec::new(),
            lost_since_up: false,
            awaiting: VecDeque::new(),
            last_ping: None,
        }
    }

    pub(super) fn sent(&mut self, replies: usize) {
        if replies > 0 {
            self.awaiting.push_back((Instant::now(), replies));
        }
    }

    /// One reply of the oldest command came.
    pub(super) fn answered(&mut self) {
        if let Some(front) = self.awaiting.front_mut() {
            front.1 -= 1;
            if front.1 == 0 {
                self.awaiting.pop_front();
            }
        }
    }

    /// When the oldest unanswered command was sent.
    pub(super) fn oldest_unanswered(&self) -> Option<Instant> {
        self.awaiting.front().map(|(at, _)| *at)
    }

    /// Checks the connection with a PING (answered `pong` in subscribed mode).
    pub(super) fn ping(&mut self) {
        self.link.conn.command(&[b"PING"]);
        self.sent(1);
        self.last_ping = Some(Instant::now());
    }

    /// A new connection: the setup commands (`setup`), the control channels, then every
    /// channel of interest again (on the next flush).
    pub(super) fn start(&mut self, setup: &[Vec<&[u8]>], control: [&[u8]; 3]) {
        for c in setup {
            self.link.conn.command(c);
        }
        self.awaiting.clear();
        self.last_ping = None;
        let mut cmd: Vec<&[u8]> = vec![b"SUBSCRIBE"];
        cmd.extend(control);
        self.link.conn.command(&cmd);
        self.sent(control.len());
        self.channels.retain(|_, i| i.reactors > 0);
        for i in self.channels.values_mut() {
            i.subscribed = false;
            i.unconfirmed = 0;
        }
        self.changed = self.channels.keys().cloned().collect();
    }

    pub(super) fn apply_interest(&mut self, channel: Box<[u8]>, on: bool) {
        let i = self.channels.entry(channel.clone()).or_default();
        if on {
            i.reactors += 1;
        } else {
            i.reactors = i.reactors.saturating_sub(1);
        }
        // While the connection is being made again, every channel is subscribed anew anyway.
        if self.link.conn.is_open() {
            self.changed.push(channel);
        }
    }

    /// Sends the subscription changes of this turn as few commands.
    pub(super) fn reconcile(&mut self) {
        if self.changed.is_empty() || !self.link.conn.is_open() {
            return;
        }
        let mut add: Vec<Box<[u8]>> = Vec::new();
        let mut drop: Vec<Box<[u8]>> = Vec::new();
        for ch in std::mem::take(&mut self.changed) {
            let Some(i) = self.channels.get_mut(&ch) else { continue };
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
                self.channels.remove(&ch);
            }
        }
        for (verb, list) in [(&b"SUBSCRIBE"[..], add), (&b"UNSUBSCRIBE"[..], drop)] {
            for batch in list.chunks(SUBSCRIBE_BATCH) {
                let mut args: Vec<&[u8]> = Vec::with_capacity(batch.len() + 1);
                args.push(verb);
                args.extend(batch.iter().map(|c| &c[..]));
                self.link.conn.command(&args);
                self.sent(batch.len());
            }
        }
    }
}

/// Reactor 0's connection to the sentinels.
pub(super) struct Watch {
    pub(super) link: Link,
    /// The sentinel asked (index into `Shared::sentinels`).
    pub(super) next: usize,
    /// The question in flight, and when it was sent.
    pub(super) asked: Option<Instant>,
    pub(super) last_asked: Option<Instant>,
}

impl Watch {
    pub(super) fn new() -> Self {
        Watch {
            link: Link::new(WATCH),
            next: 0,
            asked: None,
            last_asked: None,
        }
    }
}

/// A history op waiting for its reply.
pub(super) enum Pending {
    /// A publish on pub/sub channel `channel`.
    Publish {
        id: u64,
        channel: Box<[u8]>,
    },
    Range {
        id: u64,
    },
    /// A clear that started `epoch`.
    Clear {
        id: u64,
        epoch: String,
    },
}

impl Pending {
    pub(super) fn is_publish(&self) -> bool {
        matches!(self, Pending::Publish { .. })
    }

    pub(super) fn id(&self) -> u64 {
        match self {
            Pending::Publish { id, .. } | Pending::Range { id } | Pending::Clear { id, .. } => *id,
        }
    }
}
