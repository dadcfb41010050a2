//! What can be asked of a reactor, what it answers, and where the answer goes.
//!
//! Owns: the request and answer vocabulary shared by every caller of a reactor (a thread using
//! `ServerHandle`, the admin API running on another reactor) and the types they return
//! (`Target`, `ConnectionInfo`, `Census`). Does not touch: how a reactor carries a request out
//! (that is `reactor::core`) or how asks travel (the reactor's inbox).

use std::sync::mpsc;
use std::time::Instant;

use tungstenite::Bytes;

/// Who a delivered frame goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    All,
    /// Connections subscribed to the event type with this bit.
    Subscribers(u32),
    User(Box<str>),
    Connection(uuid::Uuid),
    /// Members of a room.
    Room(Box<str>),
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
}

/// A reactor's answer to one [`Ask`]. `Lost` stands for an answer that never came (the reactor
/// stopped or died first).
#[derive(Debug)]
pub(crate) enum Answer {
    Count(usize),
    Member(Option<usize>),
    Info(Option<ConnectionInfo>),
    Page(Vec<ConnectionInfo>),
    Census(Census),
    Users(Vec<String>),
    Lost,
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
            Ask::Deliver { .. } | Ask::Disconnect { .. } => Answer::Count(0),
            _ => Answer::Lost,
        }
    }
}

/// Where an answer goes: a thread waiting on a channel (the answer comes with the number of
/// the reactor that gave it), or a request in flight on a reactor (the answer is posted to
/// that reactor's inbox with the ticket it gave).
#[derive(Debug)]
pub(crate) enum ReplyTo {
    Thread(mpsc::Sender<(usize, Answer)>),
    Reactor { reactor: usize, ticket: u64 },
}

/// What the server knows about one open connection (as `GET /ws/connections/{id}` reports it).
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct ConnectionInfo {
    pub connection_id: String,
    pub user_id: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub is_admin: bool,
    /// RFC 3339 UTC, like every other time the server reports.
    pub connected_at: String,
    pub message_count: u64,
    pub subscriptions: Vec<String>,
    pub rooms: Vec<String>,
    pub queued_bytes: usize,
    pub peer_address: Option<String>,
    pub reactor: usize,
}

/// Users and their connection counts, summed over reactors.
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq, Eq)]
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
