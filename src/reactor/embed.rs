//! The per-reactor embedding contract the loop calls: [`ReactorHandler`], the factories
//! that make one per reactor, and the shared-`Handler` adapter. Documented for users at
//! `wsedge::embed`, which re-exports it.
//!
//! Owns: these traits and factories. Does not touch: I/O (the loop calls in).

use std::sync::Arc;

use super::ctx::Ctx;
use super::handler::Handler;
use super::reactor_ctx::ReactorCtx;
use crate::auth::Claims;
use crate::callback::{Closed, Refusal, Reply, SourceId, Ticket, TimerId};

/// Application callbacks with per-reactor state; every method has a default that does nothing.
///
/// One handler per reactor, made on the reactor's thread by a [`HandlerFactory`]; every
/// callback runs on that thread and must not block. A panic in a connection callback closes
/// only that connection (1011); a panic elsewhere is logged and counted.
pub trait ReactorHandler: 'static {
    /// The reactor is about to run: register sources, start timers.
    fn on_start(&mut self, _r: &mut ReactorCtx<'_>) {}
    /// Decides an upgrade whose token (if auth is on) is verified. Runs on the accepting
    /// reactor, before the per-user limit. Default: accept.
    fn on_upgrade(&mut self, _claims: Option<&Claims>) -> Result<(), Refusal> {
        Ok(())
    }
    /// The WebSocket is open and authenticated (runs on the user's home reactor).
    fn on_open(&mut self, _ctx: &mut Ctx<'_>) {}
    /// A complete text message (valid UTF-8, reassembled).
    fn on_text(&mut self, _ctx: &mut Ctx<'_>, _text: &str) {}
    /// A complete binary message.
    fn on_binary(&mut self, _ctx: &mut Ctx<'_>, _data: &[u8]) {}
    /// The peer broke RFC 6455; the connection is closed right after this returns.
    fn on_violation(&mut self, _ctx: &mut Ctx<'_>, _violation: crate::Violation) {}
    /// A connection that reported [`crate::SendStatus::Backpressure`] has written its backlog down to
    /// nothing: produce again.
    fn on_writable(&mut self, _ctx: &mut Ctx<'_>) {}
    /// The *server* is draining and about to close this connection with 1001 (say goodbye,
    /// send a reconnect hint). Not about this connection's backlog (that is `on_writable`).
    fn on_server_draining(&mut self, _ctx: &mut Ctx<'_>) {}
    /// The connection is gone (after `on_open`); `r` is the reactor it was on (set timers,
    /// make asks, tell others).
    fn on_close(&mut self, _r: &mut ReactorCtx<'_>, _closed: &Closed<'_>) {}
    /// The reactor has finished: every connection is closed and reported, and no callback
    /// follows. Deregister and close your own sources here.
    fn on_stop(&mut self, _r: &mut ReactorCtx<'_>) {}
    /// An event on a source registered with [`ReactorCtx::register`].
    fn on_source(&mut self, _r: &mut ReactorCtx<'_>, _source: SourceId, _event: &mio::event::Event) {}
    /// A timer set with [`ReactorCtx::set_timer`] fired.
    fn on_timer(&mut self, _r: &mut ReactorCtx<'_>, _timer: TimerId) {}
    /// The answer to an ask made with `ticket`.
    fn on_reply(&mut self, _r: &mut ReactorCtx<'_>, _ticket: Ticket, _reply: Reply) {}
}

/// Makes one [`ReactorHandler`] per reactor (ws-rs' `Factory`). Any shared [`Handler`] is a
/// factory too (every reactor calls the same value), so `Server::start(config, handler)` keeps
/// working; [`per_reactor`] turns a closure into a factory, and [`each_reactor`] hands each
/// reactor a value made beforehand (a socket, a channel end).
pub trait HandlerFactory: Send + Sync + 'static {
    type Handler: ReactorHandler;
    /// Called once per reactor, on that reactor's thread, with its index.
    fn make(self: Arc<Self>, reactor: usize) -> Self::Handler;
    /// Called before any reactor starts, with the number of reactors: a factory that cannot
    /// make that many handlers says why (`Server::start` fails with `ServerError::Factory`).
    fn check(&self, _reactors: usize) -> Result<(), String> {
        Ok(())
    }
}

/// A factory from a closure: `per_reactor(|reactor| MyHandler::new(reactor))`. The closure
/// may keep state of its own (it is `FnMut`; reactors call it one at a time).
pub fn per_reactor<F, H>(make: F) -> PerReactor<F>
where
    F: FnMut(usize) -> H + Send + 'static,
    H: ReactorHandler,
{
    PerReactor(std::sync::Mutex::new(make))
}

/// See [`per_reactor`].
pub struct PerReactor<F>(std::sync::Mutex<F>);

impl<F, H> HandlerFactory for PerReactor<F>
where
    F: FnMut(usize) -> H + Send + 'static,
    H: ReactorHandler,
{
    type Handler = H;
    fn make(self: Arc<Self>, reactor: usize) -> H {
        let mut make = self.0.lock().unwrap_or_else(|e| e.into_inner());
        (make)(reactor)
    }
}

/// A factory from handlers made beforehand, one per reactor in order: each reactor takes its
/// own (so a handler may own a socket or a channel end, with no lock and no `Option`). There
/// must be exactly as many as reactors (`workers`); otherwise the server does not start.
pub fn each_reactor<H: ReactorHandler + Send>(handlers: Vec<H>) -> EachReactor<H> {
    EachReactor(std::sync::Mutex::new(handlers.into_iter().map(Some).collect()))
}

/// See [`each_reactor`].
pub struct EachReactor<H>(std::sync::Mutex<Vec<Option<H>>>);

impl<H: ReactorHandler + Send> HandlerFactory for EachReactor<H> {
    type Handler = H;
    fn make(self: Arc<Self>, reactor: usize) -> H {
        let taken = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(reactor)
            .and_then(Option::take);
        // `check` ran before any reactor started, with the same count: every slot is filled.
        taken.expect("each_reactor: one handler per reactor (checked at start)")
    }
    fn check(&self, reactors: usize) -> Result<(), String> {
        let n = self.0.lock().unwrap_or_else(|e| e.into_inner()).len();
        if n == reactors {
            Ok(())
        } else {
            Err(format!("each_reactor got {n} handlers for {reactors} reactors"))
        }
    }
}

impl<H: Handler> HandlerFactory for H {
    type Handler = Shared<H>;
    fn make(self: Arc<Self>, _reactor: usize) -> Shared<H> {
        Shared(self)
    }
}

/// A shared [`Handler`] seen as a per-reactor one: every reactor calls the same value.
#[doc(hidden)]
pub struct Shared<H>(Arc<H>);

impl<H: Handler> ReactorHandler for Shared<H> {
    fn on_upgrade(&mut self, claims: Option<&Claims>) -> Result<(), Refusal> {
        self.0.on_upgrade(claims)
    }
    fn on_open(&mut self, ctx: &mut Ctx<'_>) {
        self.0.on_open(ctx)
    }
    fn on_text(&mut self, ctx: &mut Ctx<'_>, text: &str) {
        self.0.on_text(ctx, text)
    }
    fn on_binary(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) {
        self.0.on_binary(ctx, data)
    }
    fn on_violation(&mut self, ctx: &mut Ctx<'_>, violation: crate::Violation) {
        self.0.on_violation(ctx, violation)
    }
    fn on_writable(&mut self, ctx: &mut Ctx<'_>) {
        self.0.on_writable(ctx)
    }
    fn on_server_draining(&mut self, ctx: &mut Ctx<'_>) {
        self.0.on_server_draining(ctx)
    }
    fn on_close(&mut self, _r: &mut ReactorCtx<'_>, closed: &Closed<'_>) {
        self.0.on_close(closed)
    }
}
