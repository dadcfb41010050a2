//! What can be asked of a reactor, what it answers, and where the answer goes.
//!
//! Owns: the request and answer vocabulary shared by every caller of a reactor (a thread using
//! `ServerHandle`, the admin API running on another reactor) and the types they return
//! (`Target`, `ConnectionInfo`, `Census`), and what a send's answers add up to (`Delivery`,
//! `HandleError`, `delivery_of`, `member_count`). Does not touch: how a reactor carries a request out
//! (that is `reactor::core`) or how asks travel (the reactor's inbox).

use std::sync::mpsc;
use std::time::Instant;

use thiserror::Error;
use tungstenite::Bytes;

/// Who a delivered frame goes to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Target {
    All,
    /// Connections subscribed to the event type with this bit.
    Subscribers(u32),
    User(Box<str>),
    Connection(uuid::Uuid),
    /// Members of a room.
    Room(Box<str>),
}

impl Target {
    /// The channel whose history a message to this target joins: `event:<type>`,
    /// `room:<name>`, `user:<id>` (none for everyone or one connection).
    pub fn channel(&self, events: &[String]) -> Option<String> {
        match self {
            Target::Subscribers(bit) => events.get(*bit as usize).map(|e| format!("event:{e}")),
            Target::Room(r) => Some(format!("room:{r}")),
            Target::User(u) => Some(format!("user:{u}")),
            Target::All | Target::Connection(_) => None,
        }
    }
}

/// A request a reactor carries out over the connections it holds.
#[derive(Debug, Clone)]
pub(crate) enum Ask {
    /// Queue a pre-encoded frame (skipping `exclude_user`'s connections); answers `Count`.
    Deliver {
        target: Target,
        frame: Bytes,
        exclude_user: Option<Box<str>>,
        /// When the message was published, for the publish-to-write latency histogram.
        published_at: Instant,
        /// In a cluster: the publisher's idempotency key (a publish with a key Redis saw within
        /// the window is not delivered again).
        dedupe: Option<Box<str>>,
    },
    /// Close matching connections; answers `Count`.
    Disconnect {
        target: Target,
        code: u16,
        reason: Box<str>,
    },
    /// Add (or remove) a connected user to (from) a room; answers `Member`.
    Membership { room: Box<str>, user: Box<str>, add: bool },
    /// Describe one connection; answers `Info`.
    Inspect { id: uuid::Uuid },
    /// Open connections from slot `start` on (or one user's), at most `limit`; answers `Page`.
    List {
        start: usize,
        limit: usize,
        user: Option<Box<str>>,
    },
    /// Users and connections per user; answers `Census`.
    Census,
    /// The users (with connections here) in a room; answers `Users`.
    RoomMembers { room: Box<str> },
    /// On the channel's home reactor: give the message the channel's next offset, keep it,
    /// and deliver it to `target` on each of `reactors` (each answers `Count`).
    Sequence {
        channel: Box<str>,
        target: Target,
        frame: Bytes,
        exclude_user: Option<Box<str>>,
        published_at: Instant,
        reactors: Vec<usize>,
        /// See `Deliver`.
        dedupe: Option<Box<str>>,
    },
    /// The backend's answer (`Ok`: a result, `Err`: an error) to rpc `message_id` of
    /// connection `connection`; answers `Count` (1: it was waiting there).
    RpcReply {
        connection: uuid::Uuid,
        message_id: uuid::Uuid,
        outcome: Result<Box<serde_json::value::RawValue>, Box<serde_json::value::RawValue>>,
    },
    /// On the channel's home reactor: kept messages after `since`; answers `History`.
    ReadHistory {
        channel: Box<str>,
        since: u64,
        limit: usize,
    },
    /// On the channel's home reactor: forget its history; answers `Cleared`.
    ClearHistory { channel: Box<str> },
    /// On the channel's home reactor: its position and, with `from` (offset, epoch), the
    /// messages after it; answers `Recovered`. Every later message of the channel reaches the
    /// asker after the answer.
    Recover {
        channel: Box<str>,
        from: Option<(u64, Box<str>)>,
        /// Replay only up to this offset (the client had the later ones live).
        until: Option<u64>,
        /// The user recovering: messages published with `exclude_user` naming them are left
        /// out of the replay, as they were left out live.
        reader: Option<Box<str>>,
    },
}

/// A reactor's answer to one [`Ask`]. `Lost` stands for an answer that never came (the reactor
/// stopped or died first). In a cluster, another node's answer (its reactors' answers merged)
/// comes from [`REMOTE`], and the cluster's word on a publish (`Nodes`, `Unavailable`) from
/// [`CLUSTER`].
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) enum Answer {
    Count(usize),
    Member(Option<usize>),
    Info(Option<ConnectionInfo>),
    Page(Vec<ConnectionInfo>),
    Census(Census),
    Users(Vec<String>),
    Lost,
    /// Another node's census, with what the stats say about the node.
    Node(NodeCensus),
    /// How many nodes Redis handed the message to.
    Nodes(usize),
    /// The message could not be handed to the cluster: it was delivered nowhere.
    Unavailable,
    /// The message was handed to the cluster but no word came back: it may have reached
    /// some, all or none of the other nodes (and none of this node's connections).
    Unknown,
    /// The publish's idempotency key was seen within the window: not delivered again.
    Duplicate,
    /// A channel's kept messages (their JSON) and its position.
    History {
        messages: Vec<serde_json::Value>,
        position: crate::history::Position,
    },
    /// A channel's history was deleted (`existed`: there was some); its new position.
    Cleared {
        existed: bool,
        position: crate::history::Position,
    },
    /// A recovery: the missing frames (`None`: not recoverable) and the channel's position.
    Recovered {
        #[serde(skip)]
        frames: Option<Vec<Bytes>>,
        position: crate::history::Position,
    },
}

/// The "reactor" of an answer from another node.
pub(crate) const REMOTE: usize = usize::MAX;
/// The "reactor" of the cluster's own word about a publish.
pub(crate) const CLUSTER: usize = usize::MAX - 1;

/// One node as `GET /ws/stats` lists it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub(crate) struct NodeCensus {
    pub node_id: String,
    /// Unix seconds.
    pub started_at: u64,
    pub census: Census,
}

/// What a node asks every other node (an [`Ask`] that can travel).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) enum RemoteAsk {
    Disconnect {
        target: Target,
        code: u16,
        reason: Box<str>,
    },
    Membership {
        room: Box<str>,
        user: Box<str>,
        add: bool,
    },
    Inspect {
        id: uuid::Uuid,
    },
    UserConnections {
        user: Box<str>,
    },
    Census,
    RoomMembers {
        room: Box<str>,
    },
    RpcReply {
        connection: uuid::Uuid,
        message_id: uuid::Uuid,
        outcome: Result<Box<serde_json::value::RawValue>, Box<serde_json::value::RawValue>>,
    },
}

impl RemoteAsk {
    /// The ask other nodes carry out for `ask`; `None`: it stays on this node (deliveries
    /// travel as messages, not requests; a full listing is paged per node).
    pub fn of(ask: &Ask) -> Option<RemoteAsk> {
        Some(match ask {
            Ask::Disconnect { target, code, reason } => RemoteAsk::Disconnect {
                target: target.clone(),
                code: *code,
                reason: reason.clone(),
            },
            Ask::Membership { room, user, add } => RemoteAsk::Membership {
                room: room.clone(),
                user: user.clone(),
                add: *add,
            },
            Ask::Inspect { id } => RemoteAsk::Inspect { id: *id },
            Ask::List { user: Some(u), .. } => RemoteAsk::UserConnections { user: u.clone() },
            Ask::Census => RemoteAsk::Census,
            Ask::RoomMembers { room } => RemoteAsk::RoomMembers { room: room.clone() },
            Ask::RpcReply {
                connection,
                message_id,
                outcome,
            } => RemoteAsk::RpcReply {
                connection: *connection,
                message_id: *message_id,
                outcome: outcome.clone(),
            },
            Ask::Deliver { .. }
            | Ask::List { user: None, .. }
            | Ask::Sequence { .. }
            | Ask::ReadHistory { .. }
            | Ask::ClearHistory { .. }
            | Ask::Recover { .. } => return None,
        })
    }

    pub fn into_ask(self) -> Ask {
        match self {
            RemoteAsk::Disconnect { target, code, reason } => Ask::Disconnect { target, code, reason },
            RemoteAsk::Membership { room, user, add } => Ask::Membership { room, user, add },
            RemoteAsk::Inspect { id } => Ask::Inspect { id },
            RemoteAsk::UserConnections { user } => Ask::List {
                start: 0,
                limit: 1000,
                user: Some(user),
            },
            RemoteAsk::Census => Ask::Census,
            RemoteAsk::RoomMembers { room } => Ask::RoomMembers { room },
            RemoteAsk::RpcReply {
                connection,
                message_id,
                outcome,
            } => Ask::RpcReply {
                connection,
                message_id,
                outcome,
            },
        }
    }
}

/// One answer made of a node's reactors' answers to the same ask (what another node hears).
pub(crate) fn merge_answers(answers: Vec<(usize, Answer)>, node: NodeCensus) -> Answer {
    let mut count = 0;
    let mut member: Option<usize> = None;
    let mut info = None;
    let mut page = Vec::new();
    let mut users = Vec::new();
    let mut census: Option<Census> = None;
    for (_, a) in answers {
        match a {
            Answer::Count(n) => count += n,
            Answer::Member(Some(n)) => member = Some(member.unwrap_or(0) + n),
            Answer::Info(Some(i)) => info = Some(i),
            Answer::Page(p) => page.extend(p),
            Answer::Users(u) => users.extend(u),
            Answer::Census(c) => census.get_or_insert_with(Census::default).merge(c),
            _ => {}
        }
    }
    if let Some(c) = census {
        return Answer::Node(NodeCensus { census: c, ..node });
    }
    if !page.is_empty() {
        return Answer::Page(page);
    }
    if !users.is_empty() {
        return Answer::Users(users);
    }
    if info.is_some() {
        return Answer::Info(info);
    }
    if member.is_some() {
        return Answer::Member(member);
    }
    Answer::Count(count)
}

impl Answer {
    pub fn count(&self) -> usize {
        match self {
            Answer::Count(n) => *n,
            _ => 0,
        }
    }

    /// What a reactor that will never answer is taken to have said.
    pub fn lost_for(ask: &Ask) -> Answer {
        match ask {
            Ask::Deliver { .. } | Ask::Disconnect { .. } | Ask::Sequence { .. } => Answer::Count(0),
            _ => Answer::Lost,
        }
    }
}

/// Where an answer goes: a thread waiting on a channel (the answer comes with the number of
/// the reactor that gave it), or a request in flight on a reactor (the answer is posted to
/// that reactor's inbox with the ticket it gave).
#[derive(Debug, Clone)]
pub(crate) enum ReplyTo {
    Thread(mpsc::Sender<(usize, Answer)>),
    Reactor { reactor: usize, ticket: u64 },
}

/// What the server knows about one open connection (as `GET /ws/connections/{id}` reports it).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The node holding it (`--node-id`).
    pub node_id: String,
    pub connection_id: String,
    pub user_id: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub is_admin: bool,
    /// RFC 3339 UTC, like every other time the server reports.
    pub connected_at: String,
    /// When the client last sent anything (RFC 3339).
    pub last_activity: String,
    /// When the server last checked the connection's liveness with a ping (before the first,
    /// when it opened).
    pub last_heartbeat: String,
    pub message_count: u64,
    pub subscriptions: Vec<String>,
    pub rooms: Vec<String>,
    pub queued_bytes: usize,
    pub peer_address: Option<String>,
    pub reactor: usize,
}

/// Users and their connection counts, summed over reactors.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Census {
    /// Open WebSockets.
    pub connections: usize,
    /// Users with at least one open connection.
    pub unique_users: usize,
    /// Most connections any one user has.
    pub max_connections_per_user: usize,
    /// `histogram[n]` = users with exactly `n` connections (index 0 unused).
    pub histogram: Vec<usize>,
    /// Rooms with members (a room with members on two reactors counts twice).
    pub rooms: usize,
    /// User entries held, including users without connections whose rate window is still
    /// cooling down.
    pub user_entries: usize,
}

impl Census {
    pub fn merge(&mut self, other: Census) {
        self.connections += other.connections;
        self.unique_users += other.unique_users;
        self.rooms += other.rooms;
        self.user_entries += other.user_entries;
        self.max_connections_per_user = self.max_connections_per_user.max(other.max_connections_per_user);
        if self.histogram.len() < other.histogram.len() {
            self.histogram.resize(other.histogram.len(), 0);
        }
        for (i, n) in other.histogram.into_iter().enumerate() {
            self.histogram[i] += n;
        }
    }
}

/// Merges pages of connections from several reactors into one page of at most `limit`, in
/// reactor-then-slot order; returns it with the id to continue after (`None` at the end).
pub(crate) fn merge_pages(
    mut pages: Vec<(usize, Vec<ConnectionInfo>)>,
    limit: usize,
) -> (Vec<ConnectionInfo>, Option<uuid::Uuid>) {
    pages.sort_by_key(|(reactor, _)| *reactor);
    let mut page: Vec<ConnectionInfo> = pages.into_iter().flat_map(|(_, p)| p).collect();
    page.truncate(limit);
    let next = (page.len() == limit)
        .then(|| page.last().and_then(|c| c.connection_id.parse().ok()))
        .flatten();
    (page, next)
}

/// Errors of [`crate::ServerHandle`] calls.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HandleError {
    #[error("unknown event type {0:?}")]
    UnknownEvent(String),
    /// The message could not be handed to the cluster, so it was delivered nowhere.
    #[error("cluster unavailable")]
    ClusterUnavailable,
    /// The message was handed to the cluster and no word came back (Redis stalled or the
    /// connection broke): it may have reached some, all or none of the other nodes. Retry
    /// with the same message id to have it delivered at most once.
    #[error("cluster outcome unknown")]
    ClusterOutcomeUnknown,
    /// Called inside a handler callback, on a reactor thread, where no call may wait for the
    /// reactors (a reactor waiting for itself): nothing was done. Use `ctx.asks()` (or
    /// `ReactorCtx::asks`), whose answers come back as `on_reply`.
    #[error("a ServerHandle call that waits cannot run on a reactor thread; use ctx.asks()")]
    OnReactorThread,
}

/// The outcome of a send: how many connections it reached and the message's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Connections reached on this node.
    pub recipients: usize,
    pub message_id: uuid::Uuid,
    /// Nodes that received the message: in a cluster, Redis' count of the nodes subscribed to
    /// its channel when it was published (this node among them if it had a matching
    /// connection, or for messages to everyone); alone, 1.
    pub nodes_reached: usize,
    /// In a cluster: a message with this idempotency key was published within the window, so
    /// this one was not delivered (`recipients` and `nodes_reached` are 0).
    pub duplicate: bool,
}

/// A send's outcome from its answers: recipients on this node, nodes reached, or
/// `ClusterUnavailable` if the cluster refused any part of it (that part reached no one).
pub(crate) fn delivery_of(answers: &[Vec<(usize, Answer)>], message_id: uuid::Uuid) -> Result<Delivery, HandleError> {
    let all = || answers.iter().flatten().map(|(_, a)| a);
    if all().any(|a| matches!(a, Answer::Unknown)) {
        return Err(HandleError::ClusterOutcomeUnknown);
    }
    if all().any(|a| matches!(a, Answer::Unavailable)) {
        return Err(HandleError::ClusterUnavailable);
    }
    if all().any(|a| matches!(a, Answer::Duplicate)) {
        return Ok(Delivery {
            recipients: 0,
            message_id,
            nodes_reached: 0,
            duplicate: true,
        });
    }
    let nodes = all().filter_map(|a| match a {
        Answer::Nodes(n) => Some(*n),
        _ => None,
    });
    Ok(Delivery {
        recipients: all().map(Answer::count).sum(),
        message_id,
        nodes_reached: nodes.max().unwrap_or(1),
        duplicate: false,
    })
}

/// A membership change's outcome: the user's connections over every answer (`None`: not
/// connected anywhere).
pub(crate) fn member_count(answers: &[(usize, Answer)]) -> Option<usize> {
    answers
        .iter()
        .filter_map(|(_, a)| match a {
            Answer::Member(n) => *n,
            _ => None,
        })
        .reduce(|a, b| a + b)
}
