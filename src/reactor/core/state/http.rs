//! A plain HTTP connection's records: its request in progress, responses owed in order.
//!
//! Owns: these records. Does not touch: serving requests (`core::http`).

use std::collections::VecDeque;
use std::time::Instant;

/// One HTTP connection's state (kept beside the slab, only for HTTP connections).
pub(crate) struct HttpConn {
    /// Tick of the first byte of the request being received (`None`: between requests).
    pub(crate) request_started: Option<u32>,
    /// When that request started, for the access log.
    pub(crate) request_clock: Instant,
    /// Responses owed, oldest first.
    pub(crate) owed: VecDeque<Owed>,
    pub(crate) next_seq: u64,
    /// No further requests are read: close once what is owed is written.
    pub(crate) closing: bool,
    /// Reading is paused (too much owed or unwritten); resumed by `resume_http`.
    pub(crate) paused: bool,
    /// Requests answered, so the first request may be timed from accept.
    pub(crate) served: u32,
    /// Order of this connection's last request among the reactor's (for closing the
    /// longest-idle one).
    pub(crate) last_request: u64,
    /// The current request's head was accepted; its body completes at this many input bytes
    /// (no re-parsing or re-checking the token while a body arrives).
    pub(crate) body_until: Option<usize>,
}

pub(crate) struct Owed {
    pub(crate) seq: u64,
    pub(crate) head_only: bool,
    pub(crate) keep_alive: bool,
    /// Serialized once known.
    pub(crate) bytes: Option<Vec<u8>>,
    pub(crate) method: Box<str>,
    pub(crate) path: Box<str>,
    pub(crate) started: Instant,
}
