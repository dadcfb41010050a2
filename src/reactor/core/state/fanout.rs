//! Who a publish reaches (the subscriber index), deliveries waiting to be fanned out together,
//! and who waits for their counts.
//!
//! Owns: these records and the index's bitmaps. Does not touch: fanning out (`core::fanout`).

use std::time::Instant;

use crate::ask::{ReplyTo, Target};
use crate::reactor::slots::SlotSet;

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

/// Per event type (index: the event's bit), a bitmap over slab slots of its subscribers: a
/// publish walks 64 slots per word in slab order (cache-friendly when most connections
/// subscribe, and skipping empty words when few do) instead of every connection. And the
/// slots of open connections: a publish to everyone visits these, not the whole slab. A
/// connection's own subscriptions are read from here (its record keeps no copy).
#[derive(Default)]
pub(crate) struct SubscriberIndex {
    events: Vec<SlotSet>,
    open: SlotSet,
}

impl SubscriberIndex {
    /// The connection at `idx` is open (a publish to everyone reaches it).
    pub(crate) fn open(&mut self, idx: usize) {
        self.open.insert(idx);
    }

    /// The connection at `idx` is gone (its subscriptions are cleared by the caller first).
    pub(crate) fn close(&mut self, idx: usize) {
        self.open.remove(idx);
    }

    /// The events `idx` subscribes to, as a bit set.
    pub(crate) fn subscriptions_of(&self, idx: usize) -> u64 {
        let mut bits = 0;
        for (bit, set) in self.events.iter().enumerate() {
            if set.contains(idx) {
                bits |= 1 << bit;
            }
        }
        bits
    }

    /// Subscribes `idx` to event `bit` (or unsubscribes); true if the event's set went from
    /// empty to not, or back (its interest changed).
    pub(crate) fn set(&mut self, idx: usize, bit: usize, on: bool) -> bool {
        if self.events.len() <= bit {
            self.events.resize_with(bit + 1, Default::default);
        }
        let was_empty = self.events[bit].is_empty();
        if on {
            self.events[bit].insert(idx);
        } else {
            self.events[bit].remove(idx);
        }
        was_empty != self.events[bit].is_empty()
    }

    /// Slots subscribed to event `bit` (any phase: delivery checks it).
    pub(crate) fn subscribers_of(&self, bit: u32) -> Vec<usize> {
        self.events.get(bit as usize).map_or_else(Vec::new, SlotSet::to_vec)
    }

    /// Up to `limit` open slots from `start` on, in order.
    pub(crate) fn open_from(&self, start: usize, limit: usize) -> Vec<usize> {
        self.open.from(start, limit)
    }

    pub(crate) fn for_each_open(&self, f: impl FnMut(usize)) {
        self.open.for_each(f)
    }

    /// The open slots, taken out while a publish to everyone pushes to them (a push never
    /// drops a connection, so the set does not change meanwhile); put back with `put_open`.
    pub(crate) fn take_open(&mut self) -> SlotSet {
        std::mem::take(&mut self.open)
    }

    pub(crate) fn put_open(&mut self, open: SlotSet) {
        self.open = open;
    }

    /// Event `bit`'s subscribers, taken out the same way (`None`: no one ever subscribed).
    pub(crate) fn take_event(&mut self, bit: u32) -> Option<SlotSet> {
        self.events.get_mut(bit as usize).map(std::mem::take)
    }

    pub(crate) fn put_event(&mut self, bit: u32, set: SlotSet) {
        if let Some(slot) = self.events.get_mut(bit as usize) {
            *slot = set;
        }
    }
}
