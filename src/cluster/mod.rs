//! The engine: what joins this node's reactors to the other nodes of a cluster.
//!
//! Owns: the [`Engine`] contract (one half per reactor, driven by that reactor's loop through
//! the same sources and timers embedders use), the channel names every node agrees on, the
//! bytes a message travels as (`wire`), and the Redis engine (`redis`). Does not touch:
//! connections, or what a delivered message means (the reactor core turns what an engine
//! receives into deliveries and answers).
//!
//! Without an engine (no `--redis`) a node runs alone: the in-memory engine is the reactors'
//! own fan-out, with no extra step, exactly as fast and dense as a node that never heard of
//! clusters.

pub(crate) mod history;
pub(crate) mod redis;
mod resp;
pub(crate) mod wire;

use crate::embed::{SourceId, TimerId};
use crate::reactor::reactor_ctx::ReactorCtx;

pub use self::history::{Appended, Range};
pub use self::redis::RedisEngine;

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
/// block: an engine waits as state (sources registered with [`ReactorCtx::register`], timers
/// with [`ReactorCtx::set_timer`]; the ids live in a namespace of their own, apart from the
/// handler's). It reports back through the `ReactorCtx` engine calls: `published`, `received`,
/// `admitted`.
pub trait ReactorEngine {
    fn on_start(&mut self, r: &mut ReactorCtx<'_>);
    fn on_source(&mut self, r: &mut ReactorCtx<'_>, source: SourceId, event: &mio::event::Event);
    fn on_timer(&mut self, r: &mut ReactorCtx<'_>, timer: TimerId);
    /// Carries out one request of the reactor (in the order they were made).
    fn apply(&mut self, r: &mut ReactorCtx<'_>, op: EngineOp);
    /// End of a loop turn: write what the turn queued (one write for many publishes).
    fn flush(&mut self, r: &mut ReactorCtx<'_>);
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
    Cleared {
        existed: bool,
        position: crate::history::Position,
    },
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

/// Channel names, `{prefix}:{kind}:{name}`. Every node of a cluster derives them the same way.
#[derive(Debug, Clone)]
#[doc(hidden)]
pub struct Channels {
    prefix: String,
    node: String,
}

/// What an incoming channel names.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ChannelKind<'a> {
    All,
    Event(&'a str),
    User(&'a str),
    Room(&'a str),
    /// Every node: requests, messages to one connection.
    Nodes,
    /// This node only: answers to its requests, probes, evictions.
    ThisNode,
}

impl Channels {
    pub fn new(prefix: &str, node: &str) -> Self {
        Channels {
            prefix: prefix.to_string(),
            node: node.to_string(),
        }
    }

    fn make(&self, kind: &str, name: &str) -> Box<[u8]> {
        let mut v = Vec::with_capacity(self.prefix.len() + kind.len() + name.len() + 2);
        v.extend_from_slice(self.prefix.as_bytes());
        v.push(b':');
        v.extend_from_slice(kind.as_bytes());
        if !name.is_empty() {
            v.push(b':');
            v.extend_from_slice(name.as_bytes());
        }
        v.into_boxed_slice()
    }

    pub fn all(&self) -> Box<[u8]> {
        self.make("all", "")
    }
    pub fn nodes(&self) -> Box<[u8]> {
        self.make("nodes", "")
    }
    pub fn node(&self, node: &str) -> Box<[u8]> {
        self.make("node", node)
    }
    pub fn this_node(&self) -> Box<[u8]> {
        self.node(&self.node)
    }
    pub fn event(&self, name: &str) -> Box<[u8]> {
        self.make("event", name)
    }
    pub fn user(&self, id: &str) -> Box<[u8]> {
        self.make("user", id)
    }
    pub fn room(&self, name: &str) -> Box<[u8]> {
        self.make("room", name)
    }
    /// The start of every node's channel (the limit script appends a node id).
    pub fn node_prefix(&self) -> String {
        format!("{}:node:", self.prefix)
    }
    /// Key of a node's liveness (refreshed every third of `--node-ttl`).
    pub fn alive_prefix(&self) -> String {
        format!("{}:alive:", self.prefix)
    }
    /// The pub/sub channel of a history channel name (`event:x` → `{prefix}:event:x`).
    pub fn of_history(&self, name: &str) -> Box<[u8]> {
        self.make(name, "")
    }
    /// The stream and the hash (epoch, last offset) of a history channel.
    pub fn history_keys(&self, name: &str) -> (Vec<u8>, Vec<u8>) {
        (
            format!("{}:history:{name}", self.prefix).into_bytes(),
            format!("{}:history-meta:{name}", self.prefix).into_bytes(),
        )
    }
    /// The history channel name of a pub/sub channel (`None`: not an event, room or user, or
    /// everyone's).
    pub fn history_name<'a>(&self, channel: &'a [u8]) -> Option<&'a str> {
        let rest = channel.strip_prefix(self.prefix.as_bytes())?.strip_prefix(b":")?;
        let name = std::str::from_utf8(rest).ok()?;
        (name == ALL || ["event:", "room:", "user:"].iter().any(|k| name.starts_with(k))).then_some(name)
    }
    /// Key remembering a publish's idempotency key for the window.
    pub fn idempotency(&self, key: &str) -> Vec<u8> {
        format!("{}:idem:{key}", self.prefix).into_bytes()
    }
    /// Key of a user's connections across the cluster (a sorted set).
    pub fn user_connections(&self, id: &str) -> Vec<u8> {
        format!("{}:conns:{id}", self.prefix).into_bytes()
    }

    /// What an incoming channel names (`None`: not one of ours).
    pub(crate) fn parse<'a>(&self, channel: &'a [u8]) -> Option<ChannelKind<'a>> {
        let rest = channel.strip_prefix(self.prefix.as_bytes())?.strip_prefix(b":")?;
        let rest = std::str::from_utf8(rest).ok()?;
        let (kind, name) = rest.split_once(':').unwrap_or((rest, ""));
        Some(match (kind, name) {
            ("all", "") => ChannelKind::All,
            ("nodes", "") => ChannelKind::Nodes,
            ("node", n) if n == self.node => ChannelKind::ThisNode,
            ("event", n) => ChannelKind::Event(n),
            ("user", n) => ChannelKind::User(n),
            ("room", n) => ChannelKind::Room(n),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_round_trip_and_stay_inside_their_prefix() {
        let c = Channels::new("wsedge", "n1");
        assert_eq!(&*c.user("a:b"), b"wsedge:user:a:b");
        assert_eq!(c.parse(&c.user("a:b")), Some(ChannelKind::User("a:b")));
        assert_eq!(c.parse(&c.room("r")), Some(ChannelKind::Room("r")));
        assert_eq!(c.parse(&c.event("e.x")), Some(ChannelKind::Event("e.x")));
        assert_eq!(c.parse(&c.all()), Some(ChannelKind::All));
        assert_eq!(c.parse(&c.nodes()), Some(ChannelKind::Nodes));
        assert_eq!(c.parse(&c.this_node()), Some(ChannelKind::ThisNode));
        assert_eq!(c.parse(&c.node("n2")), None, "another node's channel");
        assert_eq!(c.parse(b"other:all"), None);
        assert_eq!(c.parse(b"wsedgeX:all"), None);
        assert_eq!(c.history_name(&c.of_history("room:r")), Some("room:r"));
        assert_eq!(&*c.of_history("user:a"), &*c.user("a"));
        assert_eq!(c.history_name(&c.all()), Some("all"));
        assert_eq!(c.history_name(&c.nodes()), None);
    }
}
