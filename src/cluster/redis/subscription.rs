//! Reactor 0's subscription connection: the node's interest per channel over every reactor,
//! the SUBSCRIBE/UNSUBSCRIBE commands that follow it, and what arrives on it.
//!
//! Owns: the per-channel interest count and confirmation state, the subscription probe's
//! arrival. Does not touch: the command connection (the probe is published there) or what a
//! received message means (handed to the reactor with `r.received`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::Instant;

use redis_protocol::resp2::types::BytesFrame;

use super::Half;
use super::link::{Link, is_auth_error};
use crate::cluster::broker::EngineHost;
use crate::cluster::resp::bytes_of;
use crate::cluster::wire;

/// Channels per SUBSCRIBE / UNSUBSCRIBE command.
const SUBSCRIBE_BATCH: usize = 1000;

/// Reactor 0's subscriptions.
pub(super) struct Sub {
    pub link: Link,
    /// Per channel: reactors with interest, and whether it is subscribed on the current
    /// connection (one entry per channel: with a channel per user, this is the node's largest
    /// cluster structure).
    pub channels: HashMap<Box<[u8]>, Interest>,
    /// Channels whose interest changed since the last flush.
    pub changed: Vec<Box<[u8]>>,
    /// The subscription was up and then lost: when it is back, the node's connections may
    /// have missed messages.
    pub lost_since_up: bool,
    /// Commands sent on it whose replies have not all come: when each was sent and how many
    /// replies it still owes (a SUBSCRIBE of n channels is answered n times). One overdue
    /// means the subscription is stalled, even while the command connection is away.
    pub awaiting: VecDeque<(Instant, usize)>,
    /// When the last PING went out (it checks the connection while nothing else is sent).
    pub last_ping: Option<Instant>,
}

#[derive(Default)]
pub(super) struct Interest {
    pub reactors: u32,
    pub subscribed: bool,
    /// SUBSCRIBE / UNSUBSCRIBE commands for the channel not yet confirmed: while any is, the
    /// node cannot tell whether Redis has it subscribed.
    pub unconfirmed: u16,
}

impl Interest {
    /// Redis confirmed the subscription: every later publish on the channel reaches the node.
    pub fn confirmed(&self) -> bool {
        self.subscribed && self.unconfirmed == 0
    }
}

impl Sub {
    pub fn new(link: Link) -> Self {
        Sub {
            link,
            channels: HashMap::new(),
            changed: Vec::new(),
            lost_since_up: false,
            awaiting: VecDeque::new(),
            last_ping: None,
        }
    }

    fn sent(&mut self, replies: usize) {
        if replies > 0 {
            self.awaiting.push_back((Instant::now(), replies));
        }
    }

    /// One reply of the oldest command came.
    fn answered(&mut self) {
        if let Some(front) = self.awaiting.front_mut() {
            front.1 -= 1;
            if front.1 == 0 {
                self.awaiting.pop_front();
            }
        }
    }

    /// When the oldest unanswered command was sent.
    pub fn oldest_unanswered(&self) -> Option<Instant> {
        self.awaiting.front().map(|(at, _)| *at)
    }

    /// Checks the connection with a PING (answered `pong` in subscribed mode).
    pub fn ping(&mut self) {
        self.link.conn.command(&[b"PING"]);
        self.sent(1);
        self.last_ping = Some(Instant::now());
    }

    /// A new connection: the setup commands (`setup`), the control channels, then every
    /// channel of interest again (on the next flush).
    pub fn start(&mut self, setup: &[Vec<&[u8]>], control: [&[u8]; 3]) {
        for c in setup {
            self.link.conn.command(c);
        }
        self.awaiting.clear();
        self.last_ping = None;
        let mut cmd: Vec<&[u8]> = vec![b"SUBSCRIBE"];
        cmd.extend(control);
        self.link.conn.command(&cmd);
        self.sent(control.len());
        self.channels.retain(|_, i| i.reactors > 0);
        for i in self.channels.values_mut() {
            i.subscribed = false;
            i.unconfirmed = 0;
        }
        self.changed = self.channels.keys().cloned().collect();
    }

    pub fn apply_interest(&mut self, channel: Box<[u8]>, on: bool) {
        let i = self.channels.entry(channel.clone()).or_default();
        if on {
            i.reactors += 1;
        } else {
            i.reactors = i.reactors.saturating_sub(1);
        }
        // While the connection is being made again, every channel is subscribed anew anyway.
        if self.link.conn.is_open() {
            self.changed.push(channel);
        }
    }

    /// Sends the subscription changes of this turn as few commands.
    pub fn reconcile(&mut self) {
        if self.changed.is_empty() || !self.link.conn.is_open() {
            return;
        }
        let mut add: Vec<Box<[u8]>> = Vec::new();
        let mut drop: Vec<Box<[u8]>> = Vec::new();
        for ch in std::mem::take(&mut self.changed) {
            let Some(i) = self.channels.get_mut(&ch) else { continue };
            let wanted = i.reactors > 0;
            if wanted != i.subscribed {
                i.subscribed = wanted;
                i.unconfirmed = i.unconfirmed.saturating_add(1);
                if wanted {
                    add.push(ch.clone());
                } else {
                    drop.push(ch.clone());
                }
            }
            if !wanted && i.unconfirmed == 0 {
                self.channels.remove(&ch);
            }
        }
        for (verb, list) in [(&b"SUBSCRIBE"[..], add), (&b"UNSUBSCRIBE"[..], drop)] {
            for batch in list.chunks(SUBSCRIBE_BATCH) {
                let mut args: Vec<&[u8]> = Vec::with_capacity(batch.len() + 1);
                args.push(verb);
                args.extend(batch.iter().map(|c| &c[..]));
                self.link.conn.command(&args);
                self.sent(batch.len());
            }
        }
    }
}

impl Half {
    /// Frames read from the subscription connection. Returns an error reply Redis sent on it
    /// (the connection is then dropped: a subscription that refuses commands is not one).
    pub(super) fn on_sub_frames(&mut self, r: &mut dyn EngineHost) -> Option<String> {
        let frames = std::mem::take(&mut self.frames);
        let mut failure = None;
        for f in frames {
            if failure.is_some() {
                // Nothing after a refusal counts (a confirmation must not mark it up).
                break;
            }
            let BytesFrame::Array(parts) = f else {
                if let BytesFrame::Error(e) = f {
                    if is_auth_error(&e) {
                        self.shared.metrics.auth_failed.store(true, Ordering::Release);
                        failure = Some(format!("redis refused the credentials: {e}"));
                    } else {
                        failure.get_or_insert_with(|| format!("redis said on the subscription: {e}"));
                    }
                }
                continue;
            };
            let kind = parts.first().and_then(bytes_of).map(|b| b.as_ref());
            if let Some(role @ (b"slave" | b"replica" | b"sentinel")) = kind {
                let role = String::from_utf8_lossy(role);
                failure.get_or_insert_with(|| format!("redis at this address is a {role} now, not the master"));
                continue;
            }
            match (kind, parts.get(1).and_then(bytes_of), parts.get(2)) {
                (Some(b"message"), Some(channel), Some(BytesFrame::BulkString(payload))) => {
                    self.shared.metrics.received.inc();
                    if let Some(wire::Wire::Probe { origin, nonce }) = wire::parse(payload) {
                        if origin == self.shared.node.as_bytes() && self.probe.is_some_and(|(n, _)| n == nonce) {
                            self.probe = None;
                        }
                        continue;
                    }
                    r.received(channel, payload.clone());
                }
                (Some(b"pong"), _, _) => {
                    if let Some(sub) = self.sub.as_mut() {
                        sub.answered();
                    }
                }
                (Some(b"subscribe"), Some(channel), Some(BytesFrame::Integer(n))) => {
                    if let Some(sub) = self.sub.as_mut() {
                        sub.answered();
                    }
                    self.shared.metrics.subscriptions.set(*n as u64);
                    if **channel == *self.shared.channels.all() {
                        // The control channels were asked for together, before anything else.
                        self.subscription_up(r);
                    }
                    self.confirmation(r, channel);
                }
                (Some(b"unsubscribe"), Some(channel), Some(BytesFrame::Integer(n))) => {
                    if let Some(sub) = self.sub.as_mut() {
                        sub.answered();
                    }
                    self.shared.metrics.subscriptions.set(*n as u64);
                    self.confirmation(r, channel);
                }
                _ => {}
            }
        }
        failure
    }

    /// The control channels are confirmed: the node receives again. If the subscription had
    /// been lost, the reactor hears that its connections may have missed messages.
    fn subscription_up(&mut self, r: &mut dyn EngineHost) {
        self.shared.sub_up.store(true, Ordering::Release);
        self.shared.reached.fetch_add(1, Ordering::AcqRel);
        let Some(sub) = self.sub.as_mut() else { return };
        sub.link.works(self.reactor, "subscription");
        if std::mem::take(&mut sub.lost_since_up) {
            r.subscription_restored();
            // Evictions published to this node meanwhile were lost: counting every connection
            // again applies the per-user policy to any excess, here included.
            self.shared.reregister.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        self.update_up();
    }

    /// Redis confirmed a SUBSCRIBE or UNSUBSCRIBE of `channel`: once none is outstanding, the
    /// reactor hears whether the node is subscribed to it.
    fn confirmation(&mut self, r: &mut dyn EngineHost, channel: &[u8]) {
        if *channel == *self.shared.channels.all() {
            // Everyone's channel keeps history too: the hub fills what a break missed.
            r.subscription(channel, true);
            return;
        }
        let Some(sub) = self.sub.as_mut() else { return };
        let Some(i) = sub.channels.get_mut(channel) else { return };
        i.unconfirmed = i.unconfirmed.saturating_sub(1);
        if i.unconfirmed > 0 {
            return;
        }
        let subscribed = i.subscribed;
        if !subscribed && i.reactors == 0 {
            sub.channels.remove(channel);
        }
        r.subscription(channel, subscribed);
        if subscribed && !self.parked.is_empty() {
            self.unpark(r, channel);
        }
    }

    /// The subscription connection failed (or was dropped as stalled).
    pub(super) fn sub_lost(&mut self, r: &mut dyn EngineHost) {
        let Some(sub) = self.sub.as_mut() else { return };
        if self.shared.sub_up.swap(false, Ordering::AcqRel) {
            log::warn!("cluster: subscription to redis lost; reconnecting");
            sub.lost_since_up = true;
        }
        self.probe = None;
        self.shared.metrics.subscriptions.set(0);
        for (_, op) in std::mem::take(&mut self.parked) {
            super::history_ops::fail(r, op);
        }
        r.subscription_lost();
        sub.link.conn.close(r);
        if !sub.link.retrying {
            let delay = sub.link.retry_later();
            r.set_timer(super::RECONNECT_SUB, delay);
        }
        self.update_up();
    }
}
