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

#[doc(no_inline)]
pub use crate::callback::{Reply, SendStatus, SourceId, Ticket, TimerId};
#[doc(no_inline)]
pub use crate::reactor::ctx::Ctx;
pub use crate::reactor::embed::{
    EachReactor, HandlerFactory, PerReactor, ReactorHandler, Shared, each_reactor, per_reactor,
};
#[doc(no_inline)]
pub use crate::reactor::reactor_ctx::{Asks, ReactorCtx};
