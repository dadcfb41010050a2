//! The broker seam: what a cluster engine is to the reactors, defined below them. An
//! [`Engine`] makes one [`ReactorEngine`] per reactor; the reactor drives it with
//! [`EngineOp`]s and its own loop's events, and the engine reports back through the
//! [`EngineHost`] the reactor implements (publishes answered, messages received, admissions,
//! history answers, subscription state).
//!
//! Owns: this contract and the values it carries. Does not touch: connections, sockets of its
//! own, or any engine's way of doing it (Redis: `cluster::redis`).

use std::io;
use std::time::Duration;

use mio::Interest;
use mio::event::Source;

use crate::callback::{SourceId, TimerId};
use crate::config::Config;
use crate::history::Position;
use bytes::Bytes;

/// The history channel of messages to everyone on a cluster node with history on. Its frames
/// are kept and published as they are (no channel, offset or epoch added: clients never
/// recover it); nodes use its offsets to find and fill what a broken subscription missed.
pub const ALL: &str = "all";

/// A cluster engine: makes one [`ReactorEngine`] per reactor, on that reactor's thread.
pub trait Engine: Send + Sync + 'static {
    fn reactor_half(&self, reactor: usize) -> Box<dyn ReactorEngine>;
    /// True if the engine carries out the history ops (`PublishHistory`, `HistoryRange`,
    /// `HistoryClear`); if not, a node on it keeps no history.
    fn keeps_history(&self) -> bool {
        false
    }
}

/// One reactor's half of an engine. Every method runs on the reactor's thread and must not
/// block: an engine waits as state (sources registered with [`EngineHost::register`], timers
/// with [`EngineHost::set_timer`]; the ids live in a namespace of their own, apart from the
/// handler's). It reports back through its [`EngineHost`]: `published`, `received`,
/// `admitted`.
pub trait ReactorEngine {
    fn on_start(&mut self, r: &mut dyn EngineHost);
    fn on_source(&mut self, r: &mut dyn EngineHost, source: SourceId, event: &mio::event::Event);
    fn on_timer(&mut self, r: &mut dyn EngineHost, timer: TimerId);
    /// Carries out one request of the reactor (in the order they were made).
    fn apply(&mut self, r: &mut dyn EngineHost, op: EngineOp);
    /// End of a loop turn: write what the turn queued (one write for many publishes).
    fn flush(&mut self, r: &mut dyn EngineHost);
}

/// What a reactor asks of its engine half.
#[derive(Debug)]
pub enum EngineOp {
    /// Hand `payload` to every node subscribed to `channel`; answer with
    /// `r.published(id, result)` (the number of nodes that received it, or why not).
    Publish {
        id: u64,
        channel: Box<[u8]>,
        payload: Vec<u8>,
        /// The publisher's idempotency key: if Redis saw it within the window, nothing is
        /// published and the answer is `Err(EngineError::Duplicate)`.
        dedupe: Option<Box<str>>,
    },
    /// Hand `payload` over with no answer wanted (answers to other nodes' requests).
    Send { channel: Box<[u8]>, payload: Vec<u8> },
    /// This node's interest in `channel` rose (`on`) or fell. Only reactor 0 gets these: it
    /// holds the node's subscriptions and counts interest over every reactor.
    Interest { channel: Box<[u8]>, on: bool },
    /// Count connection `connection` of `user` toward the cluster-wide limit (`limit`; over it,
    /// `evict` the oldest or refuse); answer with `r.admitted(id, verdict)`.
    Admit {
        id: u64,
        user: Box<str>,
        connection: uuid::Uuid,
        limit: usize,
        evict: bool,
    },
    /// Connection `connection` of `user` is gone.
    Release { user: Box<str>, connection: uuid::Uuid },
    /// Give a message to channel `name` (`event:..`, `room:..`, `user:..`, or [`ALL`], whose
    /// frames are kept as they are), which keeps history: its next offset, kept, handed to every node subscribed to it, in one step;
    /// answer with `r.history(id, HistoryAnswer::Appended ..)`. `object`: the message's JSON
    /// object without its closing brace (the channel, offset and epoch are added to it).
    PublishHistory {
        id: u64,
        name: Box<str>,
        exclude_user: Option<Box<str>>,
        object: Vec<u8>,
        /// As for `Publish` (a duplicate answers `Appended` with `duplicate`).
        dedupe: Option<Box<str>>,
    },
    /// Channel `name`'s position and (with `after`) at most `max` messages after that offset;
    /// answer with `r.history(id, HistoryAnswer::Range ..)`. With `mark`, first wait until this
    /// node is subscribed to the channel, then publish a marker (`id`) on it in the same step,
    /// so the node can tell which live messages the answer covers.
    HistoryRange {
        id: u64,
        name: Box<str>,
        after: Option<u64>,
        max: usize,
        mark: bool,
    },
    /// Forget channel `name`'s history (its next message starts a new epoch); answer with
    /// `r.history(id, HistoryAnswer::Cleared ..)`.
    HistoryClear { id: u64, name: Box<str> },
    /// Append `item` (a forwarded message, rpc or lifecycle event, as JSON) to stream
    /// `stream`, trimmed to about `maxlen` entries; answer with `r.appended(id, result)`.
    Append {
        id: u64,
        stream: Box<[u8]>,
        maxlen: usize,
        item: Vec<u8>,
    },
    /// Count an open connection again (after the engine lost what it knew, e.g. Redis
    /// restarted empty, or took this node for dead); `since`: its rank, Unix milliseconds
    /// (when it opened; for one admitted while the cluster could not be asked, now). If the user is now over `limit` across the cluster, the policy picks the
    /// connections to close (`evict`: the oldest; else the newest), wherever they are.
    Register {
        user: Box<str>,
        connection: uuid::Uuid,
        since: u64,
        limit: usize,
        evict: bool,
    },
}

/// Why a publish has no answer from the cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// Not handed to the cluster: it was delivered nowhere.
    #[error("cluster unavailable")]
    Unavailable,
    /// Handed over, but no word came back (the connection broke or the store stalled): it
    /// may have reached some, all or none of the other nodes, and none of this node's
    /// connections.
    #[error("cluster outcome unknown")]
    Unknown,
    /// A publish with an idempotency key Redis saw within the window: not delivered again.
    #[error("already published with this idempotency key")]
    Duplicate,
}

/// The engine's answer to a history op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryAnswer {
    Appended(Appended),
    Range(Range),
    Cleared { existed: bool, position: Position },
}

/// The cluster's decision on a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Counted (any eviction it took is on its way to the node holding that connection).
    Admitted,
    /// The user already holds `limit` connections and the policy is reject.
    Refused,
    /// The cluster could not be asked: the node decides alone.
    Local,
}

/// What an engine half may do with its reactor: its own sources and timers (ids in a
/// namespace apart from the handler's), and the reports that turn what the cluster said into
/// deliveries and answers. Implemented by the reactor; every call runs on its thread.
pub trait EngineHost {
    /// This reactor's index.
    fn reactor(&self) -> usize;
    fn config(&self) -> &Config;
    /// Registers a source of the engine (a socket to Redis): its events arrive as
    /// [`ReactorEngine::on_source`]. Edge-triggered: read or write until `WouldBlock`.
    fn register(&mut self, source: &mut dyn Source, id: SourceId, interest: Interest) -> io::Result<()>;
    fn reregister(&mut self, source: &mut dyn Source, id: SourceId, interest: Interest) -> io::Result<()>;
    fn deregister(&mut self, source: &mut dyn Source) -> io::Result<()>;
    /// Fires [`ReactorEngine::on_timer`] once, `after` from now (rounded up to the reactor's
    /// 100 ms tick; never earlier).
    fn set_timer(&mut self, id: TimerId, after: Duration);
    /// The publish `id` (an [`EngineOp::Publish`]) reached `Ok(nodes)`, or was not handed to
    /// the cluster.
    fn published(&mut self, id: u64, result: Result<usize, EngineError>);
    /// A message another node published on `channel` (as the node that published it made the
    /// payload).
    fn received(&mut self, channel: &[u8], payload: bytes::Bytes);
    /// Queues an [`EngineOp::Register`] for every open connection of an authenticated user
    /// on this reactor (when the engine's store lost them).
    fn register_connections(&mut self);
    /// The cluster's decision on admission `id` (an [`EngineOp::Admit`]).
    fn admitted(&mut self, id: u64, verdict: Admission);
    /// The answer to history op `id` (an [`EngineOp::PublishHistory`], `HistoryRange` or
    /// `HistoryClear`).
    fn history(&mut self, id: u64, result: Result<HistoryAnswer, EngineError>);
    /// Reactor 0: the store confirmed that the node is (or is no longer) subscribed to
    /// `channel`.
    fn subscription(&mut self, channel: &[u8], subscribed: bool);
    /// Reactor 0: the subscription connection broke; what it was subscribed to will be
    /// confirmed again as it comes back.
    fn subscription_lost(&mut self);
    /// Reactor 0: the subscription is back after it was lost. Whatever it missed meanwhile
    /// cannot be filled without history: with history off, this node's connections are closed
    /// with 1012 so that they reconnect and reload.
    fn subscription_restored(&mut self);
    /// The append `id` (an [`EngineOp::Append`]) is in the stream, or not (`Unavailable`), or
    /// its outcome is unknown.
    fn appended(&mut self, id: u64, result: Result<(), EngineError>);
    /// The cluster-wide per-user limit closes this node's connection `connection` (1008
    /// `connection limit exceeded`).
    fn evict(&mut self, connection: uuid::Uuid);
}

/// A history publish the store took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// Nodes the message was handed to.
    pub nodes: usize,
    pub position: Position,
    /// This node is subscribed to the channel (its own copy comes back through the
    /// subscription, in order).
    pub echo: bool,
    /// The publish's idempotency key was seen within the window: nothing was kept or sent.
    pub duplicate: bool,
}

/// A channel's position and the messages asked for, oldest first: offset, frame, and the
/// user it skips.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub position: Position,
    pub entries: Vec<(u64, Bytes, Option<Box<str>>)>,
}
