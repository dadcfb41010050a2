//! The table of asks in flight: who asked (`Owner`), what the answers become, the tickets that
//! name them.
//!
//! Owns: these records and the table that holds them ([`AskTable`]: entries, serials,
//! overdue entries). Does not touch: carrying asks out or what answers become (`core::asks`).

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
    since: u32,
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

/// The asks this reactor has in flight, by slab key; a serial per entry keeps a late answer
/// from reaching a reused key.
#[derive(Default)]
pub(crate) struct AskTable {
    entries: slab::Slab<InFlight>,
    serial: u32,
}

impl AskTable {
    /// A fresh serial (24 bits, never 0 once wrapped past: tickets carry it).
    pub(crate) fn next_serial(&mut self) -> u32 {
        self.serial = self.serial.wrapping_add(1) & 0xFF_FFFF;
        self.serial
    }

    /// Opens an entry for `owner` waiting on `asks` asks, since tick `now`; `None` if its key
    /// or ask count would not fit a ticket (far beyond any real load).
    pub(crate) fn open(&mut self, owner: Owner, asks: usize, now: u32) -> Option<(usize, u32)> {
        let serial = self.next_serial();
        let key = self.entries.insert(InFlight {
            owner: Some(owner),
            serial,
            // One for the sending itself, so no answer completes the asks while they are sent.
            waiting: 1,
            answers: (0..asks).map(|_| Vec::new()).collect(),
            since: now,
            uncounted_requests: 0,
            early_answers: 0,
        });
        if key > 0xFF_FFFF || asks > 0xFFFF {
            self.entries.remove(key);
            return None;
        }
        Some((key, serial))
    }

    pub(crate) fn get(&self, key: usize) -> Option<&InFlight> {
        self.entries.get(key)
    }

    pub(crate) fn get_mut(&mut self, key: usize) -> Option<&mut InFlight> {
        self.entries.get_mut(key)
    }

    /// True while entry `key` is the one `serial` named.
    pub(crate) fn is_current(&self, key: usize, serial: u32) -> bool {
        self.entries.get(key).is_some_and(|f| f.serial == serial)
    }

    /// The serial of entry `key` (0 if gone).
    pub(crate) fn serial_of(&self, key: usize) -> u32 {
        self.entries.get(key).map_or(0, |f| f.serial)
    }

    pub(crate) fn remove(&mut self, key: usize) -> Option<InFlight> {
        self.entries.try_remove(key)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries opened at least `limit` ticks before tick `now`.
    pub(crate) fn overdue(&self, now: u32, limit: u32) -> Vec<usize> {
        self.entries
            .iter()
            .filter(|(_, f)| now.wrapping_sub(f.since) >= limit)
            .map(|(k, _)| k)
            .collect()
    }
}
