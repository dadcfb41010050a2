//! The table of asks in flight: who asked (`Owner`), what the answers become, the tickets that
//! name them.
//!
//! Owns: these records. Does not touch: carrying asks out (`core::asks`).

use mio::Token;

use crate::admin::{Answers, Finish};

/// Who asked, and so what the answers become.
pub(crate) enum Owner {
    /// An admin request: `finish` makes the response owed as `seq` on connection `conn`.
    Http { conn: Token, seq: u64, finish: Finish },
    /// A handler call: the answers become a `Reply` of this kind.
    Handler(ReplyKind),
    /// A thread waiting on a channel for the answers (a `ServerHandle` call in a cluster).
    Thread(std::sync::mpsc::Sender<Answers>),
    /// Nobody waits (a handler's fire-and-forget broadcast in a cluster).
    Nobody,
    /// A connection's subscriptions with recovery (see `channels`): each answer subscribes it
    /// as it comes; the last one lets `finish` acknowledge, then the replays go out.
    Recovery(Box<super::channels::PendingRecovery>),
    /// A delivery of this node's own publish carried out for the hub: the sum of the counts
    /// goes to the publisher as one answer.
    Forward(crate::ask::ReplyTo),
    /// Another node's request: the merged answer goes back to it (reactor `reactor`, ticket
    /// `ticket` there).
    Remote {
        origin: Box<str>,
        reactor: usize,
        ticket: u64,
    },
}

#[derive(Clone, Copy)]
pub(crate) enum ReplyKind {
    Delivered,
    Member,
    Census,
}

/// Asks waiting for answers.
pub(crate) struct InFlight {
    pub(crate) owner: Option<Owner>,
    pub(crate) serial: u32,
    pub(crate) waiting: usize,
    pub(crate) answers: Answers,
    pub(crate) since: u32,
    /// Requests to the other nodes whose publish Redis has not answered yet: until it has,
    /// nobody knows how many nodes will answer.
    pub(crate) uncounted_requests: u16,
    /// Other nodes' answers that came before that count (the answer travels on the
    /// subscription, the count on the command connection: either may be read first).
    pub(crate) early_answers: usize,
}

/// Ticket layout: slab key (bits 0-23), ask index (24-39), serial (40-63).
pub(crate) fn ticket(key: usize, ask: usize, serial: u32) -> u64 {
    (key as u64 & 0xFF_FFFF) | ((ask as u64 & 0xFFFF) << 24) | (u64::from(serial & 0xFF_FFFF) << 40)
}

pub(crate) fn split_ticket(t: u64) -> (usize, usize, u32) {
    (
        (t & 0xFF_FFFF) as usize,
        ((t >> 24) & 0xFFFF) as usize,
        (t >> 40) as u32,
    )
}
