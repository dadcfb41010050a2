//! What the core keeps for the embedder's handler: typed per-connection data, anonymous
//! connections' rooms, who waits to be told a backlog drained, answers to the handler's asks,
//! and the user ids of connections closing, for `on_close`.
//!
//! Owns: these side tables (each holds entries only for the connections that need one). Does
//! not touch: the handler itself (the loop calls it with what is listed here).

use std::any::Any;
use std::collections::{HashMap, HashSet};

use mio::Token;

use crate::callback::{Reply, Ticket};
use crate::conn::BySlot;

#[derive(Default)]
pub(crate) struct EmbedderTables {
    /// Handlers' typed per-connection data, only for connections that have some (flag
    /// `HAS_DATA`), so connections that need none pay nothing.
    pub(crate) conn_data: HashMap<usize, Box<dyn Any + Send>>,
    /// User ids of open connections already unlinked from their user (closing), for `on_close`.
    pub(crate) departed_users: HashMap<usize, Box<str>>,
    /// Rooms of the anonymous connections that are in some (by slot: room and position in
    /// its member list); a connection with a user is in its user's rooms instead.
    pub(crate) anon_rooms: BySlot<Vec<(u32, u32)>>,
    /// Connections told `Backpressure`, waiting for their backlog to drain.
    pub(crate) writable_watch: HashSet<usize>,
    /// Of those, the ones that drained this turn, for `on_writable`.
    pub(crate) writable_again: Vec<Token>,
    /// Handler asks answered, for the loop to hand to `on_reply`.
    pub(crate) handler_replies: Vec<(Ticket, Reply)>,
}
