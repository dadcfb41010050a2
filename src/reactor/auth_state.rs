//! What the reactor keeps for the auth proxy: the handshakes waiting for its answer and the
//! accepting answers it may reuse.
//!
//! Owns: these records. Does not touch: asking or answering (`auth_proxy`).

use std::collections::HashMap;
use std::time::Instant;

use crate::auth::Claims;
use crate::http::upgrade::UpgradeRequest;

/// Most cached answers per reactor (past it the cache starts over).
pub(crate) const CACHE_MAX: usize = 10_000;

/// A handshake waiting for the auth proxy.
pub(crate) struct Authorizing {
    pub(crate) generation: u32,
    pub(crate) upgrade: UpgradeRequest,
    pub(crate) leftover: Vec<u8>,
    pub(crate) cache_key: u64,
}

/// The reactor's auth proxy state.
#[derive(Default)]
pub(crate) struct AuthProxyState {
    pub(crate) waiting: HashMap<usize, Box<Authorizing>>,
    pub(crate) cache: HashMap<u64, (Claims, Instant)>,
    pub(crate) hasher: std::hash::RandomState,
}
