//! A plain HTTP connection's records: its request in progress, responses owed in order.
//!
//! Owns: these records and the reactor's table of them ([`HttpConns`]: the connections, the
//! order of their requests, the paused ones to serve again, the keep-alive connections turning
//! into WebSocket handshakes). Does not touch: serving requests (`core::http`).

use std::collections::{HashMap, VecDeque};
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

/// A reactor's plain HTTP connections, by slab index.
#[derive(Default)]
pub(crate) struct HttpConns {
    conns: HashMap<usize, HttpConn>,
    /// Requests (and connections) seen, as an order for `HttpConn::last_request`.
    requests: u64,
    /// Paused connections to serve and read again.
    resume: Vec<mio::Token>,
    /// Keep-alive connections whose next request is a WebSocket upgrade, with its bytes: the
    /// reactor runs them through the handshake (`Reactor::take_reupgrades`).
    pub(crate) reupgrades: Vec<(usize, u32, Vec<u8>)>,
}

impl HttpConns {
    pub(crate) fn len(&self) -> usize {
        self.conns.len()
    }

    /// A new HTTP connection at slot `idx`, its first request (if any bytes came) started at
    /// tick `started`, at `clock`.
    pub(crate) fn open(&mut self, idx: usize, started: Option<u32>, clock: Instant) {
        let last_request = self.next_request();
        self.conns.insert(
            idx,
            HttpConn {
                request_started: started,
                request_clock: clock,
                owed: VecDeque::new(),
                next_seq: 0,
                closing: false,
                paused: false,
                served: 0,
                body_until: None,
                last_request,
            },
        );
    }

    /// The next number in the reactor's order of requests.
    pub(crate) fn next_request(&mut self) -> u64 {
        self.requests += 1;
        self.requests
    }

    pub(crate) fn get(&self, idx: usize) -> Option<&HttpConn> {
        self.conns.get(&idx)
    }

    pub(crate) fn get_mut(&mut self, idx: usize) -> Option<&mut HttpConn> {
        self.conns.get_mut(&idx)
    }

    pub(crate) fn remove(&mut self, idx: usize) {
        self.conns.remove(&idx);
    }

    /// The connection idle (between requests, nothing owed, not closing) the longest.
    pub(crate) fn longest_idle(&self) -> Option<usize> {
        self.conns
            .iter()
            .filter(|(_, h)| h.request_started.is_none() && h.owed.is_empty() && !h.closing)
            .min_by_key(|(_, h)| h.last_request)
            .map(|(i, _)| *i)
    }

    /// Queues a paused connection to be served and read again.
    pub(crate) fn resume_later(&mut self, token: mio::Token) {
        self.resume.push(token);
    }

    pub(crate) fn take_resumes(&mut self) -> Vec<mio::Token> {
        std::mem::take(&mut self.resume)
    }

    pub(crate) fn has_resumes(&self) -> bool {
        !self.resume.is_empty()
    }
}
