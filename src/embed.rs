//! The embedding contract for applications that keep state per reactor: [`ReactorHandler`]
//! (callbacks with `&mut self`, one handler per reactor thread), the [`HandlerFactory`] that
//! makes them, and what callbacks are told ([`SendStatus`], [`Ticket`], [`Reply`]).
//!
//! Owns: these traits and types. Does not touch: I/O (the reactor calls in; handlers act
//! through [`Ctx`] and [`ReactorCtx`]).
//!
//! **Threads.** Each reactor is one thread. The factory's [`HandlerFactory::make`] runs on that
//! thread, once, before the loop starts; every callback of the handler it returns runs on that
//! thread too, between the reactor's reads and writes. So a handler needs no lock for its own
//! state, and must never block: while a callback runs, no connection of its reactor is served.
//!
//! **Costs.** Callbacks are plain method calls. Sends queue bytes that are written at the end of
//! the loop turn (one write per connection per turn). Asks of other reactors ([`Ticket`]) cost
//! one inbox post per reactor asked and come back as [`ReactorHandler::on_reply`].
//!
//! # State per reactor, and asks that answer later
//!
//! A chat relay counting, without a lock, what its reactor relayed; the room message reaches
//! every reactor, and the count of recipients comes back as a reply:
//!
//! ```no_run
//! use std::collections::HashMap;
//! use wsedge::{Config, Ctx, ReactorCtx, ReactorHandler, Reply, Server, Ticket, per_reactor};
//!
//! #[derive(Default)]
//! struct Relay {
//!     relayed: u64,
//!     senders: HashMap<Ticket, uuid::Uuid>,
//! }
//!
//! impl ReactorHandler for Relay {
//!     fn on_text(&mut self, ctx: &mut Ctx<'_>, text: &str) {
//!         self.relayed += 1;
//!         let me = ctx.user_id().map(str::to_string);
//!         let t = ctx.asks().send_to_room("lobby", "chat", text, me.as_deref());
//!         self.senders.insert(t, ctx.connection_id());
//!     }
//!     fn on_reply(&mut self, r: &mut ReactorCtx<'_>, ticket: Ticket, reply: Reply) {
//!         if let (Some(sender), Reply::Delivered { recipients }) = (self.senders.remove(&ticket), reply) {
//!             r.asks().send_to_connection(sender, "receipt", recipients);
//!         }
//!     }
//! }
//!
//! let server = Server::start(Config::default(), per_reactor(|_reactor| Relay::default()))?;
//! server.wait()?;
//! # Ok::<(), wsedge::ServerError>(())
//! ```
//!
//! # Backpressure
//!
//! A producer that stops when a connection is backed up and goes on when it has drained:
//!
//! ```
//! use wsedge::{Ctx, ReactorHandler, SendStatus};
//!
//! #[derive(Default)]
//! struct Ticker {
//!     next: u64,
//! }
//!
//! impl Ticker {
//!     fn produce(&mut self, ctx: &mut Ctx<'_>) {
//!         while self.next < 1_000_000 {
//!             self.next += 1;
//!             match ctx.send_text(&self.next.to_string()) {
//!                 SendStatus::Sent => continue,
//!                 SendStatus::Backpressure => return, // on_writable will call us again
//!                 SendStatus::Dropped => return,      // closing: nobody to produce for
//!             }
//!         }
//!     }
//! }
//!
//! impl ReactorHandler for Ticker {
//!     fn on_open(&mut self, ctx: &mut Ctx<'_>) {
//!         self.produce(ctx);
//!     }
//!     fn on_writable(&mut self, ctx: &mut Ctx<'_>) {
//!         self.produce(ctx);
//!     }
//! }
//! ```
//!
//! # Your own sources and timers
//!
//! An event source of yours (here a TCP listener) and a timer on a reactor, handled on its
//! thread with the same asks as connection callbacks:
//!
//! ```
//! use std::time::Duration;
//! use wsedge::mio::{Interest, net::TcpListener};
//! use wsedge::{ReactorCtx, ReactorHandler, SourceId, TimerId};
//!
//! struct Bridge {
//!     upstream: TcpListener,
//! }
//!
//! impl ReactorHandler for Bridge {
//!     fn on_start(&mut self, r: &mut ReactorCtx<'_>) {
//!         r.register(&mut self.upstream, 1, Interest::READABLE).expect("register");
//!         r.set_timer(7, Duration::from_secs(1));
//!     }
//!     fn on_source(&mut self, r: &mut ReactorCtx<'_>, _id: SourceId, _event: &wsedge::mio::event::Event) {
//!         while let Ok((_stream, peer)) = self.upstream.accept() {
//!             r.asks().broadcast("upstream.connected", peer.to_string());
//!         }
//!     }
//!     fn on_timer(&mut self, r: &mut ReactorCtx<'_>, _id: TimerId) {
//!         r.asks().census();
//!         r.set_timer(7, Duration::from_secs(1));
//!     }
//! }
//! ```
//!
//! # Reactors on your threads
//!
//! ```no_run
//! use wsedge::{Config, Server, app::ProtocolApp};
//!
//! let prepared = Server::prepare(Config::default(), ProtocolApp::default())?;
//! let handle = prepared.handle.clone();
//! let threads: Vec<_> = prepared
//!     .reactors
//!     .into_iter()
//!     .map(|reactor| std::thread::spawn(move || reactor.run()))
//!     .collect();
//! // ... later, from anywhere:
//! handle.drain();
//! for t in threads {
//!     t.join().expect("thread").expect("no reactor died");
//! }
//! # Ok::<(), wsedge::ServerError>(())
//! ```

use std::sync::Arc;

use crate::auth::Claims;
use crate::callback::{Closed, Refusal};
#[doc(no_inline)]
pub use crate::callback::{Reply, SendStatus, SourceId, Ticket, TimerId};
use crate::handler::Handler;
#[doc(no_inline)]
pub use crate::reactor::ctx::Ctx;
#[doc(no_inline)]
pub use crate::reactor::reactor_ctx::{Asks, ReactorCtx};

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
    /// A connection that reported [`SendStatus::Backpressure`] has written its backlog down to
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
