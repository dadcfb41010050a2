//! Reactor 0's subscription connection: the node's interest per channel over every reactor,
//! the SUBSCRIBE/UNSUBSCRIBE commands that follow it, and what arrives on it.
//!
//! Owns: the per-channel interest count and confirmation state, the subscription probe's
//! arrival. Does not touch: the command connection (the probe is published there) or what a
//! received message means (handed to the reactor with `r.received`).

use std::sync::atomic::Ordering;

use redis_protocol::resp2::types::BytesFrame;

use super::link::is_auth_error;
use super::state::Half;
use crate::cluster::broker::EngineHost;
use crate::cluster::resp::bytes_of;
use crate::cluster::wire;

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
            r.set_timer(super::state::RECONNECT_SUB, delay);
        }
        self.update_up();
    }
}
