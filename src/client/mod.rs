//! Clients: a blocking WebSocket client for `ws://` and `wss://` ([`Client`]), when to
//! reconnect ([`Backoff`]), and the wsedge protocol session on top ([`Session`]).
//!
//! Owns: the client's socket (TCP, or TLS through rustls), its keepalive pings and measured
//! round trip, and typed errors for what a server can answer. Does not touch: anything of the
//! server; it is a library for applications, tests and the `wsedge client` command, and uses
//! only the public protocol.
//!
//! A `Client` is `Send` and blocks the calling thread in `recv`; pings go out from inside
//! `recv` (the socket's read timeout wakes it when one is due), so a client that is not
//! reading does not ping, exactly as it does not read pongs.

pub mod backoff;
mod connection;
mod error;
mod session;
pub(crate) mod stream;

pub use backoff::{Backoff, BackoffPolicy, should_reconnect};
pub use connection::{Client, ClientConfig};
pub use error::ClientError;
pub use session::{Session, SessionConfig, SessionEvent, TokenSource};
pub use stream::Roots;
pub use tungstenite::{Bytes, Message};

/// The browser and Node client (`wsedge.js`), served at `/client/wsedge.js`.
pub const WSEDGE_JS: &str = include_str!("wsedge.js");
/// Its TypeScript declarations, served at `/client/wsedge.d.ts`.
pub const WSEDGE_D_TS: &str = include_str!("wsedge.d.ts");
