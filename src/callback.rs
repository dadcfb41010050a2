//! The values handler callbacks are given and give back: what became of a send
//! ([`SendStatus`]), an ask in flight and its answer ([`Ticket`], [`Reply`]), the names of an
//! embedder's own sources and timers ([`SourceId`], [`TimerId`]), how a connection ended
//! ([`Closed`]) and an application's refusal of an upgrade ([`Refusal`]).
//!
//! Owns: these plain types. Does not touch: anything else; it sits below the reactor, the
//! handler contracts and the cluster engine, which all speak in them.

/// What became of a message a handler sent, as uWebSockets' `SendStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendStatus {
    /// Queued, and the connection's backlog is at most a quarter of `max_outbound_bytes`: it
    /// goes out with this turn's write (unless the client is not reading).
    Sent,
    /// Queued, but the backlog ([`crate::Ctx::buffered_amount`]) is now over a quarter of
    /// `max_outbound_bytes`: stop producing for this connection until
    /// [`crate::ReactorHandler::on_writable`], or it will be closed as a slow consumer.
    Backpressure,
    /// Not sent: the connection is closing or closed (or this message took it over
    /// `max_outbound_bytes`, and it is being closed as a slow consumer).
    Dropped,
}

/// Names an asynchronous ask a handler made; its answer arrives as
/// [`crate::ReactorHandler::on_reply`] with the same ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket(pub(crate) u64);

/// The answer to an ask made from a reactor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A message was queued to this many connections, over this node's reactors.
    Delivered { recipients: usize },
    /// In a cluster: the message could not be handed to Redis, so it reached no one.
    ClusterUnavailable,
    /// In a cluster: the message was handed to Redis but no word came back, so it may have
    /// reached some, all or none of the other nodes (and none here).
    ClusterOutcomeUnknown,
    /// A room change was made for a connected user (with this many open connections), or
    /// `None`: the user is not connected.
    Member(Option<usize>),
    /// Users and connections, summed over reactors (in a cluster, over nodes).
    Census(crate::ask::Census),
}

/// An embedder's own event source (socket, pipe, eventfd) registered on a reactor with
/// [`crate::ReactorCtx::register`]; its events arrive as [`crate::ReactorHandler::on_source`].
pub type SourceId = u32;

/// An embedder's timer on a reactor ([`crate::ReactorCtx::set_timer`]); it fires as
/// [`crate::ReactorHandler::on_timer`].
pub type TimerId = u32;

/// How a connection ended, for [`crate::Handler::on_close`].
#[derive(Debug, Clone)]
pub struct Closed<'a> {
    pub connection_id: uuid::Uuid,
    pub user_id: Option<&'a str>,
    /// The close code sent or received (1006 when the socket just went away).
    pub code: u16,
    /// Data messages received on this connection.
    pub messages: u32,
}

/// An application's refusal of an upgrade: the HTTP status (4xx/5xx; anything else becomes 403)
/// and a message for the response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

impl Refusal {
    pub fn forbidden(message: impl Into<String>) -> Self {
        Refusal {
            status: 403,
            message: message.into(),
        }
    }
}
