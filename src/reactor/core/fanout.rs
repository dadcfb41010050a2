//! Fan-out: which connections a target names, and queuing one shared frame to each of them.
//!
//! Owns: the subscriber and open-connection indexes (bitmaps over slab slots), delivery by
//! target, and the grouping of deliveries that arrive together. Does not touch: encoding
//! (frames arrive encoded once) or writing (the loop flushes).
//!
//! Deliveries asked for in one run (an inbox drain, the requests of one admin read) are queued
//! first: consecutive ones to the same target become one buffer, fanned out once when the run
//! ends. A burst of 200 publishes to 10,000 subscribers is then 10,000 queue pushes of one
//! 32 KB buffer, not 2,000,000 pushes of 160-byte frames in an order that misses the cache
//! on every one.

use std::time::Instant;

use tungstenite::Bytes;

use super::state::fanout::{Group, Waiter};
use super::{Core, NONE, Phase, Target};
use crate::ask::{Answer, Ask};

/// Most bytes of frames one group collects before a new group starts.
const GROUP_BYTES: usize = 256 * 1024;

impl Core {
    /// Records that the connection at `idx` is open (a publish to everyone reaches it).
    pub fn index_open(&mut self, idx: usize) {
        self.fanout.index.open(idx);
    }

    /// A connection's event subscriptions (a bit set over `subscribable_events`), read from
    /// the subscriber index: the connection record keeps no copy (8 bytes per connection).
    pub fn subscriptions_of(&self, idx: usize) -> u64 {
        self.fanout.index.subscriptions_of(idx)
    }

    /// Replaces a connection's event subscriptions (a bit set over `subscribable_events`).
    pub fn set_subscriptions(&mut self, idx: usize, bits: u64) {
        let old = self.subscriptions_of(idx);
        self.index_subscriptions(idx, old, bits);
    }

    /// Moves `idx` in the subscriber index from the events in `old` to those in `new`.
    pub(super) fn index_subscriptions(&mut self, idx: usize, old: u64, new: u64) {
        let s = &self.metrics.subscriptions;
        s.set((s.get() + u64::from((new & !old).count_ones())).saturating_sub(u64::from((old & !new).count_ones())));
        let mut changed = old ^ new;
        while changed != 0 {
            let bit = changed.trailing_zeros() as usize;
            changed &= changed - 1;
            let on = new & (1 << bit) != 0;
            if self.fanout.index.set(idx, bit, on) && self.cluster.is_some() {
                // The event's first subscriber here arrived (on), or its last one left.
                self.event_interest(bit, on);
            }
        }
    }

    /// Up to `limit` open connections from slot `start` on (or, with `user`, that user's
    /// connections here), for a paged listing.
    pub fn list_connections(&self, start: usize, limit: usize, user: Option<&str>) -> Vec<crate::ask::ConnectionInfo> {
        let slots: Vec<usize> = match user {
            Some(u) => {
                let mut v = Vec::new();
                if let Some(u) = self.users.find(u) {
                    self.user_connections(u, &mut v);
                }
                v.sort_unstable();
                v.retain(|&i| i >= start);
                v.truncate(limit);
                v
            }
            None => self.fanout.index.open_from(start, limit),
        };
        slots
            .into_iter()
            .filter(|&i| self.conns.get(i).is_some_and(|c| c.phase == Phase::Open))
            .map(|i| self.connection_info(i))
            .collect()
    }

    /// Every slot of an open connection (for the cluster's bookkeeping).
    pub(super) fn index_open_slots(&self, into: &mut Vec<usize>) {
        self.fanout.index.for_each_open(|i| into.push(i));
    }

    /// Connections subscribed to event `bit` (any phase; delivery checks the phase).
    fn subscribers_of(&self, bit: u32) -> Vec<usize> {
        self.fanout.index.subscribers_of(bit)
    }

    /// Carries out a request from another thread or reactor; a delivery is queued into the
    /// current group and answered (through `waiter`) when the group is fanned out.
    pub fn carry_out(&mut self, ask: Ask, waiter: Option<Waiter>) {
        let answer = match ask {
            Ask::Deliver {
                target,
                frame,
                exclude_user,
                published_at,
                ..
            } => return self.group_delivery(target, &frame, exclude_user, published_at, waiter),
            Ask::Disconnect { target, code, reason } => {
                self.fan_out_groups();
                Answer::Count(self.disconnect(&target, code, &reason))
            }
            Ask::Membership { room, user, add } => {
                self.fan_out_groups();
                Answer::Member(self.set_membership(&room, &user, add))
            }
            Ask::Inspect { id } => Answer::Info(self.find_by_id(&id).map(|idx| self.connection_info(idx))),
            Ask::List { start, limit, user } => Answer::Page(self.list_connections(start, limit, user.as_deref())),
            Ask::Census => Answer::Census(self.census()),
            Ask::RoomMembers { room } => Answer::Users(self.room_members(&room)),
            Ask::RpcReply {
                connection,
                message_id,
                outcome,
            } => Answer::Count(self.rpc_reply(&connection, &message_id, &outcome)),
            ask @ Ask::Sequence { .. } => return self.sequence(ask, waiter),
            // On a cluster node the hub (reactor 0) asks Redis and answers later.
            Ask::ReadHistory { channel, since, limit } if self.cluster.is_some() => {
                return self.hub_read(channel, since, limit, waiter);
            }
            Ask::ClearHistory { channel } if self.cluster.is_some() => return self.hub_clear(channel, waiter),
            Ask::Recover {
                channel,
                from,
                until,
                reader,
            } if self.cluster.is_some() => {
                return self.hub_recover(channel, from, until, reader, waiter);
            }
            Ask::ReadHistory { channel, since, limit } => self.read_history(&channel, since, limit),
            Ask::ClearHistory { channel } => self.clear_history(&channel),
            Ask::Recover {
                channel, from, reader, ..
            } => self.recover_here(&channel, from, reader.as_deref()),
        };
        if let Some(w) = waiter {
            self.answer(w, answer);
        }
    }

    fn answer(&mut self, waiter: Waiter, answer: Answer) {
        match waiter {
            Waiter::Reply(to) => crate::runtime::reply(&self.rt.links, self.id, to, answer),
            Waiter::Local { key, ask } => self.answer_local(key, ask, answer),
        }
    }

    /// Adds a delivery to the last group if it goes to the same connections, else starts one.
    fn group_delivery(
        &mut self,
        target: Target,
        frame: &[u8],
        exclude_user: Option<Box<str>>,
        published_at: Instant,
        waiter: Option<Waiter>,
    ) {
        let joins = self.fanout.groups.last().is_some_and(|g| {
            g.target == target && g.exclude_user == exclude_user && g.frames.len() + frame.len() <= GROUP_BYTES
        });
        if !joins {
            self.fanout.groups.push(Group {
                target,
                exclude_user,
                frames: Vec::with_capacity(frame.len()),
                messages: 0,
                published_at,
                waiters: Vec::new(),
            });
        }
        if let Some(g) = self.fanout.groups.last_mut() {
            g.frames.extend_from_slice(frame);
            g.messages += 1;
            g.waiters.extend(waiter);
        }
    }

    /// Fans out every queued group, in order, and answers its waiters (each delivery of a
    /// group reached the same connections).
    pub fn fan_out_groups(&mut self) {
        for g in std::mem::take(&mut self.fanout.groups) {
            let ex = g
                .exclude_user
                .as_deref()
                .and_then(|u| self.users.find(u))
                .unwrap_or(NONE);
            // A shared (reference-counted) `Bytes`: see `deliver`.
            let local = Bytes::from(g.frames).clone();
            let n = self.deliver_to(&g.target, &local, ex, g.messages);
            if n > 0 {
                self.fanout.in_flight.push((g.published_at, local));
            }
            for w in g.waiters {
                self.answer(w, Answer::Count(n));
            }
        }
    }

    /// Queues `frame` to every open connection matching `target` except those of
    /// `exclude_user` (a chat message is not echoed to its sender's own connections); returns
    /// how many. `published_at` starts the clock of the publish-to-write latency histogram.
    pub fn deliver(
        &mut self,
        target: &Target,
        frame: &Bytes,
        exclude_user: Option<&str>,
        published_at: Instant,
    ) -> usize {
        // Resolved once: per recipient it is one integer comparison.
        let ex = exclude_user.and_then(|u| self.users.find(u)).unwrap_or(NONE);
        // This reactor's own copy of the frame (one per message, not per recipient): once
        // only the latency watch holds it, every recipient here has had it written.
        // Cloned once so that `local` is a shared (reference-counted) `Bytes`: per-recipient
        // clones of a freshly copied one take the slower promotable path.
        let local = Bytes::copy_from_slice(frame).clone();
        let n = self.deliver_to(target, &local, ex, 1);
        if n > 0 {
            self.fanout.in_flight.push((published_at, local));
        }
        n
    }

    /// Records the latency of every message whose last recipient here has had it written
    /// (called after the end-of-turn flush).
    /// Records the publish latency of messages fully written by `now` (the caller's clock).
    pub fn observe_written(&mut self, now: Instant) {
        if self.fanout.in_flight.is_empty() {
            return;
        }
        let metrics = &self.metrics;
        self.fanout.in_flight.retain(|(at, frame)| {
            if frame.is_unique() {
                metrics.publish_latency.observe(now.saturating_duration_since(*at));
                false
            } else {
                true
            }
        });
    }

    /// Queues `frame` (holding `messages` messages) to every open connection matching `target`
    /// except user `ex`'s; returns how many.
    fn deliver_to(&mut self, target: &Target, frame: &Bytes, ex: u32, messages: u64) -> usize {
        self.fanout.forget_deflated();
        let mut n = 0;
        match target {
            Target::All => {
                // Taken out while pushing: a push never drops a connection.
                let open = self.fanout.index.take_open();
                open.for_each(|idx| {
                    if self.push_shared(idx, frame, ex, messages) {
                        n += 1;
                    }
                });
                self.fanout.index.put_open(open);
            }
            Target::Subscribers(bit) => {
                // Taken out while pushing: a push never drops a connection (a slow consumer
                // is only closed), so the index does not change meanwhile.
                let Some(set) = self.fanout.index.take_event(*bit) else {
                    return 0;
                };
                set.for_each(|idx| {
                    if self.push_shared(idx, frame, ex, messages) {
                        n += 1;
                    }
                });
                self.fanout.index.put_event(*bit, set);
            }
            Target::User(user) => {
                let mut cur = self
                    .users
                    .find(user)
                    .and_then(|u| self.users.get(u))
                    .map_or(NONE, |u| u.head);
                while cur != NONE {
                    let next = self.conns[cur as usize].next_of_user;
                    if self.push_shared(cur as usize, frame, ex, messages) {
                        n += 1;
                    }
                    cur = next;
                }
            }
            Target::Connection(id) => {
                if let Some(idx) = self.find_by_id(id)
                    && self.push_shared(idx, frame, ex, messages)
                {
                    n += 1;
                }
            }
            Target::Room(room) => {
                for idx in self.room_connections(room) {
                    if self.push_shared(idx, frame, ex, messages) {
                        n += 1;
                    }
                }
            }
        }
        n
    }

    /// Closes every open connection matching `target`; returns how many.
    pub fn disconnect(&mut self, target: &Target, code: u16, reason: &str) -> usize {
        let matching: Vec<usize> = match target {
            Target::All => {
                let mut open = Vec::new();
                self.fanout.index.for_each_open(|i| open.push(i));
                open.retain(|&i| self.conns[i].phase == Phase::Open);
                open
            }
            Target::Subscribers(bit) => self
                .subscribers_of(*bit)
                .into_iter()
                .filter(|&i| self.conns[i].phase == Phase::Open)
                .collect(),
            Target::User(user) => {
                let mut v = vec![];
                if let Some(u) = self.users.find(user) {
                    self.user_connections(u, &mut v);
                }
                v
            }
            Target::Connection(id) => self.find_by_id(id).into_iter().collect(),
            Target::Room(room) => self.room_connections(room),
        };
        for &idx in &matching {
            self.close_with(idx, code, reason);
        }
        matching.len()
    }
}
