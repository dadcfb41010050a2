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
use crate::ask::HandleError;
use crate::ask::{Ask, Target};
use crate::callback::{SourceId, Ticket, TimerId};
use crate::config::Config;
use crate::handle::ServerHandle;
use crate::outgoing::Outgoing;
use crate::runtime::{ENGINE_SOURCE_BIT, SOURCE_BIT};

/// A handler's view of its reactor, in [`crate::ReactorHandler::on_start`], `on_source`,
/// `on_timer` and `on_reply`.
pub struct ReactorCtx<'r> {
    pub(crate) core: &'r mut Core,
    pub(crate) registry: &'r mio::Registry,
}

impl ReactorCtx<'_> {
    /// This reactor's index.
    pub fn reactor(&self) -> usize {
        self.core.id
    }

    pub fn config(&self) -> &Config {
        &self.core.rt.config
    }

    /// A handle for work beyond this callback (to give to other threads). Its calls that wait
    /// for reactors answer `Err(HandleError::OnReactorThread)` on a reactor thread; use
    /// [`asks`](Self::asks) here.
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
        self.registry.register(source, source_token(id, false), interest)
    }

    pub fn reregister<S: mio::event::Source + ?Sized>(
        &mut self,
        source: &mut S,
        id: SourceId,
        interest: Interest,
    ) -> io::Result<()> {
        self.registry.reregister(source, source_token(id, false), interest)
    }

    pub fn deregister<S: mio::event::Source + ?Sized>(&mut self, source: &mut S) -> io::Result<()> {
        self.registry.deregister(source)
    }

    /// Fires `on_timer(.., id)` once, `after` from now (rounded up to the reactor's 100 ms
    /// tick; at least one tick; never earlier). Setting the same id again adds another firing.
    /// Beyond the timer wheel's span (about 102 s) it fires at the span's end, early: keep
    /// your own deadline and set the timer again when it fires before it.
    pub fn set_timer(&mut self, id: TimerId, after: Duration) {
        self.core.set_app_timer(id, after, false);
    }

    /// Cancels every pending firing of timer `id` (a later `set_timer(id, ..)` arms it again).
    pub fn cancel_timer(&mut self, id: TimerId) {
        self.core.cancel_app_timer(id);
    }

    /// Calls on every reactor that answer later (see [`Asks`]).
    pub fn asks(&mut self) -> Asks<'_> {
        Asks { core: self.core }
    }
}

pub(crate) fn source_token(id: SourceId, engine: bool) -> Token {
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
    fn send(&mut self, o: Outgoing) -> Ticket {
        let asks = self.core.rt.topology.deliver_asks(&o, self.core.clock.instant);
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
        let home = self.core.rt.topology.home_of(user_id);
        self.core.handler_ask(ReplyKind::Member, vec![(ask, vec![home])])
    }

    /// Users and connections over every reactor; replies `Census`.
    pub fn census(&mut self) -> Ticket {
        let all = self.core.rt.topology.all_reactors();
        self.core.handler_ask(ReplyKind::Census, vec![(Ask::Census, all)])
    }
}
