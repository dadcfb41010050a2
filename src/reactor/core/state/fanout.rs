//! Deliveries waiting to be fanned out together, and who waits for their counts.
//!
//! Owns: these records. Does not touch: fanning out (`core::fanout`).

use std::time::Instant;

use crate::ask::{ReplyTo, Target};

/// Who waits for a delivery's recipient count.
pub(crate) enum Waiter {
    Reply(ReplyTo),
    /// Ask `ask` of this reactor's admin plan `key`.
    Local {
        key: usize,
        ask: usize,
    },
}

/// Consecutive deliveries to one target, their frames back to back.
pub(crate) struct Group {
    pub(crate) target: Target,
    pub(crate) exclude_user: Option<Box<str>>,
    pub(crate) frames: Vec<u8>,
    pub(crate) messages: u64,
    pub(crate) published_at: Instant,
    pub(crate) waiters: Vec<Waiter>,
}
