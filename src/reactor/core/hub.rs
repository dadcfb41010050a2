//! Channels with history on a cluster node. All of it runs on reactor 0, the reactor holding
//! the node's Redis subscription: the node's own publishes to such channels (one script each:
//! offset, stream, PUBLISH), the messages of those channels as the subscription brings them,
//! in offset order, and recoveries.
//!
//! Owns: the node's position per channel (`Track`: epoch and last offset delivered here,
//! never per connection), holding messages back behind a gap being filled from the stream or
//! behind a recovery's marker, and this node's publishes and queries waiting for Redis. Does
//! not touch: Redis (the engine runs the scripts) or connections (deliveries go to the
//! reactors as any cluster delivery does).
//!
//! Every message of a channel reaches this node's connections through the subscription, its
//! own included, so they all see one order. A recovery's script (`hub_recovery`) publishes a
//! marker on the channel in the same step it reads the stream: messages before the marker are
//! the ones the replay covers (they go to the channel's current members), messages after it go
//! to the recovering connection too, after its replay. A channel with no message for a second
//! keeps only its position here (`quiet`, a few bytes per subscribed channel). A gap in offsets (messages missed while the
//! subscription was reconnecting) is filled from the stream; if the stream no longer has
//! them (same epoch, trimmed), the channel's connections here are closed with 1012 so that
//! they reconnect and recover (or learn they must reload). If Redis lost the channel (a new
//! epoch), nothing can tell what was missed: the next message carries the new epoch, which
//! tells clients to reload.

use tungstenite::Bytes;

use super::state::hub::{Hub, Incoming, OwnPublish, Query, Track, name_hash, target_of, to_of};
use super::{Core, Waiter};
use crate::ask::{Answer, Ask, CLUSTER, ReplyTo};
use crate::cluster::broker::{EngineError, EngineOp, HistoryAnswer};

/// A node's publish whose copy did not come back through the subscription this long after
/// Redis took it (the subscription broke meanwhile) is answered as reaching no one here.
const ECHO_WAIT_MS: u64 = 2_000;
/// Gaps larger than this are not filled: the connections recover instead.
const MAX_FILL: u64 = 10_000;
/// A channel with no message for this long keeps only its position here.
const QUIET_AFTER_MS: u64 = 1_000;
/// A fill Redis could not answer is asked again after this long.
const FILL_RETRY_MS: u64 = 500;
/// Fills failing while the node is up, at most, before the channel's connections here are
/// told (closed 1012) rather than kept waiting.
const MAX_FILL_ERRORS: u8 = 20;

impl Core {
    pub(super) fn hub(&mut self) -> Option<&mut Hub> {
        self.cluster.as_mut().map(|c| &mut c.hub)
    }

    pub(super) fn engine_op(&mut self, op: EngineOp) {
        if let Some(c) = self.cluster.as_mut() {
            c.ops.push(op);
        }
    }

    pub(super) fn waiter_to(&self, w: Option<Waiter>) -> Option<ReplyTo> {
        to_of(w, self.id, |k| self.serial_of(k))
    }

    /// Answers `to` as reactor `from` (this reactor's own asks at once, so a recovery's
    /// connection joins before the messages released after its answer).
    pub(super) fn hub_reply(&mut self, to: &Option<ReplyTo>, from: usize, answer: Answer) {
        match to {
            Some(ReplyTo::Reactor { reactor, ticket }) if *reactor == self.id => self.on_answer(*ticket, from, answer),
            Some(to) => crate::runtime::reply(&self.rt.links, from, to.clone(), answer),
            None => {}
        }
    }

    /// `Ask::Sequence` on a cluster node: the script gives the offset and publishes; the
    /// asker gets two answers, the cluster's word (`Nodes` or `Unavailable`) and this node's
    /// delivery count once the message came back through the subscription.
    pub(super) fn hub_publish(
        &mut self,
        channel: Box<str>,
        frame: Bytes,
        exclude_user: Option<Box<str>>,
        dedupe: Option<Box<str>>,
        w: Option<Waiter>,
    ) {
        let to = self.waiter_to(w);
        let object = if *channel == *crate::cluster::broker::ALL {
            Some(frame.to_vec())
        } else {
            crate::cluster::history::open_object(&frame).map(<[u8]>::to_vec)
        };
        let Some(object) = object else {
            self.hub_reply(&to, CLUSTER, Answer::Unavailable);
            self.hub_reply(&to, 0, Answer::Count(0));
            return;
        };
        let Some(hub) = self.hub() else { return };
        hub.next_id += 1;
        let id = hub.next_id;
        hub.publishes.insert(
            id,
            OwnPublish {
                to,
                echo_at: None,
                delivered: false,
            },
        );
        self.engine_op(EngineOp::PublishHistory {
            id,
            name: channel,
            exclude_user,
            object,
            dedupe,
        });
    }

    /// The engine answered history op `id`.
    pub fn hub_history_answer(&mut self, id: u64, result: Result<HistoryAnswer, EngineError>) {
        let now_ms = self.clock.now_ms;
        let Some(hub) = self.hub() else { return };
        if let Some(p) = hub.publishes.get_mut(&id) {
            let (word, done) = match &result {
                Ok(HistoryAnswer::Appended(a)) if a.duplicate => (Answer::Duplicate, true),
                Ok(HistoryAnswer::Appended(a)) if p.delivered => (Answer::Nodes(a.nodes), true),
                Ok(HistoryAnswer::Appended(a)) if a.echo => {
                    p.echo_at = Some(now_ms);
                    (Answer::Nodes(a.nodes), false)
                }
                Ok(HistoryAnswer::Appended(a)) => (Answer::Nodes(a.nodes), true),
                Err(EngineError::Unknown) => (Answer::Unknown, true),
                _ => (Answer::Unavailable, true),
            };
            let to = p.to.clone();
            let count_owed = done && !p.delivered;
            if done {
                hub.publishes.remove(&id);
            }
            self.hub_reply(&to, CLUSTER, word);
            if count_owed {
                self.hub_reply(&to, 0, Answer::Count(0));
            }
            return;
        }
        let Some(q) = hub.queries.remove(&id) else { return };
        match q {
            Query::Fill { channel, upto } => self.filled(&channel, upto, result),
            other => self.query_answered(id, other, result),
        }
    }

    /// A message or marker of channel `name` from the subscription.
    pub(super) fn hub_incoming(&mut self, name: &str, m: Incoming) {
        let now_ms = self.clock.now_ms;
        if matches!(m, Incoming::Marker(_)) && self.hub().is_some_and(|h| !h.tracks.contains_key(name)) {
            return; // no recovery of this channel waits here
        }
        let Some(t) = self.track(name) else { return };
        t.touched_ms = now_ms;
        t.held.push_back(m);
        if !t.blocked() {
            self.drain(name);
        }
    }

    /// The channel's track, made if needed (from where it stood, if it was quiet).
    pub(super) fn track(&mut self, name: &str) -> Option<&mut Track> {
        let now_ms = self.clock.now_ms;
        let hub = self.hub()?;
        if !hub.tracks.contains_key(name) {
            let mut t = Track::new(now_ms);
            if let Some((last, epoch)) = hub.quiet.remove(&name_hash(name)) {
                t.last = Some(last);
                t.epoch = format!("{epoch:08x}").into();
            }
            hub.tracks.insert(name.into(), t);
        }
        hub.tracks.get_mut(name)
    }

    /// Shrinks the channel's track to its position if nothing is going on in it (most
    /// channels, after a connection's recovery: a user's own, say).
    pub(super) fn retire_if_idle(&mut self, name: &str) {
        let Some(hub) = self.hub() else { return };
        if hub.tracks.get(name).is_some_and(Track::idle)
            && let Some(t) = hub.tracks.remove(name)
        {
            hub.keep_quiet(name, &t);
        }
    }

    /// Takes held messages of `name` in order until one blocks the channel again.
    pub(super) fn drain(&mut self, name: &str) {
        loop {
            let Some(t) = self.hub().and_then(|h| h.tracks.get_mut(name)) else {
                return;
            };
            if t.blocked() {
                return;
            }
            let Some(m) = t.held.pop_front() else { return };
            match m {
                Incoming::Marker(id) => self.marker_reached(name, id),
                Incoming::Message { .. } => self.accept(name, m),
            }
        }
    }

    /// One message in order: delivered if it is the next, dropped if already delivered, or
    /// held behind a fill of the gap before it.
    fn accept(&mut self, name: &str, m: Incoming) {
        let Incoming::Message { offset, epoch, .. } = &m else {
            return;
        };
        let (offset, epoch) = (*offset, epoch.clone());
        let Some(t) = self.hub().and_then(|h| h.tracks.get_mut(name)) else {
            return;
        };
        if *t.epoch != *epoch {
            // A new epoch (the stream expired or was flushed): nothing before it can come.
            t.epoch = epoch;
            t.last = if t.last.is_none() {
                Some(offset.saturating_sub(1))
            } else {
                Some(0)
            };
        }
        let last = *t.last.get_or_insert(offset.saturating_sub(1));
        if offset <= last {
            return self.drop_duplicate(m);
        }
        if offset == last + 1 {
            t.last = Some(offset);
            return self.deliver_incoming(m);
        }
        t.held.push_front(m);
        t.filling = true;
        self.fill(name, last, Some(offset));
    }

    /// Asks the stream for the messages of `name` after `last` (up to `upto`, exclusive).
    fn fill(&mut self, name: &str, last: u64, upto: Option<u64>) {
        let max = upto.map_or(MAX_FILL, |u| u.saturating_sub(last + 1).min(MAX_FILL)) as usize;
        let Some(hub) = self.hub() else { return };
        hub.next_id += 1;
        let id = hub.next_id;
        hub.queries.insert(
            id,
            Query::Fill {
                channel: name.into(),
                upto,
            },
        );
        self.rt.cluster_metrics.gap_fills.inc();
        self.engine_op(EngineOp::HistoryRange {
            id,
            name: name.into(),
            after: Some(last),
            max,
            mark: false,
        });
    }

    /// A fill came back: the missing messages go out in order, or, if the stream no longer
    /// has them, the channel's connections here are closed to recover.
    fn filled(&mut self, name: &str, upto: Option<u64>, result: Result<HistoryAnswer, EngineError>) {
        let now_ms = self.clock.now_ms;
        let node_up = self.rt.cluster_metrics.up.load(std::sync::atomic::Ordering::Acquire);
        let events = self.rt.config.subscribable_events.clone();
        let Some(t) = self.hub().and_then(|h| h.tracks.get_mut(name)) else {
            return;
        };
        let last = t.last.unwrap_or(0);
        let range = match result {
            Ok(HistoryAnswer::Range(r)) => Some(r),
            Err(_) if t.fill_errors < MAX_FILL_ERRORS => {
                // Redis could not be asked (say the subscription came back before the command
                // connection): nothing is known to be lost. Ask again shortly; the channel's
                // messages wait in order meanwhile. Failures while the node is up count toward
                // a bound (Redis answering with an error is not going to change by waiting).
                if node_up {
                    t.fill_errors += 1;
                }
                t.filling = false;
                t.fill_again = Some((now_ms + FILL_RETRY_MS, upto));
                return;
            }
            _ => None,
        };
        let whole = range.as_ref().is_some_and(|r| {
            let wanted = upto.map_or(r.position.offset, |u| u.saturating_sub(1));
            *r.position.epoch == *t.epoch
                && r.entries.first().is_none_or(|e| e.0 == last + 1)
                && r.entries.last().map_or(last, |e| e.0) >= wanted.min(r.position.offset)
        });
        t.filling = false;
        t.fill_errors = 0;
        if let Some(r) = range.as_ref().filter(|r| *r.position.epoch != *t.epoch) {
            // Redis lost the channel's history (restarted, flushed, expired): what the old
            // epoch still had cannot be known. The connections see the new epoch on the next
            // message (their cue to reload); this node takes the new epoch from its start.
            log::info!("cluster: {name} has a new epoch in redis");
            t.epoch = r.position.epoch.as_str().into();
            t.last = Some(0);
            if r.position.offset > 0 {
                t.filling = true;
                return self.fill(name, 0, upto);
            }
            return self.drain(name);
        }
        let target = target_of(name, &events);
        match (range, whole) {
            (Some(r), true) => {
                let top = r.position.offset;
                for (offset, frame, exclude_user) in r.entries {
                    let Some(t) = self.hub().and_then(|h| h.tracks.get_mut(name)) else {
                        break;
                    };
                    if offset <= t.last.unwrap_or(0) {
                        continue;
                    }
                    t.last = Some(offset);
                    if let Some(target) = target.clone() {
                        self.carry_out_on_node(Ask::Deliver {
                            target,
                            frame,
                            exclude_user,
                            published_at: self.clock.instant,
                            dedupe: None,
                        });
                    }
                }
                if let Some(t) = self.hub().and_then(|h| h.tracks.get_mut(name))
                    && t.last.is_some_and(|l| l > top)
                {
                    // Redis is behind what this node delivered (a failover lost writes that
                    // had been published): its next offsets repeat ones seen here, and must
                    // not be dropped as duplicates.
                    log::warn!("cluster: redis is behind this node on {name} (offset {top}); following redis");
                    t.last = Some(top);
                }
            }
            (r, _) => {
                log::warn!(
                    "cluster: messages of {name} were missed and are gone from redis; its connections here recover"
                );
                self.rt.cluster_metrics.gaps_lost.inc();
                if let Some(target) = target {
                    self.carry_out_on_node(Ask::Disconnect {
                        target,
                        code: 1012,
                        reason: format!("missed messages of {name}: reconnect and recover").into(),
                    });
                }
                if let Some(t) = self.hub().and_then(|h| h.tracks.get_mut(name)) {
                    // Go on from the first held message (or from where Redis is).
                    t.last = match (upto, r) {
                        (Some(u), _) => Some(u.saturating_sub(1)),
                        (None, Some(r)) => {
                            t.epoch = r.position.epoch.as_str().into();
                            Some(r.position.offset)
                        }
                        (None, None) => None,
                    };
                }
            }
        }
        self.drain(name);
    }

    fn drop_duplicate(&mut self, m: Incoming) {
        if let Incoming::Message { own: Some(id), .. } = m {
            self.own_delivered(id, None);
        }
    }

    /// Delivers one message of a channel to this node's connections; this node's own publish
    /// is answered with the count.
    fn deliver_incoming(&mut self, m: Incoming) {
        let Incoming::Message {
            target,
            frame,
            exclude_user,
            own,
            ..
        } = m
        else {
            return;
        };
        let ask = Ask::Deliver {
            target,
            frame,
            exclude_user,
            published_at: self.clock.instant,
            dedupe: None,
        };
        let to = own.and_then(|id| {
            let p = self.hub()?.publishes.get_mut(&id)?;
            (!p.delivered).then(|| p.to.clone()).flatten()
        });
        match (own, to) {
            (Some(id), Some(to)) => {
                let reactors = self.reactors_for_ask(&ask);
                let _ = self.send_asks(super::state::asks::Owner::Forward(to), vec![(ask, reactors)]);
                self.own_delivered(id, Some(()));
            }
            (own, _) => {
                self.carry_out_on_node(ask);
                if let Some(id) = own {
                    self.own_delivered(id, Some(()));
                }
            }
        }
    }

    /// This node's publish `id` came back (`Some`: delivered, its count on the way; `None`:
    /// not delivered here, it counts 0).
    fn own_delivered(&mut self, id: u64, delivered: Option<()>) {
        let Some(hub) = self.hub() else { return };
        let Some(p) = hub.publishes.get_mut(&id) else { return };
        if p.delivered {
            return;
        }
        p.delivered = true;
        let to = p.to.clone();
        if p.echo_at.is_some() {
            hub.publishes.remove(&id);
        }
        if delivered.is_none() {
            self.hub_reply(&to, 0, Answer::Count(0));
        }
    }

    /// A delivery carried out for this node's own publish is done everywhere here.
    pub(super) fn hub_forwarded(&mut self, to: ReplyTo, count: usize) {
        self.hub_reply(&Some(to), 0, Answer::Count(count));
    }

    /// Redis confirmed this node's subscription to `channel` (or its end).
    pub fn hub_subscription(&mut self, channel: &[u8], subscribed: bool) {
        let Some(c) = self.cluster.as_ref() else { return };
        let Some(name) = c.channels.history_name(channel).map(Box::<str>::from) else {
            return;
        };
        let Some(hub) = self.hub() else { return };
        if !subscribed {
            // Not subscribed, this node no longer follows the channel.
            hub.quiet.remove(&name_hash(&name));
            if hub.tracks.get(&name).is_some_and(Track::idle) {
                hub.tracks.remove(&name);
            }
            return;
        }
        // Subscribed again after the subscription broke: a quiet channel's missed messages
        // are looked for like an active one's.
        let was_quiet = hub.quiet.contains_key(&name_hash(&name));
        let Some(t) = self.track(&name) else { return };
        if !(t.stale || was_quiet) {
            return;
        }
        t.stale = false;
        if let (Some(last), false) = (t.last, t.filling) {
            let upto = t.fill_again.take().and_then(|(_, upto)| upto);
            t.filling = true;
            self.fill(&name, last, upto);
        }
    }

    /// The subscription broke: every channel may miss messages until it is back.
    pub fn hub_subscription_lost(&mut self) {
        let Some(hub) = self.hub() else { return };
        for t in hub.tracks.values_mut() {
            t.stale = true;
        }
        self.fail_unmarked_recoveries();
    }

    /// About once a second: drops recovery interest that is due, answers publishes whose copy
    /// never came back, and shrinks quiet channels to their position.
    pub fn hub_tick(&mut self) {
        let now_ms = self.clock.now_ms;
        let Some(hub) = self.hub() else { return };
        let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut hub.phantoms)
            .into_iter()
            .partition(|(_, at)| *at <= now_ms);
        hub.phantoms = keep;
        // A track quiet for a second shrinks to its position (kept while subscribed).
        let retired: Vec<Box<str>> = hub
            .tracks
            .iter()
            .filter(|(_, t)| t.idle() && now_ms.saturating_sub(t.touched_ms) >= QUIET_AFTER_MS)
            .map(|(name, _)| name.clone())
            .collect();
        for name in retired {
            if let Some(t) = hub.tracks.remove(&name) {
                hub.keep_quiet(&name, &t);
            }
        }
        let overdue: Vec<u64> = hub
            .publishes
            .iter()
            .filter(|(_, p)| p.echo_at.is_some_and(|at| now_ms.saturating_sub(at) >= ECHO_WAIT_MS))
            .map(|(id, _)| *id)
            .collect();
        let again: Vec<(Box<str>, u64, Option<u64>)> = hub
            .tracks
            .iter_mut()
            .filter(|(_, t)| t.fill_again.is_some_and(|(at, _)| at <= now_ms))
            .filter_map(|(name, t)| {
                let (_, upto) = t.fill_again.take()?;
                t.filling = true;
                Some((name.clone(), t.last.unwrap_or(0), upto))
            })
            .collect();
        for (name, last, upto) in again {
            self.fill(&name, last, upto);
        }
        for (channel, _) in due {
            self.cluster_interest(channel, false);
        }
        for id in overdue {
            self.own_delivered(id, None);
        }
    }
}
