//! Who a publish reaches (the subscriber index), deliveries waiting to be fanned out together,
//! and who waits for their counts.
//!
//! Owns: these records, the index's bitmaps, the messages in flight and the compressed form of
//! the frame being fanned out. Does not touch: fanning out (`core::fanout`) or who negotiated
//! compression (`state::codecs`).

use std::time::Instant;

use tungstenite::Bytes;

use crate::ask::{ReplyTo, Target};
use crate::metrics::ReactorMetrics;
use crate::reactor::slots::SlotSet;
use crate::ws::deflate::Deflater;

/// The fan-out side of the reactor.
#[derive(Default)]
pub(crate) struct Fanout {
    /// Who a publish reaches: per event, its subscribers' slots; and every open slot.
    pub(crate) index: SubscriberIndex,
    /// Deliveries asked for in this run of asks, not yet fanned out (see `core::fanout`).
    pub(crate) groups: Vec<Group>,
    /// Messages queued here and not yet written to every recipient: when they were published
    /// and this reactor's copy of the frame (see `core::fanout::deliver`).
    pub(crate) in_flight: Vec<(Instant, Bytes)>,
    /// The compressed form of the frame being fanned out (its address and length, and the
    /// bytes): made for the first recipient that negotiated compression, shared by the rest.
    deflated: Option<(usize, usize, Bytes)>,
}

impl Fanout {
    /// `frame` compressed for connections that negotiated permessage-deflate: once per frame
    /// fanned out, messages under `min` bytes left as they are.
    pub(crate) fn deflated_form(
        &mut self,
        frame: &Bytes,
        deflater: &mut Option<Box<Deflater>>,
        min: usize,
        metrics: &ReactorMetrics,
    ) -> Bytes {
        let key = (frame.as_ptr() as usize, frame.len());
        if let Some((p, l, b)) = &self.deflated
            && (*p, *l) == key
        {
            return b.clone();
        }
        let compressed = Bytes::from(deflater.get_or_insert_with(Box::default).compress_frames(frame, min));
        metrics.compressions.inc();
        self.deflated = Some((key.0, key.1, compressed.clone()));
        compressed
    }

    /// Forgets the compressed form of the last frame (called before each fan-out, so an address
    /// reused by a later frame never matches).
    pub(crate) fn forget_deflated(&mut self) {
        self.deflated = None;
    }
}

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
