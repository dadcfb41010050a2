//! The shared embedding contract the loop calls through the `embed` adapter: [`Handler`].
//! Documented for users at `wsedge::handler`, which re-exports it.
//!
//! Owns: the trait. Does not touch: I/O.

use super::ctx::Ctx;
use crate::callback::{Closed, Refusal};

/// Application callbacks; every method has a default that does nothing.
///
/// Every callback runs on the reactor thread that owns the connection, between that reactor's
/// reads and writes: it must not block (no waiting on locks held elsewhere, no blocking I/O, no
/// sleeping), or every connection of that reactor waits with it. A panic in a callback closes
/// only its connection (with 1011). `ServerHandle` calls that wait for reactors refuse to run
/// inside a callback (`Err(HandleError::OnReactorThread)`, nothing done); [`Ctx::asks`] makes
/// the same calls without waiting, answered as [`crate::ReactorHandler::on_reply`] (a handler
/// with replies is a `ReactorHandler`).
pub trait Handler: Send + Sync + 'static {
    /// Decides an upgrade whose token (if auth is on) is already verified: `claims` is `None`
    /// only for anonymous servers. Runs on the accepting reactor, before the per-user limit.
    /// Default: accept.
    fn on_upgrade(&self, _claims: Option<&crate::auth::Claims>) -> Result<(), Refusal> {
        Ok(())
    }
    /// The WebSocket is open and authenticated (101 sent, limits applied).
    fn on_open(&self, _ctx: &mut Ctx<'_>) {}
    /// A complete text message (valid UTF-8, reassembled).
    fn on_text(&self, _ctx: &mut Ctx<'_>, _text: &str) {}
    /// A complete binary message.
    fn on_binary(&self, _ctx: &mut Ctx<'_>, _data: &[u8]) {}
    /// The peer broke RFC 6455 (or sent an oversized message); the connection is closed with
    /// `violation.close_code()` right after this returns.
    fn on_violation(&self, _ctx: &mut Ctx<'_>, _violation: crate::Violation) {}
    /// The *server* is draining and about to close this connection with 1001 (say goodbye,
    /// hand the client a reconnect hint, ...). Default: calls the old name, `on_drain`.
    fn on_server_draining(&self, ctx: &mut Ctx<'_>) {
        #[allow(deprecated)]
        self.on_drain(ctx)
    }
    /// Old name of [`on_server_draining`](Self::on_server_draining).
    #[deprecated(note = "renamed `on_server_draining`; `on_writable` is about a connection's backlog")]
    fn on_drain(&self, _ctx: &mut Ctx<'_>) {}
    /// A connection whose send reported [`crate::SendStatus::Backpressure`] has written its
    /// backlog: produce again.
    fn on_writable(&self, _ctx: &mut Ctx<'_>) {}
    /// The connection is gone (after `on_open`).
    fn on_close(&self, _closed: &Closed<'_>) {}
}
