//! The simple embedding contract: one `Handler` value shared by every reactor.
//!
//! Owns: the shared callbacks and what they are told. Does not touch: I/O. Callbacks run on
//! the reactor thread that owns the connection, so they must not block; use
//! [`crate::ServerHandle`] from other threads. For state per reactor without locks, your own
//! sources and timers, and asks that answer later, implement [`crate::ReactorHandler`] instead
//! (see [`crate::embed`]). The built-in protocol server ([`crate::app::ProtocolApp`]) and the
//! echo server ([`crate::app::EchoApp`]) are `Handler`s.

#[doc(no_inline)]
pub use crate::callback::{Closed, Refusal};
#[doc(no_inline)]
pub use crate::reactor::ctx::{Ctx, RefreshError, RoomRefusal};
pub use crate::reactor::handler::Handler;
