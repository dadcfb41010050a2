//! `ReactorCtx`: what a handler may do with its reactor outside any one connection (its own
//! sources and timers), and `Asks`: calls on every reactor that answer later, never waiting.
//!
//! Owns: the embedder-facing reactor API. Does not touch: connections directly (that is `Ctx`)
//! or how asks travel (`core::asks`).

use std::io;
use std::time::Duration;

use mio::{Interest, Token};
use serde::Serialize;

use super::core::Core;
use super::core::ReplyKind;
use super::{ENGINE_SOURCE_BIT, SOURCE_BIT};
use crate::ask::{Ask, Target};
use crate::cluster::{Admission, EngineError, HistoryAnswer};
use crate::config::Config;
use crate::embed::{SourceId, Ticket, TimerId};
use crate::outgoing::Outgoing;
use crate::server::{HandleError, ServerHandle};

/// A handler's view of its reactor, in [`crate::ReactorHandler::on_start`], `on_source`,
/// `on_timer` and `on_reply`.
pub struct ReactorCtx<'r> {
    pub(crate) core: &'r mut Core,
    pub(crate) registry: &'r mio::Registry,
    /// The cluster engine's context: its source and timer ids live apart from the handler's.
    pub(crate) engine: bool,
}

impl ReactorCtx<'_> {
    /// This reactor's index.
    pub fn reactor(&self) -> usize {
        self.core.id
    }

    pub fn config(&self) -> &Config {
        &self.core.rt.config
    }

    /// A handle for work beyond this callback (other threads). Its calls do not wait when made
    /// on a reactor thread; use [`asks`](Self::asks) for answers.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle::from_runtime(self.core.rt.clone())
    }

    /// Registers an event source of yours (a socket to another service, a pipe, an eventfd) on
    /// this reactor: its events arrive on this thread as `on_source(.., id, event)`. Register
    /// edge-triggered style: read or write until `WouldBlock` on each event.
    pub fn register<S: mio::event::Source + ?Sized>(
        &mut self,
        source: &mut S,
        id: SourceId,
        interest: Interest,
    ) -> io::Result<()> {
        self.registry.register(source, source_token(id, self.engine), interest)
    }

    pub fn reregister<S: mio::event::Source + ?Sized>(
        &mut self,
        source: &mut S,
        id: SourceId,
        interest: Interest,
    ) -> io::Result<()> {
        self.registry
            .reregister(source, source_token(id, self.engine), interest)
    }

    pub fn deregister<S: mio::event::Source + ?Sized>(&mut self, source: &mut S) -> io::Result<()> {
        self.registry.deregister(source)
    }

    /// Fires `on_timer(.., id)` once, `after` from now (rounded up to the reactor's 100 ms
    /// tick; at least one tick; never earlier). Setting the same id again adds another firing.
    /// Beyond the timer wheel's span (about 102 s) it fires at the span's end, early: keep
    /// your own deadline and set the timer again when it fires before it.
    pub fn set_timer(&mut self, id: TimerId, after: Duration) {
        self.core.set_app_timer(id, after, self.engine);
    }

    /// For engines: the publish `id` (an [`EngineOp::Publish`](crate::cluster::EngineOp::Publish)) reached `Ok(nodes)`, or was
    /// not handed to the cluster.
    pub fn published(&mut self, id: u64, result: Result<usize, EngineError>) {
        self.core.cluster_published(id, result);
    }

    /// For engines: a message another node published on `channel` (as the node that
    /// published it made the payload).
    pub fn received(&mut self, channel: &[u8], payload: bytes::Bytes) {
        self.core.cluster_received(channel, payload);
    }

    /// For engines: queues an [`EngineOp::Register`](crate::cluster::EngineOp::Register) for every open connection of an
    /// authenticated user on this reactor (when the engine's store lost them).
    pub fn register_connections(&mut self) {
        self.core.cluster_register_all();
    }

    /// For engines: the cluster's decision on admission `id` (an [`EngineOp::Admit`](crate::cluster::EngineOp::Admit)).
    pub fn admitted(&mut self, id: u64, verdict: Admission) {
        self.core.cluster_admitted(id, verdict);
    }

    /// For engines: the answer to history op `id` (an [`EngineOp::PublishHistory`](crate::cluster::EngineOp::PublishHistory),
    /// `HistoryRange` or `HistoryClear`).
    pub fn history(&mut self, id: u64, result: Result<HistoryAnswer, EngineError>) {
        self.core.hub_history_answer(id, result);
    }

    /// For engines (reactor 0): Redis confirmed that the node is (or is no longer) subscribed
    /// to `channel`.
    pub fn subscription(&mut self, channel: &[u8], subscribed: bool) {
        self.core.hub_subscription(channel, subscribed);
    }

    /// For engines (reactor 0): the subscription connection broke; what it was subscribed to
    /// will be confirmed again as it comes back.
    pub fn subscription_lost(&mut self) {
        self.core.hub_subscription_lost();
    }

    /// For engines (reactor 0): the subscription is back after it was lost. Whatever it
    /// missed meanwhile cannot be filled without history: with history off, this node's
    /// connections are closed with 1012 so that they reconnect and reload.
    pub fn subscription_restored(&mut self) {
        self.core.cluster_subscription_restored();
    }

    /// For engines: the cluster-wide per-user limit closes this node's connection
    /// `connection` (1008 `connection limit exceeded`).
    pub fn evict(&mut self, connection: uuid::Uuid) {
        self.core.cluster_evict(connection);
    }

    /// Calls on every reactor that answer later (see [`Asks`]).
    pub fn asks(&mut self) -> Asks<'_> {
        Asks { core: self.core }
    }
}

fn source_token(id: SourceId, engine: bool) -> Token {
    Token(SOURCE_BIT | if engine { ENGINE_SOURCE_BIT } else { 0 } | id as usize)
}

/// Calls on the whole server made from a reactor thread. Each returns at once with a
/// [`Ticket`]; this reactor's share is carried out before it returns, the other reactors' in
/// their next loop turn, and the combined answer arrives as `on_reply(.., ticket, reply)`.
/// The same calls on a [`ServerHandle`] from another thread wait for the answer instead.
pub struct Asks<'r> {
    pub(crate) core: &'r mut Core,
}

impl Asks<'_> {
    fn handle(&self) -> ServerHandle {
        ServerHandle::from_runtime(self.core.rt.clone())
    }

    fn send(&mut self, o: Outgoing) -> Ticket {
        let asks = self.handle().deliver_asks(&o);
        let t = self.core.handler_ask(ReplyKind::Delivered, asks);
        // This reactor's share goes out now, in order with anything the handler sends next.
        self.core.fan_out_groups();
        t
    }

    /// `{"type": event, "data": data, ...}` to the event's subscribers on every reactor;
    /// replies `Delivered`.
    pub fn publish<D: Serialize>(&mut self, event: &str, data: D) -> Result<Ticket, HandleError> {
        let bit = self
            .core
            .rt
            .config
            .event_bit(event)
            .ok_or_else(|| HandleError::UnknownEvent(event.into()))?;
        Ok(self.send(Outgoing::envelope(Target::Subscribers(bit), event, data)))
    }

    /// An envelope to every connection of `user_id`; replies `Delivered`.
    pub fn send_to_user<D: Serialize>(&mut self, user_id: &str, kind: &str, data: D) -> Ticket {
        self.send(Outgoing::envelope(Target::User(user_id.into()), kind, data))
    }

    /// An envelope to every member of `room`, skipping `exclude_user`'s connections; replies
    /// `Delivered`.
    pub fn send_to_room<D: Serialize>(
        &mut self,
        room: &str,
        kind: &str,
        data: D,
        exclude_user: Option<&str>,
    ) -> Ticket {
        self.send(Outgoing::envelope(Target::Room(room.into()), kind, data).excluding(exclude_user))
    }

    /// An envelope to one connection by its id (from [`crate::Ctx::connection_id`]);
    /// replies `Delivered` (0 if it is gone).
    pub fn send_to_connection<D: Serialize>(&mut self, id: uuid::Uuid, kind: &str, data: D) -> Ticket {
        self.send(Outgoing::envelope(Target::Connection(id), kind, data))
    }

    /// An envelope to every open connection; replies `Delivered`.
    pub fn broadcast<D: Serialize>(&mut self, kind: &str, data: D) -> Ticket {
        self.send(Outgoing::envelope(Target::All, kind, data))
    }

    /// Adds a connected user to a room (the server's decision; no token check); replies
    /// `Member`.
    pub fn add_to_room(&mut self, room: &str, user_id: &str) -> Ticket {
        self.membership(room, user_id, true)
    }

    /// Removes a user from a room; replies `Member`.
    pub fn remove_from_room(&mut self, room: &str, user_id: &str) -> Ticket {
        self.membership(room, user_id, false)
    }

    fn membership(&mut self, room: &str, user_id: &str, add: bool) -> Ticket {
        let ask = Ask::Membership {
            room: room.into(),
            user: user_id.into(),
            add,
        };
        let home = self.handle().home_of(user_id);
        self.core.handler_ask(ReplyKind::Member, vec![(ask, vec![home])])
    }

    /// Users and connections over every reactor; replies `Census`.
    pub fn census(&mut self) -> Ticket {
        let all = self.handle().all_reactors();
        self.core.handler_ask(ReplyKind::Census, vec![(Ask::Census, all)])
    }
}
